"""The images API client: endpoint styles, auth header, retries, error mapping.

One ``httpx.AsyncClient`` per process (connection pooling). Three path styles:
Azure's deployment-scoped path with ``api-version``, Azure's v1 path and
OpenAI's own API. Retry policy, chosen so a user never pays twice:

- 429: wait for ``retry-after-ms`` / ``Retry-After`` if that fits the caller's
  time budget, else hand the wait to the caller (HTTP 429, or the queue delays the job);
- 5xx and connection failures that happened before upstream accepted the work:
  bounded, jittered exponential backoff within the budget;
- a generation that timed out or whose connection broke after it was sent is
  never retried here: upstream may already have made (and billed) the image;
- 401: the credential is refreshed once and the call repeated once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pybase64

from shared.errors import ServiceError
from shared.models import ImageRequest
from shared.settings import Settings

log = logging.getLogger(__name__)

PROMPT_FILTERED = "Your task failed as a result of our safety system."
IMAGE_FILTERED = "Generated image was filtered as a result of our safety system."
_BACKOFF_BASE = 1.0
_BACKOFF_CAP = 10.0
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
    """A successful generation."""

    created: int
    images: list[UpstreamImage]
    usage: dict[str, Any] | None = None
    attempts: int = 1
    translations: list[str] = field(default_factory=list)


def sniff_content_type(data: bytes) -> str | None:
    """The image type from its magic bytes (upstream's word is not trusted for this)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (preferred, finer) or ``Retry-After``."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return max(0.0, float(raw) * scale)
        except ValueError:
            continue  # an HTTP date: rare for this API; fall through to the other header
    return None


def _backoff(attempt: int) -> float:
    """Full-jitter exponential backoff (AWS architecture blog): spreads retries of many workers."""
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))


def map_error(status: int, body: Any, headers: httpx.Headers) -> ServiceError:
    """Turn an upstream error response into the service's error (seed shapes for content filtering)."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or "")
    message = str(error.get("message") or "")
    inner = error.get("inner_error") or error.get("innererror") or {}
    inner = inner if isinstance(inner, dict) else {}
    inner_code = str(inner.get("code") or "")

    if code in ("contentFilter", "content_filter", "content_policy_violation") or inner_code == "ResponsibleAIPolicyViolation":
        image_side = "generated image" in message.lower() or "image was filtered" in message.lower()
        extra: dict[str, Any] = {"filtered": "image" if image_side else "prompt"}
        results = inner.get("content_filter_results") or error.get("content_filter_results")
        if isinstance(results, dict):
            categories = sorted(k for k, v in results.items() if isinstance(v, dict) and v.get("filtered"))
            if categories:
                extra["categories"] = categories
            extra["content_filter_results"] = results
        if isinstance(inner.get("revised_prompt"), str):
            extra["revised_prompt"] = inner["revised_prompt"]
        return ServiceError(400, "contentFilter", IMAGE_FILTERED if image_side else PROMPT_FILTERED, extra=extra)
    if status == 429:
        retry_after = parse_retry_after(headers)
        return ServiceError(
            429,
            "429",
            message or "The model deployment is throttling requests; retry later.",
            retry_after=retry_after if retry_after is not None else 10.0,
            transient=True,
        )
    if status == 400:
        # It passed this service's checks, so upstream's own words are the best explanation.
        param = error.get("param") if isinstance(error.get("param"), str) else None
        return ServiceError(400, code or "invalid_request", message or "The model service rejected the request.", param=param)
    if status == 401:
        return ServiceError(
            502,
            "UpstreamAuthenticationFailed",
            "The model service refused this app's credentials (401) even after refreshing them; "
            "check the key or the identity's role 'Cognitive Services OpenAI User'.",
            transient=True,
        )
    if status == 403:
        return ServiceError(403, code or "Forbidden", message or "The model service refused the request (403).")
    if status == 404:
        return ServiceError(
            404,
            "DeploymentNotFound",
            "The model service does not have this deployment: " + (message or "404 from upstream"),
        )
    if status >= 500:
        return ServiceError(
            502, "UpstreamError", f"The model service failed ({status}): {message or 'no details'}", transient=True
        )
    return ServiceError(502, "UpstreamError", f"Unexpected answer from the model service ({status}): {message}", transient=True)


_B64_KEY = b"b64_json"
_JSON_ESCAPES = {ord("/"): b"/", ord('"'): b'"', ord("\\"): b"\\", ord("b"): b"\b", ord("f"): b"\f", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t"}


class _Base64Value:
    """One ``b64_json`` string, decoded as its chunks arrive, with the checks ``_decode`` makes in the same order:
    the size cap first (on the text's length), then strict base64 (what ``b64decode(validate=True)`` accepts)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.chars = 0
        self.rest = b""  # 0-3 characters waiting for a full quantum
        self.padded = False
        self.too_large = False
        self.invalid = False

    def feed(self, text: bytes | memoryview) -> None:
        self.chars += len(text)
        if not self.too_large and self.chars * 3 // 4 > self.limit + 3:
            self.too_large, self.parts = True, []
        if self.too_large or self.invalid or not text:
            return
        buffer = self.rest + bytes(text) if self.rest else text
        whole = len(buffer) - len(buffer) % 4
        if whole:
            try:
                if self.padded:  # padding is only allowed at the very end
                    raise binascii.Error("data after padding")
                self.parts.append(pybase64.b64decode(buffer[:whole], validate=True))
            except (binascii.Error, ValueError):
                self.invalid, self.parts = True, []
                return
            self.padded = buffer[whole - 1 : whole] == b"="
        self.rest = bytes(buffer[whole:])

    def finish(self) -> bytes:
        if self.too_large:
            raise ServiceError(502, "UpstreamError", f"The image from the model service is larger than {self.limit} bytes.", transient=False)
        if self.invalid or self.rest:  # a partial quantum at the end: "Incorrect padding"
            raise _invalid_base64()
        data = b"".join(self.parts)
        self.parts = []
        return data


def _invalid_base64() -> ServiceError:
    return ServiceError(502, "UpstreamError", "The model service returned invalid base64.", transient=False)


class ImageBodyReader:
    """Reads a JSON answer chunk by chunk, decoding each ``"b64_json"`` string as it streams in.

    The image arrives as a multi-megabyte base64 string inside JSON. Holding the body,
    then a decoded JSON string, then the image would keep about four copies per request
    in memory and scan the bytes three times. Instead, the small rest of the document
    (the skeleton) is kept with each ``b64_json`` value replaced by a placeholder, and
    the value goes straight through the base64 decoder. ``result()`` parses the skeleton;
    the caller takes each value's bytes where its placeholder is. JSON escapes inside a
    value (an escaped slash or a character written as a unicode escape) are honoured; what
    is not base64 once unescaped (malformed escapes, control characters) is invalid base64.
    Otherwise the answers are what ``json.loads`` and ``b64decode(validate=True)`` give.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.skeleton = bytearray()
        self.values: list[_Base64Value] = []
        self._value: _Base64Value | None = None  # inside a b64_json string
        self._in_string = False  # inside some other string (kept in the skeleton)
        self._escaped = False  # the previous byte of that string was a backslash
        self._string: bytearray | None = bytearray()  # that string's first bytes (None once too long to be the key)
        self._key = 0  # 1: just read the string "b64_json"; 2: and its colon
        self._carry = b""  # an escape sequence split across chunks, inside a b64_json value
        self.marker = f"\x00{uuid.uuid4().hex}:"  # placeholder prefix; a NUL and a nonce no upstream string carries

    def feed(self, chunk: bytes) -> None:
        data = self._carry + chunk if self._carry else chunk
        self._carry = b""
        position, end = 0, len(data)
        while position < end:
            if self._value is not None:
                position = self._feed_value(data, position)
            elif self._in_string:
                position = self._feed_string(data, position)
            else:
                position = self._feed_structure(data, position)

    def _feed_value(self, data: bytes, position: int) -> int:
        assert self._value is not None
        end = len(data)
        quote = data.find(b'"', position)
        stop = end if quote < 0 else quote
        backslash = data.find(b"\\", position, stop)
        if backslash >= 0:
            self._value.feed(memoryview(data)[position:backslash])
            if backslash + 1 >= end:
                self._carry = data[backslash:]
                return end
            kind = data[backslash + 1]
            if kind == ord("u"):
                if backslash + 6 > end:
                    self._carry = data[backslash:]
                    return end
                try:
                    char = chr(int(data[backslash + 2 : backslash + 6], 16)).encode("utf-8")
                except ValueError:
                    char = b"\x00"  # not a valid escape: certainly not base64
                self._value.feed(char)
                return backslash + 6
            self._value.feed(_JSON_ESCAPES.get(kind, b"\x00"))
            return backslash + 2
        self._value.feed(memoryview(data)[position:stop])
        if quote < 0:
            return end
        self._value = None
        return quote + 1

    def _feed_string(self, data: bytes, position: int) -> int:
        end = len(data)
        scan = position
        while scan < end:
            if self._escaped:
                self._escaped = False
                scan += 1
                continue
            quote = data.find(b'"', scan)
            backslash = data.find(b"\\", scan, end if quote < 0 else quote)
            if backslash >= 0:
                self._escaped = True
                scan = backslash + 1
                continue
            if quote < 0:
                break
            self._remember(data[position:quote])
            self.skeleton += data[position : quote + 1]
            self._in_string = False
            self._key = 1 if self._string == _B64_KEY else 0
            return quote + 1
        self._remember(data[position:end])
        self.skeleton += data[position:end]
        return end

    def _remember(self, text: bytes) -> None:
        if self._string is not None:
            self._string += text
            if len(self._string) > len(_B64_KEY):
                self._string = None

    def _feed_structure(self, data: bytes, position: int) -> int:
        quote = data.find(b'"', position)
        stop = len(data) if quote < 0 else quote
        for byte in data[position:stop]:  # between strings: punctuation, numbers, literals (a few bytes)
            if byte in b" \t\r\n":
                continue
            self._key = 2 if (self._key == 1 and byte == ord(":")) else 0
        self.skeleton += data[position:stop]
        if quote < 0:
            return stop
        if self._key == 2:
            self._value = _Base64Value(self.limit)
            self.skeleton += json.dumps(f"{self.marker}{len(self.values)}").encode()
            self.values.append(self._value)
        else:
            self.skeleton += b'"'
            self._in_string = True
            self._string = bytearray()
        self._key = 0
        return quote + 1

    def result(self) -> Any:
        """The parsed document, b64_json strings replaced by placeholders (see :meth:`image`); ValueError if not JSON."""
        if self._value is not None or self._in_string or self._carry:
            raise ValueError("the body ends inside a string")
        return json.loads(bytes(self.skeleton))

    def image(self, placeholder: str) -> bytes | None:
        """The decoded bytes a placeholder stands for (ServiceError if they were not valid), or None if it is not one."""
        if not placeholder.startswith(self.marker):
            return None
        index = placeholder[len(self.marker) :]
        if not index.isdigit() or int(index) >= len(self.values):
            return None
        return self.values[int(index)].finish()


class UpstreamClient:
    """Calls the images API for one app instance; shares one connection pool."""

    def __init__(self, settings: Settings, auth: Any, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.auth = auth
        self._http = http
        self._own_http = http is None
        self._slots = asyncio.Semaphore(settings.max_concurrent_upstream)

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=max(20, self.settings.max_concurrent_upstream * 2), max_keepalive_connections=20),
                follow_redirects=False,
                headers={"User-Agent": "image-generation-functions/0.1"},
            )
        return self._http

    async def close(self) -> None:
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
        """Generate the request's images, retrying within ``budget`` seconds as the module says."""
        url, body = self.url_and_body(request)
        payload = json.dumps(body).encode()
        deadline = time.monotonic() + budget
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            auth_headers = await self.auth.headers()
            reader: ImageBodyReader | None = None
            try:
                async with self._slots, self.http.stream(
                    "POST",
                    url,
                    content=payload,
                    headers={"Content-Type": "application/json", "Accept": "application/json", **auth_headers},
                    timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
                ) as response:
                    if response.status_code == 200:
                        # Decoded while it streams in: no copy of the whole body, no giant JSON string.
                        reader = ImageBodyReader(self.settings.max_image_bytes)
                        async for chunk in response.aiter_bytes():  # content-encoding undone
                            reader.feed(chunk)
                    else:
                        await response.aread()
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Nothing reached upstream: safe to try again.
                wait = _backoff(attempt)
                if attempt <= self.settings.max_retries and time.monotonic() + wait < deadline:
                    log.warning("upstream connection failed (%s), retry %d in %.1fs", type(exc).__name__, attempt, wait)
                    await asyncio.sleep(wait)
                    continue
                raise ServiceError(
                    502, "UpstreamUnavailable", f"Could not connect to the model service: {type(exc).__name__}", transient=True
                ) from None
            except httpx.TimeoutException:
                raise ServiceError(
                    504,
                    "UpstreamTimeout",
                    f"The model service did not answer within {timeout:g} s; the request was not repeated "
                    "because the image may already have been generated.",
                    transient=False,  # a retry could pay twice
                ) from None
            except httpx.TransportError as exc:
                raise ServiceError(
                    502, "UpstreamError", f"The connection to the model service broke ({type(exc).__name__}); not repeated.", transient=False
                ) from None

            if reader is not None:
                result = await self._parse_success(reader, response.headers)
                result.attempts = attempt
                return result

            try:
                error_body = response.json()
            except ValueError:
                error_body = None
            status = response.status_code
            if status == 401 and not refreshed:
                refreshed = True
                log.info("upstream answered 401; refreshing the credential once")
                await self.auth.refresh(auth_headers)
                continue
            error = map_error(status, error_body, response.headers)
            if status == 429:
                wait = error.retry_after or 0.0
                if attempt <= self.settings.max_retries and time.monotonic() + wait < deadline:
                    log.info("upstream throttled (429); waiting %.2fs as asked", wait)
                    await asyncio.sleep(wait)
                    continue
                raise error
            if status >= 500:
                wait = _backoff(attempt)
                if attempt <= self.settings.max_retries and time.monotonic() + wait < deadline:
                    log.warning("upstream answered %d; retry %d in %.1fs", status, attempt, wait)
                    await asyncio.sleep(wait)
                    continue
            raise error

    async def _parse_success(self, reader: ImageBodyReader, headers: httpx.Headers) -> UpstreamResult:
        # Upstream answered 200: the generation is made and billed. Whatever goes wrong from
        # here is reported as not transient, so no queue redelivery pays for it a second time.
        try:
            body = reader.result()
        except ValueError:
            raise ServiceError(502, "UpstreamError", "The model service answered 200 with a body that is not JSON.", transient=False) from None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            # The seed's legacy content-filter answer can arrive with 200.
            raise map_error(400, body, headers)
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise ServiceError(502, "UpstreamError", "The model service answered without images.", transient=False)
        images: list[UpstreamImage] = []
        for item in items:
            if not isinstance(item, dict):
                raise ServiceError(502, "UpstreamError", "The model service answered with a malformed data item.", transient=False)
            b64 = item.get("b64_json")
            streamed = reader.image(b64) if isinstance(b64, str) else None  # decoded while it arrived
            if streamed is not None:
                data = streamed
            elif isinstance(b64, str):
                data = self._decode(b64)
            elif isinstance(item.get("url"), str):
                data = await self.download(item["url"])
            else:
                raise ServiceError(502, "UpstreamError", "A data item carries neither b64_json nor url.", transient=False)
            content_type = sniff_content_type(data)
            if content_type is None:
                raise ServiceError(502, "UpstreamError", "The model service returned bytes that are not an image.", transient=False)
            images.append(
                UpstreamImage(
                    data=data,
                    content_type=content_type,
                    revised_prompt=item.get("revised_prompt") if isinstance(item.get("revised_prompt"), str) else None,
                    content_filter_results=item.get("content_filter_results"),
                    prompt_filter_results=item.get("prompt_filter_results"),
                )
            )
        created = body.get("created")
        usage = body.get("usage")
        return UpstreamResult(
            created=int(created) if isinstance(created, int | float) else int(time.time()),
            images=images,
            usage=usage if isinstance(usage, dict) else None,
        )

    def _decode(self, b64: str) -> bytes:
        limit = self.settings.max_image_bytes
        if len(b64) * 3 // 4 > limit + 3:
            raise ServiceError(502, "UpstreamError", f"The image from the model service is larger than {limit} bytes.", transient=False)
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise ServiceError(502, "UpstreamError", "The model service returned invalid base64.", transient=False) from None

    async def download(self, url: str) -> bytes:
        """Fetch an image URL once, streamed with a size cap; https only and same-host redirects only."""
        limit = self.settings.max_image_bytes
        origin = urlsplit(url)
        for _ in range(_MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme != "https" and not (parts.scheme == "http" and self.settings.allow_http_upstream):
                raise ServiceError(502, "UpstreamError", "The model service returned an image URL that is not https.", transient=False)
            if parts.hostname != origin.hostname:
                raise ServiceError(502, "UpstreamError", "The image URL redirected to another host; not followed.", transient=False)
            try:
                async with self.http.stream("GET", url, timeout=httpx.Timeout(60.0, connect=10.0)) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise ServiceError(
                            502, "UpstreamError", f"Downloading the generated image failed ({response.status_code}).", transient=False
                        )
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > limit:
                        raise ServiceError(502, "UpstreamError", f"The generated image is larger than {limit} bytes.", transient=False)
                    chunks = bytearray()
                    async for chunk in response.aiter_bytes():
                        chunks += chunk
                        if len(chunks) > limit:
                            raise ServiceError(502, "UpstreamError", f"The generated image is larger than {limit} bytes.", transient=False)
                    return bytes(chunks)
            except httpx.HTTPError as exc:
                raise ServiceError(502, "UpstreamError", f"Downloading the generated image failed: {type(exc).__name__}", transient=False) from None
        raise ServiceError(502, "UpstreamError", "Too many redirects for the image URL.", transient=False)

