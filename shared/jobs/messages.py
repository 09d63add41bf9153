"""Queue messages of jobs: reading them, building them, sending them.

Two kinds of message arrive, as raw JSON or as base64-encoded JSON (what the SDKs' encode
policies write):

- what callers drop on the queue: the HTTP generation body plus an optional ``id`` (the job id,
  an idempotency key) and ``deployment``: ``{"id", "deployment", **body}`` (:class:`JobMessage`);
- what the app itself sends for a job it has recorded (a submission, a continuation after a 429,
  a delivery that found the job busy): ``{"job": "<id>"}``, a *claim check*
  (:class:`JobReference`). The job record holds the request, whatever its size: a 32,000-character
  prompt does not fit a queue message's 64 KB once encoded, its record does.

The app sends raw JSON, as host.json (``messageEncoding: none``) expects.

Reading is strict (:mod:`shared.strictjson`): a message that is not strict JSON (NaN,
``1e400``, duplicate keys, a lone surrogate, nesting deeper than 32 levels, bytes that are
not UTF-8) is refused with a ``ValueError`` saying why, never another exception, so the
handler can consume it with that reason instead of the host retrying it into poison.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any, Protocol

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from shared import strictjson
from shared.archive import is_safe_id
from shared.errors import ServiceError, storage_error
from shared.jobs.record import JobRecord


class QueueMessageLike(Protocol):
    """What the handler needs of azure.functions.QueueMessage (kept free of Functions types)."""

    @property
    def id(self) -> str | None: ...
    @property
    def dequeue_count(self) -> int | None: ...
    def get_body(self) -> bytes: ...


REFERENCE_KEY = "job"  # the one key of a claim-check message


@dataclass(frozen=True)
class JobMessage:
    """A job as a caller's queue message carries it: the request itself."""

    job_id: str
    deployment: str
    body: dict[str, Any]  # the generation request (the message without id and deployment)

    def encode(self) -> str:
        """The message as a caller writes it (the app itself sends :func:`job_reference` instead)."""
        return json.dumps({"id": self.job_id, "deployment": self.deployment, **self.body})


@dataclass(frozen=True)
class JobReference:
    """A claim check: the job whose record holds the request (what the app sends for a recorded job)."""

    job_id: str


def job_reference(record: JobRecord) -> str:
    """The message text of a recorded job: the one place the app builds a job message (submission,
    continuation, busy). Only the id: the record holds the request, so any request the API accepts fits."""
    return json.dumps({REFERENCE_KEY: record.id})


def decode_message(raw: bytes | str) -> Any:
    """A queue message as JSON: raw JSON text, or base64-encoded JSON (what the SDK's encode policies write).

    ``ValueError`` (:class:`~shared.strictjson.JSONRefused`) saying why not, and nothing else."""
    try:
        text = (raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw).strip()
    except UnicodeDecodeError as exc:
        raise strictjson.JSONRefused(f"the message is not UTF-8 (byte {exc.start})") from None
    try:
        return strictjson.loads(text)
    except strictjson.JSONRefused as refused:
        as_json = refused
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise strictjson.JSONRefused(f"the message is neither JSON nor base64-encoded JSON ({as_json})") from None
    try:
        return strictjson.loads(decoded)
    except strictjson.JSONRefused as exc:
        raise strictjson.JSONRefused(f"the base64-encoded message is not usable JSON ({exc})") from None


def declared_job_id(message: Any) -> str | None:
    """The ``id`` a decoded caller's message names, if it names one (even when the rest is unusable)."""
    job_id = message.get("id") if isinstance(message, dict) else None
    return job_id if isinstance(job_id, str) else None


def parse_job_message(message: Any, message_id: str, default_deployment: str) -> JobMessage | JobReference:
    """The job a decoded message asks for (a claim check, or a caller's request); ServiceError (400) if it is unusable."""
    if not isinstance(message, dict):
        raise ServiceError(400, "invalid_type", "The queue message must be a JSON object.", param=None)
    if set(message) == {REFERENCE_KEY}:
        job_id = message[REFERENCE_KEY]
        if not isinstance(job_id, str) or not is_safe_id(job_id):
            raise ServiceError(400, "invalid_value", "'job' must name a job: 1-64 letters, digits, '-' or '_'.", param=REFERENCE_KEY)
        return JobReference(job_id)
    body = dict(message)
    job_id = body.pop("id", None)
    if job_id is None:
        # The queue message id is stable across redeliveries, so it makes a stable job id.
        job_id = f"msg-{message_id}"
    if not isinstance(job_id, str) or not is_safe_id(job_id):
        raise ServiceError(400, "invalid_value", "'id' must be 1-64 letters, digits, '-' or '_'.", param="id")
    deployment = body.pop("deployment", None) or default_deployment
    if not isinstance(deployment, str) or not deployment:
        raise ServiceError(400, "missing_required_parameter", "'deployment' is required (no AZURE_OPENAI_DEPLOYMENT default).", param="deployment")
    return JobMessage(job_id, deployment, body)


async def send_message(queues: QueueServiceClient, queue: str, content: str, delay: float = 0) -> None:
    """Send ``content`` to ``queue`` (created if missing), visible after ``delay`` seconds (rounded up)."""
    client = queues.get_queue_client(queue)
    visibility = math.ceil(delay) if delay > 0 else None
    try:
        try:
            await client.send_message(content, visibility_timeout=visibility)
        except ResourceNotFoundError:
            await _create_queue(client, queue)
            await client.send_message(content, visibility_timeout=visibility)
    except AzureError as exc:
        raise storage_error(exc, f"sending to queue {queue}") from None


async def _create_queue(client: QueueClient, queue: str) -> None:
    try:
        await client.create_queue()
    except ResourceExistsError:
        pass
    except AzureError as exc:
        raise storage_error(exc, f"creating queue {queue}") from None
