"""A streamed call to the images API: opened under the rules of every call, then read event by event.

:func:`open_stream` sends the request (``"stream": true`` in its body) as :meth:`UpstreamClient.send`
sends any: the same retry policy (only what upstream provably did not work on is repeated, within the
budget), the same 401 refresh, the same error mapping. It returns once upstream answered 200 with
``text/event-stream``: from then on the image is being made and billed, so nothing about the stream
is ever repeated. :meth:`UpstreamStream.events` reads it (shared/upstream/events.py), within the
call's total deadline; every way it can break is a final (not transient) ServiceError.

The stream holds its connection slot (``IMAGES_MAX_CONCURRENT_UPSTREAM``) until it is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from shared.errors import ServiceError
from shared.models import ImageRequest
from shared.upstream.client import Payload, UpstreamClient, _error_body, call_error, upstream_request_id
from shared.upstream.errors import (
    NOT_REPEATED,
    UpstreamAnswer,
    upstream_error,
)
from shared.upstream.events import EventReader, SseEvent, SsePiece
from shared.upstream.ledger import current_calls
from shared.upstream.retry import RefreshOnce

log = logging.getLogger(__name__)


@dataclass
class UpstreamStream:
    """An answer upstream is streaming: read it with :meth:`events`, close it with :meth:`aclose` (always)."""

    response: httpx.Response
    slot: asyncio.Semaphore
    deadline: float  # time.monotonic() by which the last event must have arrived
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
                async with asyncio.timeout(max(0.0, self.deadline - time.monotonic())):
                    chunk = await anext(chunks, None)
            except TimeoutError:
                raise ServiceError(504, "UpstreamTimeout", f"The model service's stream stalled past the deadline. {NOT_REPEATED}") from None
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
    client: UpstreamClient, url: str, payload: Payload, request_headers: dict[str, str], request: ImageRequest, *, timeout: float, budget: float
) -> UpstreamStream:
    """Send a streamed request and return its open stream once upstream answered 200 (see the module docstring).

    Raises the ServiceError of :meth:`UpstreamClient.send` when no stream started: transient only when
    upstream did no work, so the caller (or the pool) may repeat it elsewhere.
    """
    refresh, calls = RefreshOnce(client.auth), current_calls()
    before, deadline = calls.sent, time.monotonic() + timeout

    async def post(auth_headers: dict[str, str]) -> UpstreamStream:
        await client._slots.acquire()  # held by the stream until it is closed
        try:
            calls.sent += 1  # from here on the request may reach upstream
            sent = client.http.build_request(
                "POST", url, content=payload, headers={"Accept": "text/event-stream", **request_headers, **auth_headers},
                timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            )  # fmt: skip
            response = await client.http.send(sent, stream=True)
        except BaseException:
            client._slots.release()
            raise
        stream = UpstreamStream(response, client._slots, deadline, client.settings.max_image_bytes)
        if response.status_code != 200:
            try:
                raise UpstreamAnswer(response.status_code, await _error_body(response), response.headers)
            finally:
                await stream.aclose()
        return stream

    try:
        async with asyncio.timeout(timeout):
            stream = await client.retry.run(lambda: refresh.call(post), budget=min(budget, timeout))
    except Exception as exc:
        error = call_error(exc, timeout, sent=calls.sent > before)
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
