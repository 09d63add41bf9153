"""Background generation through the storage queue.

    record    the typed job record (JobStatus, JobRecord) and its JSON
    store     job records in Blob Storage, ETag-guarded (JobStore)
    messages  job queue messages: decode (strict), build (JobMessage.encode), send
    base      what both sides share: the store, the clock, ending a job, handing it back to the host
    intake    submission (record first, then the message) and status, with repairs on read
    handler   Jobs: the queue handler's steps and the one classification of failures
    view      the operation status and the results-queue post, with fresh links
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.jobs.handler import JOB_PREFIX, JobRetry, Jobs, Outcome, handle_queue_message, new_job_id
from shared.jobs.messages import JobMessage, QueueMessageLike, decode_message
from shared.jobs.record import JobRecord, JobResult, JobStatus
from shared.jobs.store import JobStore, StoredJob

# The status names as the API spells them (the enum's values).
NOT_RUNNING, RUNNING, SUCCEEDED, FAILED = JobStatus.NOT_RUNNING, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED
TERMINAL = (SUCCEEDED, FAILED)


def host_queue_settings() -> dict[str, Any]:
    """host.json's queue settings. Transitional: the settings module reads host.json now (the
    jobs take ``max_dequeue_count`` as an argument); kept only so today's callers import."""
    host = json.loads((Path(__file__).resolve().parents[2] / "host.json").read_text())
    queues: dict[str, Any] = host.get("extensions", {}).get("queues", {})
    return queues


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
    "host_queue_settings",
    "new_job_id",
]
