"""The images API client: endpoint styles, auth header, the call, the 200 answer read into images.

One ``httpx.AsyncClient`` per process (connection pooling). Three path styles:
Azure's deployment-scoped path with ``api-version``, Azure's v1 path and OpenAI's own
API. Which calls are repeated is :mod:`shared.upstream.retry`'s business.

What an answer may cost: the caller's one deadline for the whole call (attempts, waits, body reads,
image downloads; :class:`~shared.deadline.Deadline`), error bodies read up to a few KB, the 200 body through
:class:`~shared.upstream.body.ImageBodyReader` (bounded outside the image data), at most ``n``
images kept, ``created`` only if it is a plausible time, each image's type from its own bytes.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pybase64

from shared import strictjson, telemetry
from shared.deadline import Deadline
from shared.errors import ServiceError
from shared.models import ImageRequest
from shared.settings import Settings
from shared.upstream.body import ImageBodyReader
from shared.upstream.errors import (
    NOT_REPEATED,
    UpstreamAnswer,
    deadline_error,
    image_too_large,
    invalid_base64,
    map_answer,
    map_error,
    parse_retry_after,
    sniff_content_type,
    transport_error,
    unexpected_error,
    upstream_error,
)
from shared.upstream.fetch import fetch_image
from shared.upstream.ledger import UpstreamCalls, current_calls
from shared.upstream.retry import RefreshOnce, RetryPolicy
from shared.upstream.work import AttemptFailed

log = logging.getLogger(__name__)

ERROR_BODY_LIMIT = 16 * 1024  # an error answer is a short JSON object; more is not read
MAX_REVISED_PROMPT_CHARS = 4000
MAX_CREATED = 2**34  # the year 2514: a larger "created" is not a timestamp
Payload = bytes | AsyncIterable[bytes]  # a JSON body, or a multipart body streamed from its parts


@dataclass
class UpstreamImage:
    """One generated image, decoded, with what upstream said about it."""

    data: bytes
    content_type: str
    revised_prompt: str | None = None
    content_filter_results: dict[str, Any] | None = None
    prompt_filter_results: dict[str, Any] | None = None


@dataclass
class UpstreamResult:
    """A successful generation; ``attempts`` counts the requests sent for it."""

    created: int
    images: list[UpstreamImage]
    usage: dict[str, Any] | None = None
    attempts: int = 1
    request_id: str | None = None  # upstream's id for the call (apim-request-id / x-request-id), for the record


def upstream_request_id(headers: httpx.Headers) -> str | None:
    """Upstream's id for a call, which Azure support asks for: ``apim-request-id``, else ``x-request-id``."""
    return headers.get("apim-request-id") or headers.get("x-request-id")


# What the call and each request put into telemetry (shared.telemetry.traced).


def _calling(settings: Settings) -> Mapping[str, object]:
    return {"server.address": urlsplit(settings.endpoint).hostname, "images.api_style": settings.api_style}


def _attempting(url: str) -> Mapping[str, object]:
    """Where the request goes, and which attempt of the generation running now it is."""
    return {"server.address": urlsplit(url).hostname, "images.upstream.attempt": telemetry.count_attempt()}


def _answered(_: object) -> Mapping[str, object]:
    return {"http.response.status_code": 200}  # any other answer is raised (UpstreamAnswer)


def _refused(exc: BaseException) -> Mapping[str, object]:
    """An answer other than 200: its status and Retry-After; a 429 is counted. A failed connection: error.type says how."""
    if not isinstance(exc, UpstreamAnswer):
        return {}
    if exc.status == 429:
        telemetry.instruments().throttles.add(1, telemetry.labels_of({}))
    return {"http.response.status_code": exc.status, "error.type": str(exc.status), "images.upstream.retry_after_s": parse_retry_after(exc.headers)}


def upstream_http(settings: Settings) -> httpx.AsyncClient:
    """The connection pool to the model service: room for every call the settings allow at once, and a
    transport that never sends a request again on its own (only the retry policy decides that)."""
    limits = httpx.Limits(max_connections=max(20, settings.max_concurrent_upstream * 2), max_keepalive_connections=20)
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(limits=limits, retries=0),
        follow_redirects=False,
        headers={"User-Agent": "image-generation-functions/0.1"},
    )


class SentBody:
    """A request body that notes when it has been written whole: each attempt iterates it once, and
    :attr:`sent` (and the ledger's ``may_have_worked``) turns true only after its last byte was handed
    to the connection. An answer or a failure before that came for a request upstream never had."""

    def __init__(self, payload: Payload, calls: UpstreamCalls) -> None:
        self.payload = payload
        self.calls = calls
        self.sent = False
        self.length = len(payload) if isinstance(payload, bytes) else None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        if isinstance(self.payload, bytes):
            yield self.payload
        else:
            async for chunk in self.payload:
                yield chunk
        self.sent = True  # asked for more after the last chunk: the connection took all of it
        self.calls.may_have_worked = True


def call_error(exc: Exception, deadline: Deadline, calls: UpstreamCalls) -> ServiceError:
    """What a failed call to the images API is for the caller, the one classification every call uses (the plain
    call and the streamed one): the deadline, upstream's answer, the connection, the service's own errors (as
    they are), anything else; each with the verdict of :mod:`shared.upstream.work` (``calls``: what was sent)."""
    if isinstance(exc, TimeoutError):
        return deadline_error(deadline.total, may_have_worked=calls.may_have_worked)
    if isinstance(exc, UpstreamAnswer):
        return map_answer(exc)
    if isinstance(exc, AttemptFailed):
        return transport_error(exc)
    if isinstance(exc, ServiceError):
        return exc
    log.error("upstream call failed unexpectedly", exc_info=exc)
    return unexpected_error(exc, may_have_worked=calls.may_have_worked)


class UpstreamClient:
    """Calls the images API for one app instance; shares one connection pool.

    ``retry`` decides which calls are repeated and how long to wait (default: the
    settings' ``max_retries``, real sleeping). ``limiter`` caps the calls in flight: every client of
    an instance (the single endpoint and each backend of every pool) shares the single endpoint's
    (shared/pool/clients.py), so ``IMAGES_MAX_CONCURRENT_UPSTREAM`` caps the instance, not each client.
    """

    def __init__(
        self,
        settings: Settings,
        auth: Any,
        http: httpx.AsyncClient | None = None,
        *,
        retry: RetryPolicy | None = None,
        limiter: asyncio.Semaphore | None = None,
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.retry = retry or RetryPolicy(settings.max_retries)
        self._http = http
        self._own_http = http is None
        self.limiter = limiter or asyncio.Semaphore(settings.max_concurrent_upstream)

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared connection pool, made on first use inside the running loop."""
        if self._http is None:
            self._http = upstream_http(self.settings)
        return self._http

    async def close(self) -> None:
        """Close the connection pool if this client made it."""
        if self._http is not None and self._own_http:
            await self._http.aclose()
            self._http = None

    def url_and_body(self, request: ImageRequest) -> tuple[str, dict[str, Any]]:
        """Where the request goes and what it carries, for the configured path style."""
        body = dict(request.upstream_body)
        if self.settings.api_style == "deployment":
            url = f"{self.settings.endpoint}/openai/deployments/{request.deployment}/images/generations"
            return f"{url}?api-version={self.settings.api_version}", body
        body["model"] = request.deployment
        if self.settings.api_style == "v1":
            return f"{self.settings.endpoint}/openai/v1/images/generations", body
        return f"{self.settings.endpoint}/v1/images/generations", body

    async def generate(self, request: ImageRequest, *, deadline: Deadline, budget: float) -> UpstreamResult:
        """Generate the request's images within what is left of ``deadline`` (see :meth:`send`)."""
        url, body = self.url_and_body(request)
        return await self.send(url, json.dumps(body).encode(), {"Content-Type": "application/json"}, request, deadline=deadline, budget=budget)

    @telemetry.traced("upstream.call", telemetry.Steps(before=lambda args: _calling(args["self"].settings)))
    async def send(
        self, url: str, payload: Payload, request_headers: dict[str, str], request: ImageRequest, *, deadline: Deadline, budget: float
    ) -> UpstreamResult:
        """POST ``payload`` (with ``request_headers``, e.g. its Content-Type) to an images endpoint within what is
        left of ``deadline`` (every attempt, every wait and every body read), repeating within ``budget`` seconds
        of waiting what :mod:`~shared.upstream.retry` allows, and read the 200 answer into at most ``request.n``
        images. A payload that is not bytes must be iterable more than once (each attempt sends it again).

        Every failure is a :class:`~shared.errors.ServiceError` carrying the verdict of
        :mod:`shared.upstream.work`: transient only when upstream did no work; an exception nobody expected
        is a final 502 once a request may have been worked (a transient 503 before), and the deadline a
        final 504 (a transient 503 if no request reached upstream whole).
        """
        refresh = RefreshOnce(self.auth)
        calls = current_calls()
        before = calls.sent
        calls.may_have_worked = False  # this call's verdict so far: nothing sent yet
        request_id: str | None = None

        async def post(auth_headers: dict[str, str]) -> tuple[ImageBodyReader, httpx.Headers]:
            return await self._post(url, payload, {**request_headers, **auth_headers}, deadline, request.n, calls)

        try:
            async with asyncio.timeout(deadline.remaining()):
                reader, headers = await self.retry.run(lambda: refresh.call(post), budget=min(budget, deadline.remaining()))
                request_id = upstream_request_id(headers)
                result = await self._parse_success(reader, headers, request)
        except Exception as exc:
            error = call_error(exc, deadline, calls)
            error.upstream_request_id = error.upstream_request_id or request_id
            if error is exc:
                raise
            raise error from None
        result.attempts, result.request_id = calls.sent - before, request_id
        calls.answered = True
        return result

    @telemetry.traced("upstream.attempt", telemetry.Steps(before=lambda args: _attempting(args["url"]), after=_answered, error=_refused))
    async def _post(
        self, url: str, payload: Payload, headers: dict[str, str], deadline: Deadline, n: int, calls: UpstreamCalls
    ) -> tuple[ImageBodyReader, httpx.Headers]:
        """One request. A 200 body is decoded while it streams in (no copy of the whole body, no giant
        JSON string); any other answer is read (at most :data:`ERROR_BODY_LIMIT` bytes) and raised as
        :class:`UpstreamAnswer`, a transport failure as :class:`~shared.upstream.work.AttemptFailed`, each
        with the rule's verdict (was the body written whole before it came)."""
        async with self.limiter:
            calls.sent += 1  # from here on the request may reach upstream
            body = SentBody(payload, calls)
            if body.length is not None:
                headers = {**headers, "Content-Length": str(body.length)}  # an iterated body is not sent chunked
            left = max(deadline.remaining(), 0.001)
            try:
                async with self.http.stream(
                    "POST", url, content=body, headers={"Accept": "application/json", **headers}, timeout=httpx.Timeout(left, connect=min(10.0, left))
                ) as response:
                    if response.status_code != 200:
                        answer = UpstreamAnswer(response.status_code, await _error_body(response), response.headers, body_sent=body.sent)
                        calls.may_have_worked = answer.may_have_worked
                        raise answer
                    reader = ImageBodyReader(self.settings.max_image_bytes, max_images=n)
                    async for chunk in response.aiter_bytes():  # content-encoding undone
                        reader.feed(chunk)
                    return reader, response.headers
            except httpx.TransportError as exc:
                failure = AttemptFailed(exc, body_sent=body.sent)
                calls.may_have_worked = failure.may_have_worked
                raise failure from exc

    async def _parse_success(self, reader: ImageBodyReader, headers: httpx.Headers, request: ImageRequest) -> UpstreamResult:
        # Upstream answered 200: the generation is made and billed. Whatever goes wrong from
        # here is reported as not transient, so no queue redelivery pays for it a second time.
        try:
            body = reader.result()
        except ValueError as exc:
            raise upstream_error(f"The model service answered 200 with a body that is not strict JSON ({exc}). {NOT_REPEATED}") from None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            # The seed's legacy content-filter answer can arrive with 200 (an image filtered after it was made).
            filtered = map_error(400, body, headers)
            filtered.may_have_worked = True
            raise filtered
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise upstream_error("The model service answered without images.")
        if len(items) > request.n:
            log.warning("upstream answered %d images for n=%d; the extra ones are dropped", len(items), request.n)
            items = items[: request.n]
        images = [await self._image(item, reader, request) for item in items]
        usage = body.get("usage")
        return UpstreamResult(created=_created(body.get("created")), images=images, usage=usage if isinstance(usage, dict) else None)

    async def _image(self, item: Any, reader: ImageBodyReader, request: ImageRequest) -> UpstreamImage:
        """One ``data`` item as an image: its bytes from the streamed value, the string itself, or its URL."""
        if not isinstance(item, dict):
            raise upstream_error("The model service answered with a malformed data item.")
        b64 = item.get("b64_json")
        streamed = reader.image(b64) if isinstance(b64, str) else None  # decoded while it arrived
        if streamed is not None:
            data = streamed
        elif isinstance(b64, str):
            data = self._decode(b64)
        elif isinstance(item.get("url"), str):
            data = await fetch_image(self.http, item["url"], self.settings)
        else:
            raise upstream_error("A data item carries neither b64_json nor url.")
        content_type = sniff_content_type(data)
        if content_type is None:
            raise upstream_error("The model service returned bytes that are not an image.")
        if content_type != request.content_type:
            # Billed and a real image: kept, filed under what the bytes are (never renamed to what was asked).
            log.warning("asked for %s, upstream sent %s: archived as %s", request.content_type, content_type, content_type)
        revised_prompt = item.get("revised_prompt")
        return UpstreamImage(
            data=data,
            content_type=content_type,
            revised_prompt=revised_prompt[:MAX_REVISED_PROMPT_CHARS] if isinstance(revised_prompt, str) else None,
            content_filter_results=_dict_or_none(item.get("content_filter_results")),
            prompt_filter_results=_dict_or_none(item.get("prompt_filter_results")),
        )

    def _decode(self, b64: str) -> bytes:
        limit = self.settings.max_image_bytes
        if len(b64) * 3 // 4 > limit + 3:
            raise image_too_large(limit)
        try:
            return pybase64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise invalid_base64() from None

    async def download(self, url: str) -> bytes:
        """Fetch an image URL of an answer once, as :mod:`shared.upstream.fetch` allows."""
        return await fetch_image(self.http, url, self.settings)


async def _error_body(response: httpx.Response) -> Any:
    """An error answer's JSON, read streaming up to :data:`ERROR_BODY_LIMIT` bytes; None if longer or not strict JSON."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > ERROR_BODY_LIMIT:
            log.warning("upstream error body over %d bytes (status %d); not read further", ERROR_BODY_LIMIT, response.status_code)
            return None
    try:
        return strictjson.loads(bytes(data))
    except ValueError:
        return None


def _created(value: Any) -> int:
    """Upstream's ``created`` if it is a plausible Unix time, else the time of receipt (it is only a stamp)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < MAX_CREATED:
        return int(value)
    log.warning("upstream 'created' is not a plausible timestamp; the time of receipt is recorded instead")
    return int(time.time())


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None
