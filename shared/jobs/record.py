"""The job record: one JSON blob per job (``{jobs container}/{id}.json``), typed.

The JSON is the format job blobs have always had, so records written by earlier
versions stay readable (fields they carry that nobody reads any more, such as
``result.images[].link``, are ignored). Every change of state is a named method
that takes the time as an argument: the handler owns the clock, not the record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

MAX_EVENTS = 50
ABANDONED_CODE = "JobAbandoned"  # the error code of a job whose delivery stopped without a result (shared/jobs/base.py)

Clock = Callable[[], dt.datetime]
"""What "now" is: a callable returning an aware UTC datetime (tests pass one they can move)."""


def utc_now() -> dt.datetime:
    """The real clock."""
    return dt.datetime.now(dt.UTC)


class JobStatus(StrEnum):
    """A job's status; the values are the API's (the names Azure used for its asynchronous image API)."""

    NOT_RUNNING = "notRunning"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """True once the job has ended; a terminal record is never changed again (but for ``notified``, and an abandonment a success disproves)."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


class Lease(BaseModel):
    """The delivery that is generating the job, and until when others leave it alone."""

    message: str
    until: dt.datetime


class JobEvent(BaseModel):
    """One line of the job's history (the last MAX_EVENTS are kept)."""

    at: dt.datetime
    event: str
    detail: str = ""


class ResultImage(BaseModel):
    """One archived image of a finished job; links are made from ``name`` whenever the job is read."""

    name: str
    revised_prompt: str | None = None


class JobResult(BaseModel):
    """What a succeeded job produced (its archive record holds the rest)."""

    created: int
    images: list[ResultImage]
    usage: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None  # {"usd", "basis"}: shared/pricing.py
    # What was translated for the model, as the record says; left out when nothing was, so older job blobs read back unchanged.
    translations: list[str] = Field(default_factory=list, exclude_if=lambda value: not value)

    @classmethod
    def from_archive_record(cls, record: dict[str, Any], now: dt.datetime) -> JobResult:
        """The result as the archive's record of the generation describes it."""
        return cls(
            created=record.get("upstream_created") or int(now.timestamp()),
            images=[ResultImage(name=i["name"], revised_prompt=i.get("revised_prompt")) for i in record["images"]],
            usage=record.get("usage"),
            cost=record.get("cost"),
            translations=record.get("translations") or [],
        )


class JobRecord(BaseModel):
    """A background generation: its request, where it stands, and how it got there."""

    id: str
    status: JobStatus = JobStatus.NOT_RUNNING
    created: int  # Unix seconds, as the operations API reports it
    created_at: dt.datetime
    updated: dt.datetime
    source: str  # "http" (submitted) or "queue" (a message dropped on the queue)
    deployment: str
    request: dict[str, Any]  # the generation body as received (without id, deployment)
    # Whose job it is (shared/callers Caller.record()): the HTTP caller that submitted it, or the queue's
    # caller for a message dropped on the queue. Only it and operators read the job. Records written
    # before callers were known have none (or the headers' {"name", "id", "idp"}): operators only.
    caller: dict[str, Any] | None = Field(default=None, exclude_if=lambda value: value is None)
    attempts: int = 0  # deliveries that claimed the job; > 0 means upstream may have been called
    # False from the moment a submission records the job until its message is sent: a record left so
    # (the process died in between) is re-enqueued when it is read (see shared.jobs.intake).
    # Records written before this field existed always had their message.
    enqueued: bool = True
    lease: Lease | None = None
    # A throttled job's moment (the 429's Retry-After, when its continuation was sent): the delivery that
    # picks the continuation up waits for it in process (shared/jobs/handler.py). None: run when delivered.
    not_before: dt.datetime | None = Field(default=None, exclude_if=lambda value: value is None)
    error: dict[str, Any] | None = None  # the Azure error body's "error" member
    result: JobResult | None = None
    notified: bool = False  # the results-queue post is done, or there is none to make
    events: list[JobEvent] = Field(default_factory=list)

    @classmethod
    def new(
        cls, job_id: str, deployment: str, request: dict[str, Any], source: str, now: dt.datetime, *, enqueued: bool = True
    ) -> JobRecord:
        """A job just accepted (``enqueued``: its message exists already, as for a job that arrived as one)."""
        record = cls(
            id=job_id,
            created=int(now.timestamp()),
            created_at=now,
            updated=now,
            source=source,
            deployment=deployment,
            request=request,
            enqueued=enqueued,
        )
        record.log(now, "accepted", source)
        return record

    @classmethod
    def from_json(cls, data: bytes | str) -> JobRecord:
        """Read a job blob."""
        return cls.model_validate_json(data)

    def to_json(self) -> bytes:
        """The job blob's content."""
        return self.model_dump_json().encode()

    def log(self, now: dt.datetime, event: str, detail: str = "") -> None:
        """Append to the history (bounded) and mark the record updated."""
        self.events.append(JobEvent(at=now, event=event, detail=detail))
        del self.events[:-MAX_EVENTS]
        self.updated = now

    def held_elsewhere(self, message_id: str, now: dt.datetime) -> float | None:
        """Seconds left on another delivery's live lease; None when ``message_id`` may take the job."""
        lease = self.lease
        if self.status is not JobStatus.RUNNING or lease is None or lease.message == message_id or lease.until <= now:
            return None
        return (lease.until - now).total_seconds()

    def interrupted(self, message_id: str, now: dt.datetime) -> bool:
        """Claimed by a delivery that ended without recording how (the process died, or the host's timeout
        ended it): ``running``, and no other delivery holds a live lease. Its request may have reached upstream."""
        return self.status is JobStatus.RUNNING and self.held_elsewhere(message_id, now) is None

    def disproved_by(self, status: JobStatus) -> bool:
        """True when ``status`` may replace this terminal state: a success proves wrong an abandonment, which another
        delivery of the same message decided while this one was still at work (the host redelivered it meanwhile)."""
        return status is JobStatus.SUCCEEDED and self.status is JobStatus.FAILED and (self.error or {}).get("code") == ABANDONED_CODE

    def asks_for(self, deployment: str, request: dict[str, Any]) -> bool:
        """True when a message asking for ``deployment`` and ``request`` is this job's own."""
        return self.deployment == deployment and self.request == request

    def message_lost(self, now: dt.datetime, after: float) -> bool:
        """Recorded ``after`` seconds ago or more and its message never sent (the submission died in between)."""
        return self.status is JobStatus.NOT_RUNNING and not self.enqueued and (now - self.updated).total_seconds() >= after

    def abandoned(self, now: dt.datetime, after: float) -> bool:
        """Running, but its lease ended ``after`` seconds ago or more and no delivery took it over."""
        lease = self.lease
        return self.status is JobStatus.RUNNING and (lease is None or (now - lease.until).total_seconds() >= after)

    def mark_enqueued(self, now: dt.datetime) -> None:
        """Its message is on the queue."""
        self.enqueued = True
        self.updated = now

    def claim(self, message_id: str, until: dt.datetime, now: dt.datetime, dequeue_count: int) -> None:
        """This delivery runs the job until ``until`` (the upstream timeout and a margin)."""
        self.status = JobStatus.RUNNING
        self.enqueued = True  # a delivery holds its message
        self.attempts += 1
        self.lease = Lease(message=message_id, until=until)
        self.not_before = None
        self.log(now, "running", f"attempt {self.attempts}, dequeue {dequeue_count}")

    def release(self, now: dt.datetime, event: str, detail: str) -> None:
        """Back to notRunning (throttled, or retrying after a transient failure): a later delivery runs it."""
        self.status = JobStatus.NOT_RUNNING
        self.lease = None
        self.error = None
        self.not_before = None
        self.log(now, event, detail)

    def finish(
        self, now: dt.datetime, status: JobStatus, *, result: JobResult | None, error: dict[str, Any] | None, notified: bool
    ) -> None:
        """The job ended (``status`` is terminal; once terminal, a record changes only as :meth:`disproved_by` allows);
        ``notified`` is False while a results-queue post is owed."""
        self.status = status
        self.lease = None
        self.not_before = None
        self.result = result
        self.error = error
        self.notified = notified
        self.log(now, status.value, (error or {}).get("message", ""))

    def mark_notified(self, now: dt.datetime) -> None:
        """The results-queue post was made."""
        self.notified = True
        self.updated = now
