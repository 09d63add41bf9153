"""Background generation: the queue handler.

Delivery is at least once, so the handler is idempotent on the job id, and the job record
(not the message) says what the job generates:

A message is a claim check naming a recorded job (what the app sends: ``{"job": id}``), or a
caller's request (``{"id", "deployment", **body}``, shared/jobs/messages.py). Then:

1. a caller's message whose request or deployment differs from its job's record is a stray: it
   is consumed with the reason logged, never generated, and the job is left as it is (whoever
   sent it cannot take over a job by reusing its id; the job's own message still runs it);
2. a job already finished is consumed silently (after posting its result notification if
   a crash had stopped that);
3. a job whose images are already archived (a crash after the archive step) is finished
   from the archive, without calling upstream again;
4. a job an earlier delivery claimed and left ``running`` (the process died, or the host's
   ``functionTimeout`` ended it, after its request may have reached upstream) is ``failed``
   (``JobAbandoned``), never sent again;
5. otherwise the handler takes a lease on the record, calls upstream once for the record's
   request within the job's one deadline (:func:`job_deadline`), archives, and marks the record
   succeeded.

One classification of failures, the same as the synchronous route's (the verdict of
:mod:`shared.upstream.work`, carried as ``ServiceError.may_have_worked`` and ``transient``):

- upstream did no work (a 429, a 503, no connection, storage or credentials failing first,
  any exception before a request reached upstream whole): safe to repeat. A 429 enqueues a
  continuation for the job's moment (Retry-After: it shows up a little early and the delivery
  waits out the rest, :meth:`Jobs._await_moment`) and consumes this delivery (no dequeue used up); the rest
  raise :class:`JobRetry` so the host redelivers, and the last allowed dequeue records
  ``failed`` before the host moves the message to the poison queue;
- upstream may have worked (a 408 or another such answer, a 500, a timeout, a connection cut
  after sending, any unusable 200, any exception after a request left, or anything failing once
  upstream answered with images, such as the archive): never repeated. The job is ``failed``
  with the reason and the message consumed. If even that write fails, the message is still
  consumed; reading the job later settles it as abandoned.

Nothing escapes :meth:`Jobs.handle` but :class:`JobRetry` (and the runtime's own BaseExceptions):
an exception nobody expected is treated as a failure before sending when no request had left
in this delivery, which is the only case it can reach the top.

Known limit: a crash after upstream answered but before the first image blob is written loses
bytes that existed only in memory; the redelivery generates again.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shared import telemetry
from shared.archive import is_safe_id
from shared.deadline import Deadline
from shared.echo import shown
from shared.edits import edit_from_json, generate_or_edit
from shared.errors import ServiceError, not_repeated
from shared.host import host_function_timeout
from shared.jobs.base import JobRetry, Outcome, abandoned, new_job_id, refuse_stream
from shared.jobs.intake import JobIntake
from shared.jobs.messages import JobReference, QueueMessageLike, declared_job_id, decode_message, job_reference, parse_job_message
from shared.jobs.record import JobRecord, JobStatus
from shared.jobs.store import JOB_PREFIX, StoredJob
from shared.models import ImageRequest, parse_request
from shared.pool.router import PoolThrottled
from shared.settings import Settings
from shared.upstream import track_upstream
from shared.upstream.errors import NOT_REPEATED, unexpected_error

log = logging.getLogger(__name__)

LEASE_MARGIN_SECONDS = 120
# How early a throttled job's continuation shows up before its moment: the host polls an empty queue
# at most this often (host.json maxPollingInterval), so the job is picked up by then, and waits out
# the rest in process (a pool's router, shared/pool/router.py JOB_HOLD_SECONDS; otherwise the
# handler, up to MOMENT_HOLD_SECONDS).
POLL_LEAD_SECONDS = 1.0
# The most a delivery waits in process for its job's moment: a continuation shows up at most
# POLL_LEAD_SECONDS + 1 s early (whole seconds). One that comes earlier (another instance's clock runs
# ahead, or an older message of the job) is sent on again to show up then, without calling upstream.
MOMENT_HOLD_SECONDS = POLL_LEAD_SECONDS + 1.5
# What a delivery keeps of host.json's functionTimeout for the archive and the record after upstream answered.
ARCHIVE_SECONDS = 60.0
_CLAIM_TRIES = 3
_ECHO = 64  # characters of a caller's value quoted in an error

__all__ = ["JOB_PREFIX", "LEASE_MARGIN_SECONDS", "JobRetry", "Jobs", "Outcome", "handle_queue_message", "new_job_id"]


def job_deadline(settings: Settings, clock: Callable[[], float] = time.monotonic) -> Deadline:
    """A delivery's one deadline from its start: ``IMAGES_UPSTREAM_TIMEOUT_SECONDS``, but never past host.json's
    ``functionTimeout`` less :data:`ARCHIVE_SECONDS` (the host ends a function at its timeout, whatever it was doing)."""
    seconds = settings.upstream_timeout_seconds
    limit = host_function_timeout()
    if limit is not None:
        seconds = max(1.0, min(seconds, limit - ARCHIVE_SECONDS))
    return Deadline(seconds, clock=clock)


@dataclass
class Delivery:
    """One delivery of a message: what the host said about it, its deadline, and the job once it is known."""

    message_id: str
    dequeue_count: int
    deadline: Deadline
    job_id: str | None = None


class Jobs(JobIntake):
    """Accepts jobs (HTTP or queue) and runs them from queue messages."""

    async def handle(self, raw: bytes | str, message_id: str, dequeue_count: int) -> Outcome:
        """Process one delivery. Returns normally to consume the message; raises JobRetry to have it redelivered."""
        delivery = Delivery(message_id, dequeue_count, job_deadline(self.settings))
        try:
            return await self._deliver(raw, delivery)
        except JobRetry:
            raise
        except ServiceError as error:  # storage or credentials around the job
            await self._retry_later(delivery.job_id, error, dequeue_count)
        except Exception as exc:
            log.exception("job %s: unexpected failure (no request left in this delivery)", delivery.job_id)
            await self._retry_later(delivery.job_id, unexpected_error(exc, may_have_worked=False), dequeue_count)

    async def _deliver(self, raw: bytes | str, delivery: Delivery) -> Outcome:
        try:
            decoded = decode_message(raw)
        except ValueError as exc:
            log.error("queue message %s dropped: %s", delivery.message_id, exc)
            return Outcome("invalid", None, str(exc))
        try:
            message = parse_job_message(decoded, delivery.message_id, self.settings.default_deployment)
        except ServiceError as error:
            return await self._refuse(decoded, delivery.message_id, error)
        delivery.job_id = message.job_id
        telemetry.annotate({"images.job_id": message.job_id})  # on the delivery's span, even if it fails
        await self.store.ensure_container()
        if isinstance(message, JobReference):
            stored = await self.store.get(message.job_id)
            if stored is None:
                detail = f"message {delivery.message_id} names job {message.job_id}, which has no record; nothing to run"
                log.error("%s", detail)
                return Outcome("invalid", message.job_id, detail)
        else:
            stored = await self.store.get_or_create(self._new_record(message.job_id, message.deployment, message.body, "queue"))
            if not stored.record.asks_for(message.deployment, message.body):
                detail = f"message {delivery.message_id} differs from the job's record (request or deployment); not generated, the job is left as it is"
                log.error("job %s: %s", stored.record.id, detail)
                return Outcome("invalid", stored.record.id, detail)
        return await self._run(stored, delivery)

    async def _refuse(self, decoded: Any, message_id: str, error: ServiceError) -> Outcome:
        """An unusable message is consumed; if it names a job nobody recorded yet, that job is recorded failed with the reason."""
        job_id = declared_job_id(decoded)
        if job_id and is_safe_id(job_id):
            await self.store.ensure_container()
            deployment = decoded.get("deployment")
            deployment = deployment if isinstance(deployment, str) and len(deployment) <= _ECHO else ""
            request = {k: v for k, v in decoded.items() if k not in ("id", "deployment")}
            created = await self.store.create(self._new_record(job_id, deployment, request, "queue"))
            if created is not None:
                await self._finish(created, JobStatus.FAILED, error=error.body()["error"])
            else:
                log.warning("queue message %s names job %s, which exists: the job is left as it is", message_id, job_id)
        log.error("queue message %s (job %s) refused: %s", message_id, job_id, error.message)
        return Outcome("invalid", job_id, error.message)

    async def _run(self, stored: StoredJob, delivery: Delivery) -> Outcome:
        """The job's own delivery: finished already, finishable from the archive, abandoned, invalid, busy, or run now."""
        record = stored.record
        if record.status.terminal:
            if not record.notified:
                await self._notify(stored)
            return Outcome("duplicate", record.id, f"already {record.status.value}")

        # Only a job that was claimed before can have reached upstream: look for its images.
        claimed_before = record.attempts > 0
        if claimed_before:
            archived = await self.service.archive.read_record(JOB_PREFIX, record.id)
            if archived is not None:
                return await self._succeed(stored, archived, "finished from the archive")
        try:
            request = self._parse(record)
        except ServiceError as error:
            return await self._fail(stored, error)
        if claimed_before:
            recovered = await self.service.recover(request, generation_id=record.id, prefix=JOB_PREFIX, caller=self._caller_of(record))
            if recovered is not None:
                return await self._succeed(stored, recovered, "record rebuilt from archived images")
        if record.interrupted(delivery.message_id, self.clock()):
            # An earlier delivery claimed it and ended without a word: its request may have been worked.
            return await self._fail_final(stored, abandoned("this delivery found nothing of it archived"))
        early = await self._await_moment(stored, delivery)
        if early is not None:
            return early
        busy = await self._claim(stored, delivery)
        if busy is not None:
            return busy
        return await self._generate(stored, request, delivery)

    async def _await_moment(self, stored: StoredJob, delivery: Delivery) -> Outcome | None:
        """A throttled job runs at its moment (``not_before``): a continuation that shows up a little early waits the
        rest here, before the job is claimed; one that shows up much earlier is sent on to show up then (None: run now)."""
        moment = stored.record.not_before
        wait = (moment - self.clock()).total_seconds() if moment is not None else 0.0
        if wait <= 0:
            return None
        if wait <= min(MOMENT_HOLD_SECONDS, delivery.deadline.remaining()):
            await self.sleep(wait)
            return None
        await self._send(self.settings.queue_name, job_reference(stored.record), delay=_shown_before(wait))
        return Outcome("deferred", stored.record.id, f"shown {wait:.1f} s before its moment; sent on")

    def _parse(self, record: JobRecord) -> ImageRequest:
        """The record's request, checked: what the job generates."""
        family = self.settings.family_of(record.deployment)
        if family is None:
            raise ServiceError(404, "DeploymentNotFound", f"The deployment {shown(record.deployment)} is not served here.", param="deployment")
        if "operation" in record.request:  # an edit: inputs by archived name (shared/edits.py)
            request: ImageRequest = edit_from_json(record.request, record.deployment, family, queued=True)
        else:
            request = parse_request(record.request, record.deployment, family)
        refuse_stream(request)
        return request

    async def _claim(self, stored: StoredJob, delivery: Delivery) -> Outcome | None:
        """Take the lease; an Outcome instead when the job ended or another live delivery holds it (come back later)."""
        for _ in range(_CLAIM_TRIES):
            now = self.clock()
            if stored.record.status.terminal:
                return Outcome("duplicate", stored.record.id, f"already {stored.record.status.value}")
            held = stored.record.held_elsewhere(delivery.message_id, now)
            if held is not None:
                wait = held + 1
                await self._send(self.settings.queue_name, job_reference(stored.record), delay=wait)
                return Outcome("busy", stored.record.id, f"leased by another delivery for {wait:.0f} s")
            until = now + dt.timedelta(seconds=delivery.deadline.total + LEASE_MARGIN_SECONDS)
            stored.record.claim(delivery.message_id, until, now, delivery.dequeue_count)
            if await self.store.replace(stored):
                return None
            # Someone wrote first: another delivery, or a submission or reader updating the record. Look again.
            if not await self.store.reload(stored):
                raise ServiceError(503, "StorageUnavailable", f"The job record {stored.record.id!r} vanished.", transient=True)
        return Outcome("busy", stored.record.id, "another delivery updated the job first")

    async def _generate(self, stored: StoredJob, request: ImageRequest, delivery: Delivery) -> Outcome:
        """The one upstream call of the job, and its archive. Once upstream answered with images, no failure is repeated."""
        with track_upstream() as calls:
            try:
                generation = await generate_or_edit(
                    self.service,
                    request,
                    generation_id=stored.record.id,
                    prefix=JOB_PREFIX,
                    deadline=delivery.deadline,
                    budget=0,  # waiting belongs to the queue, not to a worker slot (a pool holds a job 2.5 s at most)
                    kind="job",
                    caller=self._caller_of(stored.record),
                )
            except ServiceError as error:
                failure = error
            except Exception as exc:
                log.exception("job %s: unexpected failure while generating", stored.record.id)
                failure = unexpected_error(exc, may_have_worked=calls.may_have_worked)
            else:
                return await self._succeed(stored, generation.record)
        if calls.answered:
            failure = not_repeated(failure, f"It happened after the model service answered. {NOT_REPEATED}")
        step = next_step(failure)
        if step == "fail":
            return await self._fail_final(stored, failure)
        if step == "defer":
            return await self._defer(stored, failure)
        await self._retry_later(stored.record.id, failure, delivery.dequeue_count, stored)

    async def _fail_final(self, stored: StoredJob, failure: ServiceError) -> Outcome:
        """Record a failure that must not be repeated; the message is consumed whatever happens to that write."""
        try:
            written = await self._write_terminal(stored, JobStatus.FAILED, error=failure.body()["error"])
        except Exception as exc:
            log.error(
                "job %s: %s; recording the failure failed too (%s): message consumed, the job is settled when read",
                stored.record.id,
                failure.message,
                exc.message if isinstance(exc, ServiceError) else type(exc).__name__,
            )
            return Outcome("failed", stored.record.id, failure.message)
        if written:
            await self._post_if_owed(stored)  # a failure here is safe to retry: the record says failed
        return Outcome("failed", stored.record.id, failure.message)

    async def _defer(self, stored: StoredJob, error: ServiceError) -> Outcome:
        """429: a continuation message for the job's moment; this delivery is consumed.

        The message shows up to :data:`POLL_LEAD_SECONDS` + 1 s before the moment (the queue counts
        whole seconds) and the job waits out the rest in process: a pool's router for the moment its
        backend is free (:class:`PoolThrottled`), else the handler for the moment the record keeps
        (``not_before``: Retry-After and a little jitter, never less, so deferred jobs do not all
        wake in the same instant).
        """
        delay, moment, detail = continuation_delay(error)
        now = self.clock()
        stored.record.release(now, "throttled", detail)
        if moment is not None:
            stored.record.not_before = now + dt.timedelta(seconds=moment)
        # Continuation first: if recording fails, the job still runs (when its message shows up, a little early).
        await self._send(self.settings.queue_name, job_reference(stored.record), delay=delay)
        await self.store.replace(stored)
        return Outcome("deferred", stored.record.id, f"throttled; {detail}")


def next_step(failure: ServiceError) -> Literal["fail", "defer", "retry"]:
    """What a job does after its generation failed, by the one rule's verdict: ``fail`` (never sent again) once
    upstream may have worked or nothing will change; ``defer`` a 429 to its Retry-After; ``retry`` the rest
    (the host redelivers it)."""
    if failure.may_have_worked or not failure.transient:
        return "fail"
    return "defer" if failure.status == 429 else "retry"


def continuation_delay(error: ServiceError, rng: random.Random | None = None) -> tuple[float, float | None, str]:
    """How long a throttled job's continuation stays invisible (seconds), the job's moment (seconds from now) when
    the handler is to wait for it, and why.

    The continuation shows up in whole seconds (what the queue counts) that end :data:`POLL_LEAD_SECONDS`
    to :data:`POLL_LEAD_SECONDS` + 1 s before the moment, never after it. A pool's moment is exact and its
    router waits out the rest (:data:`~shared.pool.router.JOB_HOLD_SECONDS`: no moment for the handler).
    Otherwise the moment is Retry-After plus up to 10% (at most 1 s), and the handler waits for it."""
    retry_after = error.retry_after or 10.0
    if isinstance(error, PoolThrottled):
        return _shown_before(retry_after), None, f"a backend of the pool is free in {retry_after:.1f} s"
    moment = retry_after + (rng or random).uniform(0, min(1.0, 0.1 * retry_after))
    return _shown_before(moment), moment, f"retry after {moment:.1f} s"


def _shown_before(moment: float) -> float:
    """Whole seconds of invisibility that end :data:`POLL_LEAD_SECONDS` to :data:`POLL_LEAD_SECONDS` + 1 s before ``moment``."""
    return float(max(0, math.floor(moment - POLL_LEAD_SECONDS)))


def _delivering(msg: QueueMessageLike) -> Mapping[str, object]:
    return {"messaging.message.id": msg.id, "images.dequeue_count": msg.dequeue_count}


def _delivered(outcome: Outcome) -> Mapping[str, object]:
    return {"images.job_id": outcome.job_id, "images.job.outcome": outcome.action}


@telemetry.traced("images.job", telemetry.Steps(before=lambda args: _delivering(args["msg"]), after=_delivered))
async def handle_queue_message(jobs: Jobs, msg: QueueMessageLike) -> Outcome:
    """The queue trigger's body: used by function_app in Azure and by local/queue_runner.py."""
    outcome = await jobs.handle(msg.get_body(), msg.id or "", msg.dequeue_count or 1)
    log.info("queue message %s: %s %s %s", msg.id, outcome.action, outcome.job_id or "", outcome.detail)
    return outcome
