"""The images API client: endpoint styles, auth header, the call, the 200 answer read into images.

One ``httpx.AsyncClient`` per process (connection pooling). Three path styles:
Azure's deployment-scoped path with ``api-version``, Azure's v1 path and OpenAI's own
API. Which calls are repeated is :mod:`shared.upstream.retry`'s business.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pybase64

from shared import telemetry
from shared.models import ImageRequest
from shared.settings import Settings
from shared.upstream.body import ImageBodyReader
from shared.upstream.errors import (
    UpstreamAnswer,
    image_too_large,
    invalid_base64,
    map_error,
    sniff_content_type,
    transport_error,
    upstream_error,
)
from shared.upstream.retry import RefreshOnce, RetryPolicy

_MAX_REDIRECTS = 3


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


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


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

    @telemetry.upstream_call
    async def generate(self, request: ImageRequest, *, timeout: float, budget: float) -> UpstreamResult:
        """Generate the request's images, repeating within ``budget`` seconds what :mod:`~shared.upstream.retry` allows."""
        url, body = self.url_and_body(request)
        payload = json.dumps(body).encode()
        refresh = RefreshOnce(self.auth)
        sent = 0

        async def send(auth_headers: dict[str, str]) -> tuple[ImageBodyReader, httpx.Headers]:
            nonlocal sent
            sent += 1
            return await self._post(url, payload, auth_headers, timeout)

        try:
            reader, headers = await self.retry.run(lambda: refresh.call(send), budget=budget)
        except UpstreamAnswer as answer:
            raise map_error(answer.status, answer.body, answer.headers) from None
        except httpx.TransportError as exc:
            raise transport_error(exc, timeout) from None
        result = await self._parse_success(reader, headers)
        result.attempts = sent
        return result

    @telemetry.upstream_attempt
    async def _post(self, url: str, payload: bytes, auth_headers: dict[str, str], timeout: float) -> tuple[ImageBodyReader, httpx.Headers]:
        """One request. A 200 body is decoded while it streams in (no copy of the whole body, no giant
        JSON string); any other answer is read and raised as :class:`UpstreamAnswer`."""
        async with self._slots, self.http.stream(
            "POST",
            url,
            content=payload,
            headers={"Content-Type": "application/json", "Accept": "application/json", **auth_headers},
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
        ) as response:
            if response.status_code != 200:
                await response.aread()
                raise UpstreamAnswer(response.status_code, _json_or_none(response), response.headers)
            reader = ImageBodyReader(self.settings.max_image_bytes)
            async for chunk in response.aiter_bytes():  # content-encoding undone
                reader.feed(chunk)
            return reader, response.headers

    async def _parse_success(self, reader: ImageBodyReader, headers: httpx.Headers) -> UpstreamResult:
        # Upstream answered 200: the generation is made and billed. Whatever goes wrong from
        # here is reported as not transient, so no queue redelivery pays for it a second time.
        try:
            body = reader.result()
        except ValueError:
            raise upstream_error("The model service answered 200 with a body that is not JSON.") from None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            # The seed's legacy content-filter answer can arrive with 200.
            raise map_error(400, body, headers)
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise upstream_error("The model service answered without images.")
        images = [await self._image(item, reader) for item in items]
        created = body.get("created")
        usage = body.get("usage")
        return UpstreamResult(
            created=int(created) if isinstance(created, int | float) else int(time.time()),
            images=images,
            usage=usage if isinstance(usage, dict) else None,
        )

    async def _image(self, item: Any, reader: ImageBodyReader) -> UpstreamImage:
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
            data = await self.download(item["url"])
        else:
            raise upstream_error("A data item carries neither b64_json nor url.")
        content_type = sniff_content_type(data)
        if content_type is None:
            raise upstream_error("The model service returned bytes that are not an image.")
        revised_prompt = item.get("revised_prompt")
        return UpstreamImage(
            data=data,
            content_type=content_type,
            revised_prompt=revised_prompt if isinstance(revised_prompt, str) else None,
            content_filter_results=item.get("content_filter_results"),
            prompt_filter_results=item.get("prompt_filter_results"),
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
        """Fetch an image URL once, streamed with a size cap; https only and same-host redirects only."""
        origin = urlsplit(url)
        for _ in range(_MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme != "https" and not (parts.scheme == "http" and self.settings.allow_http_upstream):
                raise upstream_error("The model service returned an image URL that is not https.")
            if parts.hostname != origin.hostname:
                raise upstream_error("The image URL redirected to another host; not followed.")
            try:
                async with self.http.stream("GET", url, timeout=httpx.Timeout(60.0, connect=10.0)) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    return await self._read_image(response)
            except httpx.HTTPError as exc:
                raise upstream_error(f"Downloading the generated image failed: {type(exc).__name__}") from None
        raise upstream_error("Too many redirects for the image URL.")

    async def _read_image(self, response: httpx.Response) -> bytes:
        limit = self.settings.max_image_bytes
        if response.status_code != 200:
            raise upstream_error(f"Downloading the generated image failed ({response.status_code}).")
        declared = response.headers.get("content-length")
        too_large = upstream_error(f"The generated image is larger than {limit} bytes.")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks = bytearray()
        async for chunk in response.aiter_bytes():
            chunks += chunk
            if len(chunks) > limit:
                raise too_large
        return bytes(chunks)
