"""Background generation: accepting jobs, and the queue handler that runs them.

Delivery is at least once, so the handler is idempotent on the job id:

1. a job already finished is consumed silently (after posting its result
   notification if a crash had stopped that);
2. a job whose images are already archived (a crash after the archive step)
   is finished from the archive, without calling upstream again;
3. otherwise the handler takes a lease on the record, calls upstream once,
   archives, and marks the record succeeded.

Throttling (429) neither fails the job nor uses up a dequeue: a continuation
message is enqueued to become visible after Retry-After and the handler returns.
Content filtering and invalid requests fail the job at once. Transient failures
raise, so the host redelivers; on the last allowed dequeue the record says
failed before the host moves the message to the poison queue.

Known limit: a crash after upstream answered but before the first image blob is
written loses bytes that existed only in memory; the redelivery generates again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import uuid
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from shared import telemetry
from shared.archive import is_safe_id
from shared.errors import ServiceError
from shared.jobs.messages import JobMessage, QueueMessageLike, declared_job_id, decode_message, parse_job_message, send_message
from shared.jobs.record import Clock, JobRecord, JobResult, JobStatus, utc_now
from shared.jobs.store import JobStore, StoredJob
from shared.jobs.view import notification, status_view
from shared.models import ImageRequest, parse_request
from shared.service import ImageService

log = logging.getLogger(__name__)

JOB_PREFIX = "jobs"  # archive prefix: images of job X are jobs/X/0.png ...
LEASE_MARGIN_SECONDS = 120


class JobRetry(Exception):
    """Raised so the host redelivers the message later (a transient failure)."""


@dataclass
class Outcome:
    """What the handler did with one message (for logs, the runner and tests)."""

    action: Literal["succeeded", "failed", "deferred", "busy", "duplicate", "invalid"]
    job_id: str | None = None
    detail: str = ""


def new_job_id() -> str:
    """An id for a job submitted without an Idempotency-Key."""
    return uuid.uuid4().hex


class Jobs:
    """Accepts jobs (HTTP or queue) and runs them from queue messages.

    ``store`` and ``clock`` are there for tests: a store that fails at a chosen
    write, a clock they can move instead of waiting for a lease to run out.
    """

    def __init__(self, service: ImageService, max_dequeue_count: int = 5, *, store: JobStore | None = None, clock: Clock = utc_now) -> None:
        self.service = service
        self.settings = service.settings
        self.max_dequeue_count = max_dequeue_count  # host.json's maxDequeueCount: the last delivery records the failure
        self.store = store or JobStore(service)
        self.clock = clock

    # --- acceptance (HTTP) ---

    async def submit(self, job_id: str, deployment: str, body: dict[str, Any]) -> tuple[JobRecord, bool]:
        """Record and enqueue a checked request; an existing id returns the existing job (False)."""
        existing = await self.store.get(job_id)
        if existing is not None:
            return existing.record, False
        await self.store.ensure_container()
        # Enqueue before recording: a crash in between leaves a message that
        # creates its own record, never a record without a message.
        await self._send(self.settings.queue_name, JobMessage(job_id, deployment, body).encode())
        record = JobRecord.new(job_id, deployment, body, "http", self.clock())
        if await self.store.create(record) is None:
            current = await self.store.get(job_id)
            return (current.record if current else record), False
        return record, True

    async def status(self, job_id: str) -> dict[str, Any] | None:
        """The operation view: {id, status, created, result?, error?} with fresh links; None if unknown."""
        stored = await self.store.get(job_id)
        return None if stored is None else await status_view(stored.record, self.service.archive)

    # --- the queue handler ---

    async def handle(self, raw: bytes | str, message_id: str, dequeue_count: int) -> Outcome:
        """Process one delivery. Returns normally to consume the message; raises JobRetry to have it redelivered."""
        try:
            decoded = decode_message(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            log.error("queue message %s dropped: %s", message_id, exc)
            return Outcome("invalid", None, str(exc))
        try:
            message = parse_job_message(decoded, message_id, self.settings.default_deployment)
        except ServiceError as error:
            return await self._refuse(decoded, message_id, error)
        telemetry.annotate({"images.job_id": message.job_id})  # on the delivery's span, even if it fails
        try:
            return await self._run(message, message_id, dequeue_count)
        except ServiceError as error:
            # Storage or credentials failing around the job: let the host redeliver.
            await self._retry_later(message.job_id, error, dequeue_count)

    async def _refuse(self, decoded: Any, message_id: str, error: ServiceError) -> Outcome:
        """An unusable message is consumed; if it names a job, that job fails with the reason."""
        job_id = declared_job_id(decoded)
        if job_id and is_safe_id(job_id):
            await self.store.ensure_container()
            deployment = str(decoded.get("deployment") or "")
            stored = await self.store.get_or_create(JobRecord.new(job_id, deployment, {}, "queue", self.clock()))
            if not stored.record.status.terminal:
                await self._finish(stored, JobStatus.FAILED, error=error.body()["error"])
        log.error("queue message %s (job %s) refused: %s", message_id, job_id, error.message)
        return Outcome("invalid", job_id, error.message)

    async def _run(self, message: JobMessage, message_id: str, dequeue_count: int) -> Outcome:
        """A usable delivery: finished already, finishable from the archive, invalid, busy, or run now."""
        await self.store.ensure_container()
        stored = await self.store.get_or_create(JobRecord.new(message.job_id, message.deployment, message.body, "queue", self.clock()))
        if stored.record.status.terminal:
            if not stored.record.notified:
                await self._notify(stored)
            return Outcome("duplicate", message.job_id, f"already {stored.record.status.value}")

        # Only a job that was claimed before can have reached upstream: look for its images.
        claimed_before = stored.record.attempts > 0
        if claimed_before:
            archived = await self.service.archive.read_record(JOB_PREFIX, message.job_id)
            if archived is not None:
                return await self._succeed(stored, archived, "finished from the archive")
        try:
            request = self._parse(message)
        except ServiceError as error:
            return await self._fail(stored, error)
        if claimed_before:
            recovered = await self.service.recover(request, generation_id=message.job_id, prefix=JOB_PREFIX)
            if recovered is not None:
                return await self._succeed(stored, recovered, "record rebuilt from archived images")

        busy = await self._claim(stored, message, message_id, dequeue_count)
        if busy is not None:
            return busy
        return await self._generate(stored, message, request, dequeue_count)

    def _parse(self, message: JobMessage) -> ImageRequest:
        family = self.settings.family_of(message.deployment)
        if family is None:
            raise ServiceError(404, "DeploymentNotFound", f"The deployment {message.deployment!r} is not served here.", param="deployment")
        return parse_request(message.body, message.deployment, family)

    async def _claim(self, stored: StoredJob, message: JobMessage, message_id: str, dequeue_count: int) -> Outcome | None:
        """Take the lease; an Outcome instead when another live delivery holds it (come back later)."""
        now = self.clock()
        held = stored.record.held_elsewhere(message_id, now)
        if held is not None:
            wait = held + 1
            await self._send(self.settings.queue_name, message.encode(), delay=wait)
            return Outcome("busy", message.job_id, f"leased by another delivery for {wait:.0f} s")
        until = now + dt.timedelta(seconds=self.settings.upstream_timeout_seconds + LEASE_MARGIN_SECONDS)
        stored.record.claim(message_id, until, now, dequeue_count)
        if not await self.store.replace(stored):
            return Outcome("busy", message.job_id, "another delivery updated the job first")
        return None

    async def _generate(self, stored: StoredJob, message: JobMessage, request: ImageRequest, dequeue_count: int) -> Outcome:
        """The one upstream call of the job, and its archive."""
        try:
            generation = await self.service.generate(
                request,
                generation_id=message.job_id,
                prefix=JOB_PREFIX,
                timeout=self.settings.upstream_timeout_seconds,
                budget=0,  # waiting belongs to the queue, not to a worker slot
                kind="job",
            )
        except ServiceError as error:
            if error.status == 429:
                return await self._defer(stored, message, error)
            if error.transient:
                await self._retry_later(message.job_id, error, dequeue_count, stored)
            return await self._fail(stored, error)
        return await self._succeed(stored, generation.record)

    async def _succeed(self, stored: StoredJob, archive_record: dict[str, Any], detail: str = "") -> Outcome:
        result = JobResult.from_archive_record(archive_record, self.clock())
        await self._finish(stored, JobStatus.SUCCEEDED, result=result)
        return Outcome("succeeded", stored.record.id, detail)

    async def _fail(self, stored: StoredJob, error: ServiceError) -> Outcome:
        await self._finish(stored, JobStatus.FAILED, error=error.body()["error"])
        return Outcome("failed", stored.record.id, error.message)

    async def _finish(self, stored: StoredJob, status: JobStatus, *, result: JobResult | None = None, error: dict[str, Any] | None = None) -> None:
        """Mark the job terminal (ETag-guarded, re-read on conflict), then post its notification if one is owed."""
        # Without a results queue there is nothing to post: the terminal write says so, and no third write follows.
        owes_post = bool(self.settings.results_queue)
        for _ in range(5):
            if stored.record.status.terminal:
                break
            stored.record.finish(self.clock(), status, result=result, error=error, notified=not owes_post)
            if await self.store.replace(stored):
                break
            current = await self.store.get(stored.record.id)
            if current is None:
                return
            stored.record, stored.etag = current.record, current.etag
        if not stored.record.notified:
            await self._notify(stored)

    async def _notify(self, stored: StoredJob) -> None:
        """Post {id, status, result|error} on the results queue, then remember it was posted."""
        if not self.settings.results_queue:
            return
        await self._send(self.settings.results_queue, json.dumps(await notification(stored.record, self.service.archive)))
        stored.record.mark_notified(self.clock())
        await self.store.replace(stored)

    async def _defer(self, stored: StoredJob, message: JobMessage, error: ServiceError) -> Outcome:
        """429: a continuation message after Retry-After (with jitter); this delivery is consumed."""
        # Never before Retry-After; a little jitter (the queue rounds up to whole seconds anyway)
        # so deferred jobs do not all wake in the same instant, without wasting the window.
        retry_after = error.retry_after or 10.0
        delay = retry_after + random.uniform(0, min(1.0, 0.1 * retry_after))
        stored.record.release(self.clock(), "throttled", f"retry after {delay:.1f} s")
        # Continuation first: if recording fails, the job still runs.
        await self._send(self.settings.queue_name, message.encode(), delay=delay)
        await self.store.replace(stored)
        return Outcome("deferred", message.job_id, f"throttled; back in {delay:.1f} s")

    async def _retry_later(self, job_id: str, error: ServiceError, dequeue_count: int, stored: StoredJob | None = None) -> NoReturn:
        """Have the host redeliver (raises JobRetry); on the last allowed dequeue, record the failure first."""
        try:
            await self._record_retry(job_id, error, dequeue_count, stored)
        except ServiceError as store_error:
            log.warning("job %s: could not record the failure: %s", job_id, store_error.message)
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

    async def _send(self, queue: str, content: str, delay: float = 0) -> None:
        await send_message(self.service.queues, queue, content, delay)


@telemetry.job_delivery
async def handle_queue_message(jobs: Jobs, msg: QueueMessageLike) -> Outcome:
    """The queue trigger's body: used by function_app in Azure and by local/queue_runner.py."""
    outcome = await jobs.handle(msg.get_body(), msg.id or "", msg.dequeue_count or 1)
    log.info("queue message %s: %s %s %s", msg.id, outcome.action, outcome.job_id or "", outcome.detail)
    return outcome
