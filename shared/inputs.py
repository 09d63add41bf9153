"""The inputs of edits in the archive: every input image and mask stored once per caller, content-addressed.

Layout in the images container, beside the generations (shared/archive.py)::

    inputs/{hmac}.{png|jpg|webp}   the bytes as the caller sent them; content type from the bytes;
                                   metadata: their sha256, the caller's id

The name is keyed with the app's secret over the caller and the hash of the bytes
(shared/callers/scope.py), so the same reference image a caller sends a thousand times is one
blob, and no caller can name (or ask after) another's. Each upload carries ``If-None-Match: *``:
the first writes it, every later one gets 409 (already there, the same bytes by construction),
and nothing is overwritten.

An edit may also name archived images instead of uploading them. Such names are checked
against the archive's own naming rules before anything is read: an input
(``inputs/<64 hex>.<ext>``) or an image this service archived (``.../<n>.png|jpg``);
never a record, never a name outside those patterns. A name the caller may not see (another
caller's) is answered as a name that does not exist.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContentSettings

from shared.archive import INPUT_PATH, OWNER_METADATA, Archive, is_archive_path
from shared.callers import Caller
from shared.callers.scope import input_name_for
from shared.errors import ServiceError, invalid, storage_call
from shared.models.image_bytes import ImageFacts

_CACHE_CONTROL = "private, max-age=31536000, immutable"  # a name never changes its bytes


def input_name(key: bytes, caller: Caller, data: bytes, facts: ImageFacts) -> tuple[str, str]:
    """(the archive name of ``caller``'s input ``data``, its SHA-256 hex): keyed with the app's secret
    ``key`` over the caller and the hash, with the extension of its (sniffed) format."""
    digest = hashlib.sha256(data).hexdigest()
    return input_name_for(key, caller, digest, facts.extension), digest


def is_edit_source(name: str) -> bool:
    """True for a name an edit may read: an archived input, or an image (not a record) this service archived."""
    return bool(INPUT_PATH.fullmatch(name)) or (is_archive_path(name) and name.endswith((".png", ".jpg")))


def check_source(name: str, param: str) -> None:
    """400 naming ``param`` unless an edit may read ``name`` (:func:`is_edit_source`)."""
    if not is_edit_source(name):
        raise invalid(
            param,
            f"{name[:80]!r} is not the name of an archived image: give an input (inputs/<64 hex>.png|jpg|webp, as an earlier edit named it) or an "
            "image this service archived (e.g. 2026-11-25/<id>/0.png, jobs/<id>/0.png).",
        )


class InputStore:
    """Stores and reads the inputs of edits in the archive's container."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    async def put(self, name: str, data: bytes, content_type: str, *, digest: str, owner: Caller) -> None:
        """Store ``data`` under its content address ``name`` (:func:`input_name`) unless it is there already."""
        settings = ContentSettings(content_type=content_type, cache_control=_CACHE_CONTROL)
        metadata = {"sha256": digest, OWNER_METADATA: owner.id}
        async with storage_call("storing an edit's input image"):
            try:
                # overwrite=False is If-None-Match: *: one blob per content, never rewritten.
                await self.archive.container.upload_blob(name, data, overwrite=False, content_settings=settings, metadata=metadata)
            except (ResourceExistsError, ResourceModifiedError):
                pass  # the same bytes, stored by an earlier request (409), or by one racing this one (412)

    async def put_all(self, inputs: Sequence[tuple[str, bytes, str, str]], owner: Caller) -> None:
        """Store every ``(name, bytes, content type, sha256)`` of ``owner`` at once."""
        await self.archive.ensure_container()
        await asyncio.gather(*(self.put(name, data, content_type, digest=digest, owner=owner) for name, data, content_type, digest in inputs))

    async def sizes(self, named: Sequence[tuple[str, str]], file_limit: int, total_limit: int, caller: Caller) -> list[int]:
        """The sizes of the archived images ``named`` (``(name, param)``) that ``caller`` may see: 400 naming the
        parameter for a name that is not one (another caller's included), 413 for one over ``file_limit`` or all over ``total_limit``."""
        for name, param in named:
            check_source(name, param)
        async with storage_call("looking up archived images"):
            sizes = await asyncio.gather(*(self._size(name, param, caller) for name, param in named))
        for (name, param), size in zip(named, sizes, strict=True):
            if size > file_limit:
                raise ServiceError(413, "request_too_large", f"The archived image {name!r} is larger than {file_limit} bytes.", param=param)
        if sum(sizes) > total_limit:
            raise ServiceError(413, "request_too_large", f"The archived images are larger than {total_limit} bytes together.", param="image")
        return list(sizes)

    async def read_all(self, named: Sequence[tuple[str, str]], file_limit: int, total_limit: int, caller: Caller) -> list[bytes]:
        """The bytes of the archived images ``named``, in order, after :meth:`sizes` has checked them."""
        await self.sizes(named, file_limit, total_limit, caller)
        async with storage_call("reading archived images"):
            return list(await asyncio.gather(*(self._download(name) for name, _ in named)))

    async def _size(self, name: str, param: str, caller: Caller) -> int:
        try:
            properties = await self.archive.container.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            properties = None
        if properties is None or not caller.may_read((properties.metadata or {}).get(OWNER_METADATA)):
            raise invalid(param, f"No archived image is named {name!r}.")
        return int(properties.size)

    async def _download(self, name: str) -> bytes:
        download = await self.archive.container.download_blob(name)
        return await download.readall()
