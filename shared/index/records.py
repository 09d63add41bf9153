"""The records an index entry points at: read, checked against their entry, and summarized (repairing the entry).

An entry is a pointer, never proof: the record it names is read and must agree with it (the same
caller, and for a job the same moment of acceptance, since a job id reused by another submission
writes an entry of its own that points at the first one's record). What disagrees, or was never
written, is skipped; an entry still without its record :data:`STRAY_AFTER_SECONDS` after it was
written (longer than any call takes to write its record) is marked ``none`` so nobody reads for it
again. An entry without a summary gets it from its record: a synchronous generation's entry always
(its call writes none, to stay off the answer's path), a job's after a crash between its end and
its summary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from shared.callers import owner_of
from shared.errors import ServiceError, storage_call
from shared.index.entries import UNKNOWN_CALLER, Listed, RecordIndex, Summary, ms_of_iso
from shared.index.listing import summary_of_job, summary_of_record

RECORD_NAME = "record.json"
STRAY_AFTER_SECONDS = 3600.0


async def read_json(container: ContainerClient, name: str, action: str) -> dict[str, Any] | None:
    """A JSON object blob, or None when it is missing or not a JSON object."""
    async with storage_call(action):
        try:
            stream = await container.download_blob(name)
            data = await stream.readall()
        except ResourceNotFoundError:
            return None
    try:
        found = json.loads(data)
    except ValueError:
        return None  # not ours to judge here: a view shows what it can read
    return found if isinstance(found, dict) else None


class IndexedRecords:
    """Reads what entries point at: archive records in the images container, job records in the jobs container."""

    def __init__(self, images: ContainerClient, jobs: ContainerClient, index: RecordIndex, *, clock: Callable[[], float] = time.time) -> None:
        self.images = images
        self.jobs = jobs
        self.index = index
        self.clock = clock

    async def archive_record(self, prefix: str, item_id: str) -> dict[str, Any] | None:
        """``{prefix}/{id}/record.json`` in the images container, or None."""
        return await read_json(self.images, f"{prefix}/{item_id}/{RECORD_NAME}", "reading a record")

    async def job(self, job_id: str) -> dict[str, Any] | None:
        """The job record ``{id}.json``, or None."""
        return await read_json(self.jobs, f"{job_id}.json", "reading a job record")

    async def read(self, listed: Listed) -> dict[str, Any] | None:
        """The record ``listed`` points at, when it is there and agrees with the entry; else None."""
        record = await (self.job(listed.id) if listed.is_job else self.archive_record(listed.prefix, listed.id))
        if record is None or (owner_of(record) or UNKNOWN_CALLER) != listed.caller_id:
            return None
        if listed.is_job and ms_of_iso(record.get("created_at")) != listed.at_ms:
            return None  # another submission's entry for this id
        return record

    async def summary(self, listed: Listed) -> Summary | None:
        """The entry's summary, from the record when the entry has none yet (a synchronous generation's entry gets
        its summary from its first reader; a job's when it ends); None while the record is not final. It is written
        back once the entry is older than :data:`STRAY_AFTER_SECONDS` (no call is still writing its record then); an
        entry that never got its record is ``none`` from then on."""
        if listed.summary is not None:
            return listed.summary
        record = await self.read(listed)
        settled = self.clock() * 1000 - listed.at_ms > STRAY_AFTER_SECONDS * 1000
        if record is None:
            found: Summary | None = Summary("none") if settled else None
        else:
            found = summary_of_job(record) if listed.is_job else summary_of_record(record)
        if found is not None and (settled or listed.is_job):  # a job's summary is final once its record says it ended
            await self._repair(listed, found)
        return found

    async def _repair(self, listed: Listed, summary: Summary) -> None:
        try:
            await self.index.summarize(listed.entry, summary)
        except ServiceError:
            pass  # a read never fails for a repair: the next one tries again
