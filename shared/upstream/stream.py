"""A streamed call to the images API: opened under the rules of every call, then read event by event.

:func:`open_stream` sends the request (``"stream": true`` in its body) as :meth:`UpstreamClient.send`
sends any: within the caller's one :class:`~shared.deadline.Deadline`, under the same retry policy
(only what upstream provably did not work on is repeated, by the one rule of
:mod:`shared.upstream.work`, within the budget), the same 401 refresh, the same classification of
failures (:func:`~shared.upstream.client.call_error`). It returns once upstream answered 200 with
``text/event-stream``: from then on the image is being made and billed, so nothing about the stream
is ever repeated. :meth:`UpstreamStream.events` reads it (shared/upstream/events.py), within what is
left of the same deadline; every way it can break is a final ServiceError (``may_have_worked``).

The stream holds one of the instance's upstream slots (``IMAGES_MAX_CONCURRENT_UPSTREAM``, the
client's ``limiter``) until it is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from shared.deadline import Deadline
from shared.errors import ServiceError
from shared.models import ImageRequest
from shared.upstream.client import Payload, SentBody, UpstreamClient, _error_body, call_error, upstream_request_id
from shared.upstream.errors import NOT_REPEATED, UpstreamAnswer, upstream_error
from shared.upstream.events import EventReader, SseEvent, SsePiece
from shared.upstream.ledger import UpstreamCalls, current_calls
from shared.upstream.retry import RefreshOnce
from shared.upstream.work import AttemptFailed

log = logging.getLogger(__name__)


@dataclass
class UpstreamStream:
    """An answer upstream is streaming: read it with :meth:`events`, close it with :meth:`aclose` (always)."""

    response: httpx.Response
    slot: asyncio.Semaphore
    deadline: Deadline  # the call's one deadline: the last event must have arrived by then
    max_image_bytes: int
    attempts: int = 1
    request_id: str | None = None
    _closed: bool = field(default=False, repr=False)

    async def events(self) -> AsyncIterator[SseEvent | SsePiece]:
        """Every event as it ends; ServiceError (final: the work was accepted) if the stream breaks, stalls past
        the deadline or ends inside an event."""
        reader = EventReader(self.max_image_bytes)
        chunks = self.response.aiter_bytes().__aiter__()
        while True:
            try:
                async with asyncio.timeout(self.deadline.remaining()):
                    chunk = await anext(chunks, None)
            except TimeoutError:
                message = f"The model service's stream stalled past the call's deadline ({self.deadline.total:g} s). {NOT_REPEATED}"
                raise ServiceError(504, "UpstreamTimeout", message, may_have_worked=True) from None
            except httpx.TransportError as exc:
                raise upstream_error(f"The model service's stream broke ({type(exc).__name__}). {NOT_REPEATED}") from None
            if chunk is None:
                reader.finish()
                return
            for event in reader.feed(chunk):
                yield event

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                await self.response.aclose()
            finally:
                self.slot.release()


async def open_stream(
    client: UpstreamClient, url: str, payload: Payload, request_headers: dict[str, str], request: ImageRequest, *, deadline: Deadline, budget: float
) -> UpstreamStream:
    """Send a streamed request and return its open stream once upstream answered 200 (see the module docstring).

    Raises the ServiceError :meth:`UpstreamClient.send` would when no stream started, with the rule's verdict:
    transient only when upstream did no work, so the pool may send it to another backend.
    """
    refresh, calls = RefreshOnce(client.auth), current_calls()
    before = calls.sent
    calls.may_have_worked = False  # this call's verdict so far: nothing sent yet

    async def post(auth_headers: dict[str, str]) -> UpstreamStream:
        return await _post(client, url, payload, {**request_headers, **auth_headers}, deadline, calls)

    try:
        async with asyncio.timeout(deadline.remaining()):
            stream = await client.retry.run(lambda: refresh.call(post), budget=min(budget, deadline.remaining()))
    except Exception as exc:
        error = call_error(exc, deadline, calls)
        if error is exc:
            raise
        raise error from None
    stream.attempts, stream.request_id = calls.sent - before, upstream_request_id(stream.response.headers)
    content_type = stream.response.headers.get("content-type", "")
    if not content_type.startswith("text/event-stream"):
        await stream.aclose()
        raise upstream_error(f"The model service answered a streamed request with {content_type[:60] or 'no content type'}, not events. {NOT_REPEATED}")
    calls.answered = True  # the work is accepted and billed from here
    return stream


async def _post(client: UpstreamClient, url: str, payload: Payload, headers: dict[str, str], deadline: Deadline, calls: UpstreamCalls) -> UpstreamStream:
    """One request, as :meth:`UpstreamClient._post` sends one, left open once upstream answered 200: any other answer
    is read and raised as :class:`UpstreamAnswer`, a transport failure as :class:`AttemptFailed`, each with the rule's
    verdict (was the body written whole before it came). The instance's upstream slot is held until the stream closes."""
    await client.limiter.acquire()
    stream: UpstreamStream | None = None
    try:
        calls.sent += 1  # from here on the request may reach upstream
        body = SentBody(payload, calls)
        if body.length is not None:
            headers = {**headers, "Content-Length": str(body.length)}  # an iterated body is not sent chunked
        left = max(deadline.remaining(), 0.001)
        sent = client.http.build_request(
            "POST", url, content=body, headers={"Accept": "text/event-stream", **headers}, timeout=httpx.Timeout(left, connect=min(10.0, left))
        )
        try:
            stream = UpstreamStream(await client.http.send(sent, stream=True), client.limiter, deadline, client.settings.max_image_bytes)
            if stream.response.status_code != 200:
                answer = UpstreamAnswer(stream.response.status_code, await _error_body(stream.response), stream.response.headers, body_sent=body.sent)
                calls.may_have_worked = answer.may_have_worked
                raise answer
        except httpx.TransportError as exc:
            failure = AttemptFailed(exc, body_sent=body.sent)
            calls.may_have_worked = failure.may_have_worked
            raise failure from exc
    except BaseException:
        if stream is None:
            client.limiter.release()
        else:
            await stream.aclose()  # releases the slot
        raise
    return stream
