"""Reading a request body by hand: size cap, content type, strict UTF-8, strict JSON.

FastAPI's model binding is not used for bodies, so every refusal has the Azure
error shape, names what is wrong, and happens before anything goes upstream.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request

from shared.errors import ServiceError, invalid

_CHARSET = re.compile(r"charset=\"?([\w-]+)", re.IGNORECASE)


async def read_json_body(request: Request, max_bytes: int) -> Any:
    """The request's JSON value, or a ServiceError (415, 413, 400) naming what is wrong."""
    _check_content_type(request.headers.get("content-type", ""))
    raw = await _read_capped(request, max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(None, f"The body is not valid UTF-8 (byte {exc.start}).", "invalid_encoding") from None

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(text, parse_constant=no_constants)
    except ValueError as exc:
        raise invalid(None, f"The body is not valid JSON: {exc}", "invalid_json") from None


def _check_content_type(content_type: str) -> None:
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "application/json":
        raise ServiceError(415, "unsupported_media_type", f"Content-Type must be application/json, got {content_type or 'none'!r}.")
    charset = _CHARSET.search(params)
    if charset and charset.group(1).lower() not in ("utf-8", "utf8"):
        raise ServiceError(415, "unsupported_media_type", f"The body must be UTF-8, got charset {charset.group(1)!r}.")


async def _read_capped(request: Request, max_bytes: int) -> bytes:
    # The declared length refuses early; the count while streaming catches chunked bodies and liars.
    too_large = ServiceError(413, "request_too_large", f"The request body is larger than {max_bytes} bytes.")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise too_large
    return bytes(raw)
