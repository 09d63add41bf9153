"""Accepting jobs, and reading them: the record first, then the message, and repairs on read.

The job record is the one truth of what a job generates. A submission creates the record
(If-None-Match: *) with ``enqueued: false`` before anything else; only the submission that
created it sends the message, then marks the record ``enqueued``. Concurrent submissions with
one id therefore have one winner, and the losers leave nothing behind (they answer with the
existing record; the API turns a different body into 409).

A crash between the two writes leaves a record whose message was never sent. Reading the job
(:meth:`JobIntake.status`, or submitting the same id again) repairs it: a record still
``enqueued: false`` :data:`REENQUEUE_AFTER_SECONDS` after it was written gets its message (the
repair is claimed with an ETag write first, so two readers do not both send). Until a reader
comes, such a job stays ``notRunning``; the caller that never got its 202 can re-submit the id.

Reading also ends jobs nobody will finish: a job ``running`` whose lease ended
:data:`ABANDONED_AFTER_SECONDS` ago without another delivery taking it over is ``failed``
("abandoned"), never run again, because upstream may already have been called.
"""

from __future__ import annotations

import logging
from typing import Any

from shared.callers import Caller, owner_of
from shared.errors import ServiceError
from shared.jobs.base import JobsBase, abandoned
from shared.jobs.messages import job_reference
from shared.jobs.record import JobRecord, JobStatus
from shared.jobs.store import StoredJob
from shared.jobs.view import status_view

log = logging.getLogger(__name__)

# Longer than any submission takes between its two writes: a record this old without its message lost it.
REENQUEUE_AFTER_SECONDS = 60.0
# Longer than the host takes to hand a dead worker's message to another (its lease on a message is 10 minutes).
ABANDONED_AFTER_SECONDS = 15 * 60.0
ABANDONED = abandoned("none took it over after its lease ended")


class JobIntake(JobsBase):
    """Submission and status: the HTTP side of the jobs."""

    async def submit(self, job_id: str, deployment: str, body: dict[str, Any], *, caller: Caller) -> tuple[JobRecord, bool]:
        """Record a checked request, then enqueue it: (the record, True). An id recorded before gives
        (that record, False) and sends nothing (the caller compares the request). ``caller``: who
        submitted it (shared/callers), kept on the job record, which only it (and operators) may
        read, and written into the archive record as a synchronous call's is."""
        await self.store.ensure_container()
        record = self._new_record(job_id, deployment, body, "http", enqueued=False)
        record.caller = caller.record()
        created = await self.store.create(record)
        if created is None:
            existing = await self.store.get(job_id)
            if existing is None:  # created and deleted again in between: nothing to build on
                raise ServiceError(503, "StorageUnavailable", f"The job record {job_id!r} changed while it was read.", transient=True)
            return (await self._repair(existing)).record, False
        await self._send(self.settings.queue_name, job_reference(created.record))
        await self._mark_enqueued(created)
        return created.record, True

    async def status(self, job_id: str, caller: Caller) -> dict[str, Any] | None:
        """The operation view: {id, status, created, result?, error?} with fresh links; None if unknown,
        or another caller's (one read either way; nothing of another caller's job is repaired or shown)."""
        stored = await self.store.get(job_id)
        if stored is None or not caller.may_read(owner_of({"caller": stored.record.caller})):
            return None
        return await status_view((await self._repair(stored)).record, self.service.archive)

    async def _mark_enqueued(self, stored: StoredJob) -> None:
        stored.record.mark_enqueued(self.clock())
        # Lost to a delivery that claimed the job first: it marked the record enqueued itself.
        await self.store.replace(stored)

    async def _repair(self, stored: StoredJob) -> StoredJob:
        """Send the message a submission never sent, or end a job nobody will finish (best effort: a read never fails for it)."""
        now = self.clock()
        try:
            if stored.record.message_lost(now, REENQUEUE_AFTER_SECONDS):
                await self._reenqueue(stored)
            elif stored.record.abandoned(now, ABANDONED_AFTER_SECONDS):
                await self._settle_abandoned(stored)
        except ServiceError as error:
            log.warning("job %s: repair on read failed: %s", stored.record.id, error.message)
        return stored

    async def _reenqueue(self, stored: StoredJob) -> None:
        stored.record.log(self.clock(), "re-enqueued", "its message was never sent")
        if not await self.store.replace(stored):
            return  # another reader repairs it, or a delivery has it
        log.warning("job %s: its message was never sent; enqueued it now", stored.record.id)
        await self._send(self.settings.queue_name, job_reference(stored.record))
        await self._mark_enqueued(stored)

    async def _settle_abandoned(self, stored: StoredJob) -> None:
        # One conditional write: if a delivery took the job over meanwhile, it is its job again.
        stored.record.finish(self.clock(), JobStatus.FAILED, result=None, error=ABANDONED.body()["error"], notified=not self._posts(stored.record))
        if await self.store.replace(stored):
            log.warning("job %s: abandoned (no live lease, no delivery); failed", stored.record.id)
            if not stored.record.notified:
                await self._notify(stored)
            return
        await self.store.reload(stored)  # a delivery took it over meanwhile: show what it wrote
