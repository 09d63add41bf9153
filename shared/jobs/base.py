"""What both sides of the jobs share: the store, the clock, sending, and ending a job.

:class:`JobsBase` holds the job store and the clock and knows how a job ends (succeeded or
failed, then its results-queue post) and how a delivery hands a job back to the host
(:meth:`JobsBase._retry_later`). Acceptance (:mod:`shared.jobs.intake`) and the queue handler
(:mod:`shared.jobs.handler`) build on it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from shared.callers import Caller, caller_from_record, key_caller, queue_caller
from shared.errors import ServiceError, invalid
from shared.jobs.messages import send_message
from shared.jobs.record import ABANDONED_CODE, Clock, JobRecord, JobResult, JobStatus, utc_now
from shared.jobs.store import JobStore, StoredJob
from shared.jobs.view import notification
from shared.models import ImageRequest
from shared.service import ImageService

log = logging.getLogger(__name__)



class JobRetry(Exception):
    """Raised so the host redelivers the message later: only ever when nothing may have been billed,
    or the generation is archived already (a redelivery then finishes it without calling upstream)."""


@dataclass
class Outcome:
    """What the handler did with one message (for logs, the runner and tests)."""

    action: Literal["succeeded", "failed", "deferred", "busy", "duplicate", "invalid"]
    job_id: str | None = None
    detail: str = ""


def abandoned(how: str) -> ServiceError:
    """502 ``JobAbandoned``: a delivery claimed the job (so its request may have reached the model service) and
    stopped without a result; ``how`` says how that was found. Final: never sent again."""
    return ServiceError(
        502,
        ABANDONED_CODE,
        f"The job was abandoned: the delivery running it stopped without a result, and {how}; "
        "not repeated, since the model service may already have made (and billed) the image.",
        may_have_worked=True,
    )


def new_job_id() -> str:
    """An id for a job submitted without an Idempotency-Key."""
    return uuid.uuid4().hex


class JobsBase:
    """The store, the clock and the settings of the jobs, and how a job ends.

    ``store``, ``clock`` and ``sleep`` are there for tests: a store that fails at a chosen
    write, a clock they can move instead of waiting for a lease to run out or a moment to come.
    """

    def __init__(
        self, service: ImageService, max_dequeue_count: int = 5, *, store: JobStore | None = None, clock: Clock = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:  # fmt: skip
        self.service = service
        self.settings = service.settings
        self.max_dequeue_count = max_dequeue_count  # host.json's maxDequeueCount: the last delivery records the failure
        self.store = store or JobStore(service)
        self.clock = clock
        self.sleep = sleep  # how a delivery waits for its job's moment (tests move ``clock`` instead)

    async def _send(self, queue: str, content: str, delay: float = 0) -> None:
        await send_message(self.service.queues, queue, content, delay)

    async def _succeed(self, stored: StoredJob, archive_record: dict[str, Any], detail: str = "") -> Outcome:
        result = JobResult.from_archive_record(archive_record, self.clock())
        await self._finish(stored, JobStatus.SUCCEEDED, result=result)
        return Outcome("succeeded", stored.record.id, detail)

    async def _fail(self, stored: StoredJob, error: ServiceError) -> Outcome:
        await self._finish(stored, JobStatus.FAILED, error=error.body()["error"])
        return Outcome("failed", stored.record.id, error.message)

    async def _finish(self, stored: StoredJob, status: JobStatus, *, result: JobResult | None = None, error: dict[str, Any] | None = None) -> None:
        """Mark the job terminal, then post its notification if one is owed."""
        await self._write_terminal(stored, status, result=result, error=error)
        await self._post_if_owed(stored)

    async def _write_terminal(
        self, stored: StoredJob, status: JobStatus, *, result: JobResult | None = None, error: dict[str, Any] | None = None
    ) -> bool:
        """Write the terminal state (ETag-guarded, re-read on conflict); False if the job had ended already or vanished."""
        # Without a post to make there is nothing to remember: the terminal write says so, and no third write follows.
        owes_post = self._posts(stored.record)
        for _ in range(5):
            if stored.record.status.terminal and not stored.record.disproved_by(status):
                return False
            stored.record.finish(self.clock(), status, result=result, error=error, notified=not owes_post)
            if await self.store.replace(stored):
                await self.store.summarize(stored.record)  # what its index entry says from now on
                return True
            if not await self.store.reload(stored):
                return False
        return False

    async def _post_if_owed(self, stored: StoredJob) -> None:
        if stored.record.status.terminal and not stored.record.notified:
            await self._notify(stored)

    def _posts(self, record: JobRecord) -> bool:
        """Whether the results queue hears how this job ended. Its readers are services the operator lets read it
        (docs/callers.md): the entra way, that is the queue's own jobs only, since another caller's result carries
        links that open its images (that caller reads it at its Operation-Location); the key way has one owner."""
        if not self.settings.results_queue:
            return False
        return self.settings.caller_auth == "key" or self._caller_of(record).id == queue_caller(self.settings.queue_name).id

    async def _notify(self, stored: StoredJob) -> None:
        """Post {id, status, result|error} on the results queue (if it hears of this job), then remember it was posted."""
        if not self._posts(stored.record):
            return
        await self._send(self.settings.results_queue, await notification(stored.record, self.service.archive))
        stored.record.mark_notified(self.clock())
        await self.store.replace(stored)

    async def _retry_later(self, job_id: str | None, error: ServiceError, dequeue_count: int, stored: StoredJob | None = None) -> NoReturn:
        """Have the host redeliver (raises JobRetry); on the last allowed dequeue, record the failure first.

        Only for failures before anything may have been billed (or after the archive holds the
        generation): a redelivery must never make upstream do the work a second time.
        """
        if job_id is not None:
            try:
                await self._record_retry(job_id, error, dequeue_count, stored)
            except Exception as exc:  # the message must go back whatever recording did: log it and go on
                log.warning("job %s: could not record the failure: %s", job_id, exc if isinstance(exc, ServiceError) else type(exc).__name__)
        log.warning("job %s: %s (dequeue %d of %d)", job_id, error.message, dequeue_count, self.max_dequeue_count)
        raise JobRetry(f"job {job_id}: {error.code}: {error.message}")

    async def _record_retry(self, job_id: str, error: ServiceError, dequeue_count: int, stored: StoredJob | None) -> None:
        stored = stored or await self.store.get(job_id)
        if stored is None or stored.record.status.terminal:
            return
        if dequeue_count >= self.max_dequeue_count:
            await self._finish(stored, JobStatus.FAILED, error=error.body()["error"] | {"dequeue_count": dequeue_count})
            return
        stored.record.release(self.clock(), "retrying", f"{error.code}: {error.message}")
        await self.store.replace(stored)

    def _new_record(self, job_id: str, deployment: str, request: dict[str, Any], source: str, *, enqueued: bool = True) -> JobRecord:
        """A new job; one that arrived as a queue message is the queue's caller's (the queue is its own trust domain)."""
        record = JobRecord.new(job_id, deployment, request, source, self.clock(), enqueued=enqueued)
        if source == "queue":
            record.caller = queue_caller(self.settings.queue_name).record()
        return record

    def _caller_of(self, record: JobRecord) -> Caller:
        """Whose job it is: the caller its record names; for a record written before callers were known,
        the queue's (a queue message) or the key holder's (an HTTP submission), which operators see."""
        found = caller_from_record(record.caller)
        if found is not None:
            return found
        return queue_caller(self.settings.queue_name) if record.source == "queue" else key_caller()


def refuse_stream(request: ImageRequest) -> None:
    """A queued request cannot stream (nobody listens to a job's events): 400 naming ``stream``."""
    if request.stream:
        raise invalid(
            "stream",
            "A queued request cannot stream: its result is polled (Operation-Location), not listened to. Leave stream "
            "(and partial_images) out, or send the request to the generations or edits route without Prefer: respond-async.",
        )
