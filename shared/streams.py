"""Reading a body from outside with a cap: the request a caller sends, the image upstream links to.

A declared ``Content-Length`` over the cap is refused before reading; the running count
catches chunked bodies and lengths that lie. Nothing beyond the cap is kept in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterable


def declares_more_than(content_length: str | None, limit: int) -> bool:
    """True when a Content-Length header says more than ``limit`` bytes (ASCII digits only: '²' is a digit to str.isdigit)."""
    if not content_length or not (content_length.isascii() and content_length.isdigit()):
        return False
    return int(content_length) > limit


async def read_capped(chunks: AsyncIterable[bytes], content_length: str | None, limit: int, too_large: Exception) -> bytes:
    """The whole body, or ``too_large`` raised as soon as it (declared or counted) exceeds ``limit`` bytes."""
    if declares_more_than(content_length, limit):
        raise too_large
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)
