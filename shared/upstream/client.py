"""The images API client: endpoint styles, auth header, the call, the 200 answer read into images.

One ``httpx.AsyncClient`` per process (connection pooling). Three path styles:
Azure's deployment-scoped path with ``api-version``, Azure's v1 path and OpenAI's own
API. Which calls are repeated is :mod:`shared.upstream.retry`'s business.

What an answer may cost: one total deadline for the whole call (attempts, waits, body reads,
image downloads), error bodies read up to a few KB, the 200 body through
:class:`~shared.upstream.body.ImageBodyReader` (bounded outside the image data), at most ``n``
images kept, ``created`` only if it is a plausible time, each image's type from its own bytes.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

import httpx
import pybase64

from shared import strictjson, telemetry
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
    map_error,
    sniff_content_type,
    transport_error,
    unexpected_error,
    upstream_error,
)
from shared.upstream.fetch import fetch_image
from shared.upstream.ledger import UpstreamCalls, current_calls
from shared.upstream.retry import RefreshOnce, RetryPolicy

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


class UpstreamClient:
    """Calls the images API for one app instance; shares one connection pool.

    ``retry`` decides which calls are repeated and how long to wait (default: the
    settings' ``max_retries``, real sleeping).
    """

    def __init__(self, settings: Settings, auth: Any, http: httpx.AsyncClient | None = None, *, retry: RetryPolicy | None = None) -> None:
        self.settings = settings
        self.auth = auth
        self.retry = retry or RetryPolicy(settings.max_retries)
        self._http = http
        self._own_http = http is None
        self._slots = asyncio.Semaphore(settings.max_concurrent_upstream)

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared connection pool, made on first use inside the running loop."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=max(20, self.settings.max_concurrent_upstream * 2), max_keepalive_connections=20),
                follow_redirects=False,
                headers={"User-Agent": "image-generation-functions/0.1"},
            )
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

    async def generate(self, request: ImageRequest, *, timeout: float, budget: float) -> UpstreamResult:
        """Generate the request's images within ``timeout`` seconds in all (see :meth:`send`)."""
        url, body = self.url_and_body(request)
        return await self.send(url, json.dumps(body).encode(), {"Content-Type": "application/json"}, request, timeout=timeout, budget=budget)

    @telemetry.upstream_call
    async def send(
        self, url: str, payload: Payload, request_headers: dict[str, str], request: ImageRequest, *, timeout: float, budget: float
    ) -> UpstreamResult:
        """POST ``payload`` (with ``request_headers``, e.g. its Content-Type) to an images endpoint within ``timeout``
        seconds in all (every attempt, every wait and every body read), repeating within ``budget`` what
        :mod:`~shared.upstream.retry` allows, and read the 200 answer into at most ``request.n`` images.
        A payload that is not bytes must be iterable more than once (each attempt sends it again).

        Every failure is a :class:`~shared.errors.ServiceError`, transient only when nothing was accepted
        upstream: an exception nobody expected is a final 502 once a request had left (a transient 503
        before), and the deadline a final 504 (a transient 503 if no request had left).
        """
        refresh = RefreshOnce(self.auth)
        calls = current_calls()
        before = calls.sent
        request_id: str | None = None

        async def post(auth_headers: dict[str, str]) -> tuple[ImageBodyReader, httpx.Headers]:
            return await self._post(url, payload, {**request_headers, **auth_headers}, timeout, request.n, calls)

        try:
            async with asyncio.timeout(timeout):
                reader, headers = await self.retry.run(lambda: refresh.call(post), budget=min(budget, timeout))
                request_id = upstream_request_id(headers)
                result = await self._parse_success(reader, headers, request)
        except TimeoutError:
            raise deadline_error(timeout, sent=calls.sent > before) from None
        except UpstreamAnswer as answer:
            error = map_error(answer.status, answer.body, answer.headers)
            error.upstream_request_id = upstream_request_id(answer.headers)
            raise error from None
        except httpx.TransportError as exc:
            raise transport_error(exc, timeout) from None
        except ServiceError as error:
            error.upstream_request_id = error.upstream_request_id or request_id
            raise
        except Exception as exc:
            log.exception("upstream call failed unexpectedly")
            raise unexpected_error(exc, sent=calls.sent > before) from None
        result.attempts, result.request_id = calls.sent - before, request_id
        calls.answered = True
        return result

    @telemetry.upstream_attempt
    async def _post(
        self, url: str, payload: Payload, headers: dict[str, str], timeout: float, n: int, calls: UpstreamCalls
    ) -> tuple[ImageBodyReader, httpx.Headers]:
        """One request. A 200 body is decoded while it streams in (no copy of the whole body, no giant
        JSON string); any other answer is read (at most :data:`ERROR_BODY_LIMIT` bytes) and raised as
        :class:`UpstreamAnswer`."""
        async with self._slots:
            calls.sent += 1  # from here on the request may reach upstream
            async with self.http.stream(
                "POST",
                url,
                content=payload,
                headers={"Accept": "application/json", **headers},
                timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            ) as response:
                if response.status_code != 200:
                    raise UpstreamAnswer(response.status_code, await _error_body(response), response.headers)
                reader = ImageBodyReader(self.settings.max_image_bytes, max_images=n)
                async for chunk in response.aiter_bytes():  # content-encoding undone
                    reader.feed(chunk)
                return reader, response.headers

    async def _parse_success(self, reader: ImageBodyReader, headers: httpx.Headers, request: ImageRequest) -> UpstreamResult:
        # Upstream answered 200: the generation is made and billed. Whatever goes wrong from
        # here is reported as not transient, so no queue redelivery pays for it a second time.
        try:
            body = reader.result()
        except ValueError as exc:
            raise upstream_error(f"The model service answered 200 with a body that is not strict JSON ({exc}). {NOT_REPEATED}") from None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            # The seed's legacy content-filter answer can arrive with 200.
            raise map_error(400, body, headers)
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
