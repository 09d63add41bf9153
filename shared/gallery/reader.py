"""Reading the archive for the gallery: a day's generations, the jobs of a day, the days that have any.

What a page costs, so it stays fast with many thousands of archived images:

- a day's generations come from one listing of the day's prefix (``YYYY-MM-DD/``: names and
  times only, 5000 a call); only the records a page shows are read, a few at a time;
- the days that have images come from a delimiter listing of the container's root, one entry a day;
- job records (``{jobs container}/{id}.json``) carry no day in their name, so the jobs of a day
  come from a listing of the jobs container's names and times (no reads either; this is the
  one listing that grows with all time: 5000 jobs a call); a page reads only the job records it shows.

Newest first: names hold random ids, so listing order says nothing about time. Candidates
are sorted by when their record blob was last written (a generation's record is its last
write; a job's record changes with its state), and a page continues after the (time, name)
of the last candidate it examined: what happens later never shifts a later page. Storage
times are whole seconds; within a second the records' own times order a page (browse.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from shared.errors import storage_call
from shared.gallery.tiles import Tile, tile_from_job, tile_from_record

RECORD_NAME = "record.json"
JOB_PREFIX = "jobs"  # where the archive files the images of background jobs (shared/jobs.py)
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # fullmatch: $ would let a trailing newline through
LISTING_PAGE = 5000  # the most one List Blobs call returns
READ_CONCURRENCY = 8  # record reads in flight for one page

Source = Literal["archive", "job"]
T = TypeVar("T")


@dataclass(frozen=True, order=True)
class Candidate:
    """A record that may become a tile: known from a listing, not read yet. Orders by (time, name)."""

    modified: dt.datetime  # Last-Modified of the record blob (whole seconds)
    name: str
    source: Source = field(compare=False)

    @property
    def key(self) -> tuple[dt.datetime, str]:
        """Where a page that ends here continues."""
        return self.modified, self.name


@dataclass
class DayListing:
    """What the listings of one day found: the candidates, and every archived name of the day."""

    candidates: list[Candidate]
    archived: set[str]
    job_days: set[str]


async def bounded(calls: Iterable[Awaitable[T]], limit: int = READ_CONCURRENCY) -> list[T]:
    """Await ``calls`` with at most ``limit`` in flight, results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


def _modified(blob: Any) -> dt.datetime:
    modified: dt.datetime = blob.last_modified
    return modified if modified.tzinfo else modified.replace(tzinfo=dt.UTC)


def day_of(moment: dt.datetime) -> str:
    """The UTC day a moment falls in, as the archive's prefixes spell it."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d")


class GalleryReader:
    """Lists and reads the images and jobs containers for one request."""

    def __init__(self, images: ContainerClient, jobs: ContainerClient) -> None:
        self.images = images
        self.jobs = jobs

    @classmethod
    def for_storage(cls, blobs: BlobServiceClient, images_container: str, jobs_container: str) -> GalleryReader:
        """A reader over the app's Blob service and its two containers."""
        return cls(blobs.get_container_client(images_container), blobs.get_container_client(jobs_container))

    async def days_with_images(self) -> set[str]:
        """Days that have archived generations: the root's prefixes, one listing entry per day."""
        days: set[str] = set()
        async with storage_call("listing the archive's days"):
            try:
                async for item in self.images.walk_blobs(delimiter="/"):
                    day = item.name.rstrip("/")
                    if DAY.fullmatch(day):
                        days.add(day)
            except ResourceNotFoundError:
                pass  # nothing archived yet
        return days

    async def list_day(self, day: str, *, with_archive: bool = True) -> DayListing:
        """The candidates of ``day``: its generations' records (one prefix) and the jobs last changed that day."""
        archived: set[str] = set()
        candidates: list[Candidate] = []
        if with_archive:
            async with storage_call("listing a day of the archive"):
                try:
                    async for blob in self.images.list_blobs(name_starts_with=f"{day}/", results_per_page=LISTING_PAGE):
                        archived.add(blob.name)
                        if blob.name.endswith(f"/{RECORD_NAME}"):
                            candidates.append(Candidate(_modified(blob), blob.name, "archive"))
                except ResourceNotFoundError:
                    pass
        job_days: set[str] = set()
        async with storage_call("listing the job records"):
            try:
                async for blob in self.jobs.list_blobs(results_per_page=LISTING_PAGE):
                    if not blob.name.endswith(".json"):
                        continue
                    modified = _modified(blob)
                    job_days.add(day_of(modified))
                    if day_of(modified) == day:
                        candidates.append(Candidate(modified, blob.name, "job"))
            except ResourceNotFoundError:
                pass
        return DayListing(candidates, archived, job_days)

    async def _read_json(self, container: ContainerClient, name: str, action: str) -> dict[str, Any] | None:
        async with storage_call(action):
            try:
                stream = await container.download_blob(name)
                data = await stream.readall()
            except ResourceNotFoundError:
                return None
        try:
            found = json.loads(data)
        except ValueError:
            return None  # not ours to judge here; the gallery shows what it can read
        return found if isinstance(found, dict) else None

    async def record(self, prefix: str, generation_id: str) -> dict[str, Any] | None:
        """The archive record of one generation (``{prefix}/{id}/record.json``), or None."""
        return await self._read_json(self.images, f"{prefix}/{generation_id}/{RECORD_NAME}", "reading a record")

    async def job(self, job_id: str) -> dict[str, Any] | None:
        """The job record ``{id}.json``, or None."""
        return await self._read_json(self.jobs, f"{job_id}.json", "reading a job record")

    async def tile(self, candidate: Candidate, archived: set[str], family_of: Callable[[str], str | None]) -> Tile | None:
        """Read one candidate's record; None when it is gone or its images are not all there yet."""
        if candidate.source == "job":
            job = await self.job(candidate.name.removesuffix(".json"))
            return tile_from_job(job, family_of) if job else None
        prefix, generation_id, _ = candidate.name.split("/", 2)
        record = await self.record(prefix, generation_id)
        if record is None:
            return None
        tile = tile_from_record(prefix, record)
        # A synchronous generation's record may land before its images (or outlive a failed write):
        # show it only once every image it names is in the same listing.
        return tile if all(name in archived for name in tile.images) else None
