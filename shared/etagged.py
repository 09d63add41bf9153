"""Small state blobs that every instance of the app reads and updates: written only if unchanged since read.

A scaled-out app shares what one instance learns with the others through storage it already
has: the pool's throttle board (shared/pool/throttle.py) and the callers' budget ledger
(shared/callers/ledger.py) each keep one small blob per key. Every write carries the ETag the
writer read (or If-None-Match: * for a blob that did not exist), so two instances never both
act on the same state: the loser re-reads and decides again. Reads are cached for a short
while; a writer that lost re-reads fresh.

Names carry no ``.json`` suffix: older gallery code listed the jobs container's ``*.json`` as jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import ContainerClient

from shared.errors import storage_call

_JSON = ContentSettings(content_type="application/json")


@dataclass(frozen=True)
class Snapshot:
    """A state blob as read: its bytes (None: it does not exist yet), its ETag, and when it was read (the clock's time)."""

    data: bytes | None
    etag: str | None
    read_at: float


class SharedBlobs:
    """State blobs ``{prefix}/{key}`` in one container, read through a cache of ``cache_seconds``."""

    def __init__(self, container: ContainerClient, prefix: str, *, clock: Callable[[], float], cache_seconds: float, what: str) -> None:
        self.container = container
        self.prefix = prefix
        self.clock = clock
        self.cache_seconds = cache_seconds
        self.what = what  # in storage errors: "a backend's throttle state"
        self._cache: dict[str, Snapshot] = {}
        self._container_ready = False

    async def cached(self, key: str) -> Snapshot:
        """The blob as last read or written here, when that was recent enough; else read now."""
        found = self._cache.get(key)
        if found is not None and self.clock() - found.read_at < self.cache_seconds:
            return found
        return await self.read(key)

    async def read(self, key: str) -> Snapshot:
        """The blob as storage has it now."""
        async with storage_call(f"reading {self.what}"):
            try:
                stream = await self.container.download_blob(f"{self.prefix}/{key}")
                snapshot = Snapshot(await stream.readall(), stream.properties.etag, self.clock())
            except ResourceNotFoundError:
                snapshot = Snapshot(None, None, self.clock())
        self._cache[key] = snapshot
        return snapshot

    async def write(self, key: str, data: bytes, etag: str | None) -> bool:
        """Write if nobody else wrote since ``etag`` (None: if the blob still does not exist); False on a conflict."""
        conditions: dict[str, Any] = (
            {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {"match_condition": MatchConditions.IfMissing}
        )
        async with storage_call(f"recording {self.what}"):
            try:
                result = await self._upload(key, data, conditions)
            except (ResourceModifiedError, ResourceExistsError):
                return False
        self._cache[key] = Snapshot(data, result.get("etag"), self.clock())
        return True

    async def _upload(self, key: str, data: bytes, conditions: dict[str, Any]) -> dict[str, Any]:
        blob = self.container.get_blob_client(f"{self.prefix}/{key}")
        for first in (True, False):
            try:
                result: dict[str, Any] = await blob.upload_blob(data, overwrite=True, content_settings=_JSON, **conditions)
                return result
            except ResourceNotFoundError:
                if self._container_ready or not first:
                    raise
            try:  # the jobs container is made on first use; so may this be the first use
                await self.container.create_container()
            except ResourceExistsError:
                pass
            self._container_ready = True
        raise AssertionError("unreachable")
