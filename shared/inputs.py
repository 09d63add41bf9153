"""The inputs of edits in the archive: every input image and mask stored once, content-addressed.

Layout in the images container, beside the generations (shared/archive.py)::

    inputs/{sha256}.{png|jpg|webp}   the bytes as the caller sent them; content type from the bytes

The name is the hash of the bytes, so the same reference image sent a thousand times is
one blob. Each upload carries ``If-None-Match: *``: the first writes it, every later one
gets 409 (already there, the same bytes by construction), and nothing is overwritten.

An edit may also name archived images instead of uploading them. Such names are checked
against the archive's own naming rules before anything is read: an input
(``inputs/<sha256>.<ext>``) or an image this service archived (``.../<n>.png|jpg``);
never a record, never a name outside those patterns.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContentSettings

from shared.archive import INPUT_PATH, Archive, is_archive_path
from shared.errors import ServiceError, invalid, storage_call
from shared.models.image_bytes import ImageFacts

_CACHE_CONTROL = "private, max-age=31536000, immutable"  # a name never changes its bytes


def input_name(digest: str, facts: ImageFacts) -> str:
    """The archive name of an input: the SHA-256 of its bytes (hex) and the extension of its (sniffed) format."""
    return f"inputs/{digest}.{facts.extension}"


def is_edit_source(name: str) -> bool:
    """True for a name an edit may read: an archived input, or an image (not a record) this service archived."""
    return bool(INPUT_PATH.fullmatch(name)) or (is_archive_path(name) and name.endswith((".png", ".jpg")))


class InputStore:
    """Stores and reads the inputs of edits in the archive's container."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    async def put(self, data: bytes, facts: ImageFacts) -> str:
        """Store ``data`` under its content address unless it is there already; its name."""
        digest = hashlib.sha256(data).hexdigest()
        name = input_name(digest, facts)
        settings = ContentSettings(content_type=facts.content_type, cache_control=_CACHE_CONTROL)
        async with storage_call("storing an edit's input image"):
            try:
                # overwrite=False is If-None-Match: *: one blob per content, never rewritten.
                await self.archive.container.upload_blob(name, data, overwrite=False, content_settings=settings, metadata={"sha256": digest})
            except ResourceExistsError:
                pass  # the same bytes, stored by an earlier request
        return name

    async def put_all(self, inputs: Sequence[tuple[bytes, ImageFacts]]) -> list[str]:
        """Store every input (at once); their names in order."""
        await self.archive.ensure_container()
        return list(await asyncio.gather(*(self.put(data, facts) for data, facts in inputs)))

    async def read(self, name: str, param: str, limit: int) -> bytes:
        """The bytes of the archived image ``name``, at most ``limit`` bytes; 400 naming ``param`` for a name
        that is not an archived image, 413 for one over the limit."""
        if not is_edit_source(name):
            raise invalid(
                param,
                f"{name[:80]!r} is not the name of an archived image: give an input (inputs/<sha256>.png|jpg|webp) or an "
                "image this service archived (e.g. 2026-11-25/<id>/0.png, jobs/<id>/0.png).",
            )
        async with storage_call("reading an archived image"):
            try:
                download = await self.archive.container.download_blob(name)
            except ResourceNotFoundError:
                raise invalid(param, f"No archived image is named {name!r}.") from None
            if download.size > limit:
                raise ServiceError(413, "request_too_large", f"The archived image {name!r} is larger than {limit} bytes.", param=param)
            return await download.readall()
