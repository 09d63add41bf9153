"""Reading a request body by hand: size cap, content type, strict UTF-8, strict JSON.

FastAPI's model binding is not used for bodies, so every refusal has the Azure
error shape, names what is wrong, and happens before anything goes upstream.
The JSON rules (nesting depth, no key twice, no NaN) are :mod:`shared.strictjson`'s.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request

from shared import strictjson
from shared.echo import shown
from shared.errors import ServiceError
from shared.streams import read_capped

_CHARSET = re.compile(r"charset=\"?([\w-]+)", re.IGNORECASE)


async def read_json_body(request: Request, max_bytes: int) -> Any:
    """The request's JSON value, or a ServiceError (415, 413, 400) naming what is wrong."""
    _check_content_type(request.headers.get("content-type", ""))
    return strictjson.decode(await _read_capped(request, max_bytes))


def _check_content_type(content_type: str) -> None:
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "application/json":
        raise ServiceError(415, "unsupported_media_type", f"Content-Type must be application/json, got {shown(content_type) if content_type else 'none'}.")
    charset = _CHARSET.search(params)
    if charset and charset.group(1).lower() not in ("utf-8", "utf8"):
        raise ServiceError(415, "unsupported_media_type", f"The body must be UTF-8, got charset {shown(charset.group(1))}.")


async def _read_capped(request: Request, max_bytes: int) -> bytes:
    too_large = ServiceError(413, "request_too_large", f"The request body is larger than {max_bytes} bytes.")
    return await read_capped(request.stream(), request.headers.get("content-length"), max_bytes, too_large)
