"""Background generation through the storage queue.

    record    the typed job record (JobStatus, JobRecord) and its JSON
    store     job records in Blob Storage, ETag-guarded (JobStore)
    messages  job queue messages: decode (strict), the app's claim checks (job_reference), send
    base      what both sides share: the store, the clock, ending a job, handing it back to the host
    intake    submission (record first, then the message) and status, with repairs on read
    handler   Jobs: the queue handler's steps and the one classification of failures
    view      the operation status and the results-queue post, with fresh links
"""

from __future__ import annotations

from shared.jobs.base import refuse_stream
from shared.jobs.handler import JOB_PREFIX, JobRetry, Jobs, Outcome, handle_queue_message, new_job_id
from shared.jobs.messages import JobMessage, QueueMessageLike, decode_message
from shared.jobs.record import JobRecord, JobResult, JobStatus
from shared.jobs.store import JobStore, StoredJob

# The status names as the API spells them (the enum's values).
NOT_RUNNING, RUNNING, SUCCEEDED, FAILED = JobStatus.NOT_RUNNING, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED
TERMINAL = (SUCCEEDED, FAILED)


__all__ = [
    "FAILED",
    "JOB_PREFIX",
    "NOT_RUNNING",
    "RUNNING",
    "SUCCEEDED",
    "TERMINAL",
    "JobMessage",
    "JobRecord",
    "JobResult",
    "JobRetry",
    "JobStatus",
    "JobStore",
    "Jobs",
    "Outcome",
    "QueueMessageLike",
    "StoredJob",
    "decode_message",
    "handle_queue_message",
    "new_job_id",
    "refuse_stream",
]
