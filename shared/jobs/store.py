"""Job records in Blob Storage, read and written with ETag conditions.

Two deliveries of the same message can never both write a record: a new record is
created with If-None-Match: *, and every later write carries If-Match with the
ETag the writer read. A writer that loses the race gets None/False and re-reads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import ContainerClient

from shared import telemetry
from shared.archive import ensure_container
from shared.callers import caller_from_record
from shared.errors import ServiceError, storage_error
from shared.index import Entry, summary_of_job
from shared.index.entries import UNKNOWN_CALLER, ms_of
from shared.jobs.record import JobRecord
from shared.service import ImageService

JOB_PREFIX = "jobs"  # archive prefix: images of job X are jobs/X/0.png ...; the index names jobs by it too

_JSON = ContentSettings(content_type="application/json")
log = logging.getLogger(__name__)


def job_entry(record: JobRecord) -> Entry:
    """The index entry of a job: its caller, the day and moment it was accepted."""
    owner = caller_from_record(record.caller)
    return Entry(owner.id if owner else UNKNOWN_CALLER, JOB_PREFIX, record.id, ms_of(record.created_at), record.deployment)


@dataclass
class StoredJob:
    """A job record and the ETag of its blob: the condition of the next write."""

    record: JobRecord
    etag: str


def _lost_race(exc: AzureError) -> bool:
    """The condition failed: someone else created or changed the record first."""
    return isinstance(exc, ResourceExistsError | ResourceModifiedError) or getattr(exc, "status_code", None) in (409, 412)


def _recording(record: JobRecord) -> Mapping[str, object]:
    """A job record about to be written: its state and the event that changed it (the event's name, not its detail)."""
    return {
        "images.job_id": record.id,
        "images.job.status": record.status.value,
        "images.job.event": record.events[-1].event if record.events else None,
        "images.job.attempts": record.attempts,
    }


def _recorded(written: object) -> Mapping[str, object]:
    return {"images.job.written": bool(written)}  # False or None: another delivery wrote first


class JobStore:
    """The jobs container of the service's storage account."""

    def __init__(self, service: ImageService) -> None:
        self.service = service
        self._ready = False

    def _container(self) -> ContainerClient:
        return self.service.blobs.get_container_client(self.service.settings.jobs_container)

    async def ensure_container(self) -> None:
        """Create the jobs container once per process (infra creates it in Azure)."""
        if not self._ready:
            await ensure_container(self._container(), "jobs")
            self._ready = True

    async def get(self, job_id: str) -> StoredJob | None:
        """The record of ``job_id``, or None if there is none."""
        try:
            stream = await self._container().download_blob(f"{job_id}.json")
            data = await stream.readall()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise storage_error(exc, "reading a job record") from None
        return StoredJob(JobRecord.from_json(data), str(stream.properties.etag))

    @telemetry.traced("job.state", telemetry.Steps(before=lambda args: _recording(args["record"]), after=_recorded))
    async def create(self, record: JobRecord) -> StoredJob | None:
        """Write a new record, its index entry first (shared/index: a record never exists without one);
        None if a record with this id exists already (the entry just written is then removed)."""
        entry = job_entry(record)
        await self.service.books.index.add(entry, summary_of_job(record.model_dump(mode="json")) if record.status.terminal else None)
        try:
            etag = await self._upload(record, overwrite=False)  # If-None-Match: *
        except AzureError as exc:
            if not _lost_race(exc):
                raise storage_error(exc, "creating a job record") from None
            existing = await self.get(record.id)
            if existing is None or job_entry(existing.record).name != entry.name:
                await self.service.books.index.remove(entry)  # the job is another submission's: this entry points at nothing
            return None
        return StoredJob(record, etag)

    async def summarize(self, record: JobRecord) -> None:
        """Write what an ended job adds to its index entry (best effort: the next reader repairs it)."""
        summary = summary_of_job(record.model_dump(mode="json"))
        if summary is None:
            return
        try:
            await self.service.books.index.summarize(job_entry(record), summary)
        except ServiceError as exc:
            log.warning("job %s: could not summarize its index entry: %s", record.id, exc.message)

    @telemetry.traced("job.state", telemetry.Steps(before=lambda args: _recording(args["stored"].record), after=_recorded))
    async def replace(self, stored: StoredJob) -> bool:
        """Write ``stored.record`` if the blob is unchanged since ``stored.etag`` (then the ETag moves on);
        False if someone else wrote it first."""
        try:
            stored.etag = await self._upload(stored.record, overwrite=True, etag=stored.etag, match_condition=MatchConditions.IfNotModified)
        except AzureError as exc:
            if _lost_race(exc):
                return False
            raise storage_error(exc, "updating a job record") from None
        return True

    async def reload(self, stored: StoredJob) -> bool:
        """Re-read ``stored`` in place after losing a write to someone else; False if the record is gone."""
        current = await self.get(stored.record.id)
        if current is None:
            return False
        stored.record, stored.etag = current.record, current.etag
        return True

    async def get_or_create(self, record: JobRecord) -> StoredJob:
        """The existing record of ``record.id``, or ``record`` written as the new one."""
        found = await self.get(record.id) or await self.create(record) or await self.get(record.id)
        if found is None:
            # Created by someone else and deleted again in between: nothing to build on, try later.
            raise ServiceError(503, "StorageUnavailable", f"The job record {record.id!r} changed while it was read.", transient=True)
        return found

    async def _upload(self, record: JobRecord, *, overwrite: bool, **conditions: Any) -> str:
        blob = self._container().get_blob_client(f"{record.id}.json")
        result = await blob.upload_blob(record.to_json(), overwrite=overwrite, content_settings=_JSON, **conditions)
        return str(result["etag"])
