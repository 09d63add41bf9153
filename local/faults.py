"""Upstream misbehaviour on demand: prompt markers that make the images simulator answer like a broken upstream.

Each marker is one way a real upstream (or anything between it and the service) can break the
service's promises; tests/test_hardening_faults.py runs every one through the synchronous route
and through the queue. The simulator calls :func:`refusal` where it checks for injected faults
(before the work starts: not billed) and :func:`answer` where it builds a 200 answer (after the
work started: billed). Markers take effect on every path style.

Billed (the answer is a 200; the image exists)
    [[nan-created]]          "created": NaN (not JSON: a strict reader refuses it)
    [[huge-created]]         "created": 10**30 (JSON, but no timestamp)
    [[deep-json]]            "usage" nested 5,000 levels deep
    [[huge-revised-prompt]]  every item carries a 1 MB revised_prompt
    [[extra-images]]         n + 2 images instead of n
    [[webp]]                 webp bytes, whatever output_format asked for
    [[drip]]                 the body arrives 4 bytes every 0.25 s (for up to 10 minutes)
    [[truncated]]            the body stops halfway and the connection is closed
    [[url]]                  the image as a URL on the simulator itself (scheme, host and port of the request)
    [[foreign-url]] / [[foreign-url:PORT]]      the image as a URL on another port (PORT, or the next one) of the same host
    [[redirect-port]] / [[redirect-port:PORT]]  the image as a URL on the simulator that redirects (302) to another port
Not billed (an error answer instead of the work)
    [[huge-error]]           500 with a 64 MB JSON error body, streamed
    [[deep-error]]           400 whose error JSON nests 3,000 levels deep (about 6 KB)
    [[echo-key]]             400 whose message echoes the request's api-key and Authorization headers, a SAS
                             signature, an AccountKey and a JWT
    [[bad-retry-after]]      429 with ``retry-after-ms: 1e400`` and ``Retry-After: -5``

``GET /_sim/faults/image.png`` serves a small PNG (what the URL faults point at) and
``GET /_sim/faults/redirect?port=P`` the redirect; :data:`HITS` counts what each (port, path) served
and :data:`STREAMED` how many bytes each streamed fault body handed to the server, so in-process
tests can tell a bounded read from a whole one.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

MARKERS: dict[str, str] = {
    "[[nan-created]]": "200 with a usable image and \"created\": NaN (not JSON)",
    "[[huge-created]]": "200 with a usable image and \"created\": 10**30",
    "[[deep-json]]": "200 with a usable image and \"usage\" nested 5,000 levels deep",
    "[[huge-revised-prompt]]": "200 whose items carry a 1 MB revised_prompt",
    "[[extra-images]]": "200 with n + 2 images",
    "[[webp]]": "200 with webp bytes whatever output_format asked",
    "[[drip]]": "200 whose body arrives 4 bytes every 0.25 s",
    "[[truncated]]": "200 whose body stops halfway (connection closed)",
    "[[url]]": "200 with the image as a URL on the simulator itself",
    "[[foreign-url]]": "200 with the image as a URL on another port of the same host ([[foreign-url:PORT]])",
    "[[redirect-port]]": "200 with an image URL that redirects to another port ([[redirect-port:PORT]])",
    "[[huge-error]]": "500 with a 64 MB JSON error body (not billed)",
    "[[deep-error]]": "400 whose error JSON nests 3,000 levels deep (not billed)",
    "[[echo-key]]": "400 whose message echoes the api-key, the Authorization header, a SAS signature, an AccountKey, a JWT (not billed)",
    "[[bad-retry-after]]": "429 with retry-after-ms: 1e400 and Retry-After: -5 (not billed)",
}
# For the simulator's marker pattern (markers are stripped from revised prompts).
PATTERN = r"nan-created|huge-created|deep-json|huge-revised-prompt|extra-images|webp|drip|truncated|url|foreign-url(?::\d+)?|redirect-port(?::\d+)?|huge-error|deep-error|echo-key|bad-retry-after"
_MARKER = re.compile(rf"\[\[({PATTERN})\]\]")

HUGE_ERROR_BYTES = 64 * 1024 * 1024
DRIP_BYTES, DRIP_INTERVAL, DRIP_FOR = 4, 0.25, 600.0
# A JWT-shaped token (header {"alg":"HS256","typ":"JWT"}, payload {"sub":"1234567890"}): not a real credential.
ECHOED_JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLW9mLXRoZS10ZXN0"
ECHOED_SIG = "SimSasSignature0123456789abcdefXYZ%3D"
ECHOED_ACCOUNT_KEY = "SimAccountKey0123456789abcdefghijklmnopqrstuvwxyzABCDEF=="

HITS: Counter[tuple[int | None, str]] = Counter()  # (port, path) -> requests served by the fault routes
STREAMED: Counter[str] = Counter()  # marker -> bytes a streamed fault body handed to the server
_lock = threading.Lock()


def markers_in(prompt: str) -> dict[str, str | None]:
    """The fault markers of ``prompt``: name -> its argument (e.g. a port) or None."""
    found: dict[str, str | None] = {}
    for match in _MARKER.finditer(prompt):
        name, _, argument = match[1].partition(":")
        found[name] = argument or None
    return found


def refusal(prompt: str, request: Request) -> Response | None:
    """The error answer a not-billed fault gives instead of the work, or None."""
    found = markers_in(prompt)
    if "huge-error" in found:
        head = b'{"error": {"code": "InternalServerError", "message": "'
        return StreamingResponse(_stream(request, "huge-error", head, HUGE_ERROR_BYTES, b'"}}'), 500, media_type="application/json")
    if "deep-error" in found:
        deep = "[" * 3000 + "]" * 3000
        text = '{"error": {"code": "invalid_request", "message": "deep", "param": ' + deep + "}}"
        return Response(text, 400, media_type="application/json")
    if "echo-key" in found:
        message = (
            f"Invalid request from api-key {request.headers.get('api-key', '')}; Authorization: {request.headers.get('authorization', '')}; "
            f"see https://simstore.blob.core.windows.net/c/b.png?sv=2024-01-01&sig={ECHOED_SIG}; "
            f"DefaultEndpointsProtocol=https;AccountName=simstore;AccountKey={ECHOED_ACCOUNT_KEY}; token {ECHOED_JWT}"
        )
        return JSONResponse({"error": {"code": "invalid_request", "message": message}}, 400)
    if "bad-retry-after" in found:
        body = {"error": {"code": "429", "message": "Rate limit exceeded; the headers say nonsense."}}
        return JSONResponse(body, 429, headers={"retry-after-ms": "1e400", "Retry-After": "-5"})
    return None


def answer(prompt: str, payload: dict[str, Any], splices: Mapping[str, bytes], request: Request) -> Response | None:
    """The 200 answer a billed fault gives (``payload`` as the simulator built it, b64 values spliced in), or None."""
    found = markers_in(prompt)
    if not found.keys() & {"nan-created", "huge-created", "deep-json", "huge-revised-prompt", "extra-images", "webp", "drip", "truncated", "url", "foreign-url", "redirect-port"}:
        return None
    payload = dict(payload, data=[dict(item) for item in payload["data"]])
    splices = dict(splices)
    raw: dict[str, str] = {}  # placeholder -> raw JSON text (what json.dumps cannot write)
    if "nan-created" in found:
        raw['"sim-raw-created"'], payload["created"] = "NaN", "sim-raw-created"
    if "huge-created" in found:
        payload["created"] = 10**30
    if "deep-json" in found:
        raw['"sim-raw-deep"'], payload["usage"] = "[" * 5000 + "]" * 5000, "sim-raw-deep"
    if "huge-revised-prompt" in found:
        for item in payload["data"]:
            item["revised_prompt"] = "改訂されたプロンプトは終わらない。まだまだ続く。" * 14_000  # 1 MB of text that JSON escapes six bytes a character
    if "extra-images" in found:
        payload["data"] += [_copy_item(payload["data"][0], splices, extra) for extra in range(2)]
    if "webp" in found:
        splices = {placeholder: base64.b64encode(webp_image()) for placeholder in splices}
    _url_faults(found, payload, request)
    body = _render(payload, splices, raw)
    if "drip" in found:
        return StreamingResponse(_drip(body), 200, media_type="application/json")
    if "truncated" in found:
        return StreamingResponse(_truncated(body), 200, media_type="application/json")
    return Response(body, 200, media_type="application/json")


def _url_faults(found: dict[str, str | None], payload: dict[str, Any], request: Request) -> None:
    base = str(request.base_url).rstrip("/")
    port = request.url.port
    other = port + 1 if port else 1
    if "url" in found:
        url = f"{base}/_sim/faults/image.png"
    elif "foreign-url" in found:
        url = f"{request.url.scheme}://{request.url.hostname}:{found['foreign-url'] or other}/_sim/faults/image.png"
    elif "redirect-port" in found:
        url = f"{base}/_sim/faults/redirect?port={found['redirect-port'] or other}"
    else:
        return
    for item in payload["data"]:
        item.pop("b64_json", None)
        item["url"] = url


def _copy_item(item: dict[str, Any], splices: dict[str, bytes], extra: int) -> dict[str, Any]:
    copy = dict(item)
    if isinstance(item.get("b64_json"), str) and item["b64_json"] in splices:
        copy["b64_json"] = f"sim-extra{extra}-{uuid.uuid4().hex}"
        splices[copy["b64_json"]] = splices[item["b64_json"]]
    return copy


def _render(payload: dict[str, Any], splices: Mapping[str, bytes], raw: Mapping[str, str]) -> bytes:
    text = json.dumps(payload, separators=(",", ":")).encode()
    for placeholder, value in raw.items():
        text = text.replace(placeholder.encode(), value.encode())
    for placeholder, data in splices.items():
        text = text.replace(placeholder.encode(), data)
    return text


async def _stream(request: Request, marker: str, head: bytes, size: int, tail: bytes) -> AsyncIterator[bytes]:
    chunk = b"x" * 65536
    yield head
    sent = 0
    while sent < size:
        if await request.is_disconnected():  # the server takes writes to a closed connection silently
            return
        yield chunk
        sent += len(chunk)
        with _lock:
            STREAMED[marker] += len(chunk)
    yield tail


async def _drip(body: bytes) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    end = loop.time() + DRIP_FOR
    for start in range(0, len(body), DRIP_BYTES):
        if loop.time() > end:
            return
        yield body[start : start + DRIP_BYTES]
        with _lock:
            STREAMED["drip"] += DRIP_BYTES
        await asyncio.sleep(DRIP_INTERVAL)  # the fault itself: an upstream that drips


async def _truncated(body: bytes) -> AsyncIterator[bytes]:
    yield body[: len(body) // 2]
    raise ConnectionAbortedError("[[truncated]]: the simulator drops the connection halfway through the body")


@functools.cache
def webp_image() -> bytes:
    """A small real webp picture."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 120, 200)).save(out, "WEBP")
    return out.getvalue()


@functools.cache
def png_image() -> bytes:
    """A small real PNG picture (what the URL faults serve)."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(out, "PNG")
    return out.getvalue()


async def _image_route(request: Request) -> Response:
    with _lock:
        HITS[(request.url.port, request.url.path)] += 1
    return Response(png_image(), media_type="image/png")


async def _redirect_route(request: Request) -> Response:
    with _lock:
        HITS[(request.url.port, request.url.path)] += 1
    port = request.query_params.get("port", "1")
    return RedirectResponse(f"{request.url.scheme}://{request.url.hostname}:{port}/_sim/faults/image.png", status_code=302)


def routes() -> list[Route]:
    """The routes the URL faults point at (the simulator adds them to its own)."""
    return [
        Route("/_sim/faults/image.png", _image_route, methods=["GET"]),
        Route("/_sim/faults/redirect", _redirect_route, methods=["GET"]),
    ]
