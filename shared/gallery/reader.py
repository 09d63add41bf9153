"""Reading the gallery's tiles through the index (shared/index): whose, which day, a page at a time.

What a page costs, so it stays fast with any number of records: one listing of the viewer's
entries of the day (or every caller's, for an operator) for each chunk the page examines, newest
first and continued from storage's own marker, and a read of each record the page shows. The days
that have tiles are one delimiter listing. Nothing lists every job or every image.

Each record is read and checked against its entry (shared/index/records.py): a tile is shown only
when its record names the viewer as its caller, or the viewer is an operator. A synchronous
generation's record is written while its images upload: one written in the last minute is shown only
once every image it names exists.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient

from shared.callers import Caller, owner_of
from shared.errors import storage_call
from shared.gallery.tiles import Tile, tile_from_job, tile_from_record
from shared.index import IndexReader, Listed, RecordIndex
from shared.index.records import IndexedRecords

JOB_PREFIX = "jobs"  # where the archive files the images of background jobs (shared/jobs)
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # fullmatch: $ would let a trailing newline through
READ_CONCURRENCY = 8  # record reads in flight for one page
SETTLED_SECONDS = 60.0

T = TypeVar("T")


async def bounded(calls: Iterable[Awaitable[T]], limit: int = READ_CONCURRENCY) -> list[T]:
    """Await ``calls`` with at most ``limit`` in flight, results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


def day_of(moment: Any) -> str:
    """The UTC day a moment falls in, as the archive's prefixes spell it."""
    return str(moment.strftime("%Y-%m-%d"))


class GalleryReader:
    """The index and the records it points at, for one request."""

    def __init__(self, index: IndexReader, records: IndexedRecords, *, clock: Callable[[], float] = time.time) -> None:
        self.index = index
        self.records = records
        self.clock = clock

    @property
    def images(self) -> Any:
        """The images container (its origin goes into the page's image policy)."""
        return self.records.images

    @classmethod
    def for_storage(cls, blobs: BlobServiceClient, images_container: str, jobs_container: str, index: RecordIndex) -> GalleryReader:
        """A reader over the app's Blob service and its two containers."""
        jobs = blobs.get_container_client(jobs_container)
        return cls(IndexReader(jobs), IndexedRecords(blobs.get_container_client(images_container), jobs, index))

    async def tile(self, listed: Listed, viewer: Caller, family_of: Callable[[str], str | None]) -> Tile | None:
        """The tile of an entry when the viewer may see it and its record is there (with all its images); else None."""
        if not viewer.may_read(listed.caller_id) or (listed.summary is not None and listed.summary.outcome == "none"):
            return None
        if not listed.is_job and listed.summary is not None and listed.summary.outcome != "succeeded":
            return None  # a synchronous call that failed: its failure record has no tile
        record = await self.records.read(listed)
        if record is None:
            return None
        if listed.is_job:
            return tile_from_job(record, family_of)
        tile = tile_from_record(listed.prefix, record)
        if not self._settled(listed, tile) and not await self._all_there(tile.images):
            return None  # its images are still being written (or a crash left them out)
        return tile

    def _settled(self, listed: Listed, tile: Tile) -> bool:
        """True when a synchronous generation's images are surely all there: its entry's summary says so, or its record
        was written more than :data:`SETTLED_SECONDS` ago (an archive that failed removes its record well within that)."""
        return listed.summary is not None or (tile.time is not None and (self.clock() - tile.time.timestamp()) > SETTLED_SECONDS)

    async def _all_there(self, names: list[str]) -> bool:
        async def exists(name: str) -> bool:
            async with storage_call("looking up an image"):
                try:
                    await self.records.images.get_blob_client(name).get_blob_properties()
                except ResourceNotFoundError:
                    return False
            return True

        return all(await bounded(exists(name) for name in names))

    async def item(self, prefix: str, item_id: str, viewer: Caller) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(archive record, job record) of one generation or job, each only when the viewer may see it.

        Both are read whoever asks, so another caller's item answers as a missing one does."""
        record = await self.records.archive_record(prefix, item_id)
        job = await self.records.job(item_id) if prefix == JOB_PREFIX else None
        return _visible(record, viewer), _visible(job, viewer)


def _visible(record: dict[str, Any] | None, viewer: Caller) -> dict[str, Any] | None:
    return record if record is not None and viewer.may_read(owner_of(record)) else None
