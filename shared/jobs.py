"""Background generation: job records, queue messages and the queue handler.

A job record is a JSON blob ``{jobs container}/{id}.json``, written with ETag
conditions so two deliveries of the same message can never both write it.
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

import base64
import binascii
import datetime as dt
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import ContainerClient

from shared.archive import ensure_container, is_safe_id
from shared.errors import ServiceError, storage_error
from shared.models import parse_request
from shared.service import ImageService

log = logging.getLogger(__name__)

NOT_RUNNING, RUNNING, SUCCEEDED, FAILED = "notRunning", "running", "succeeded", "failed"
TERMINAL = (SUCCEEDED, FAILED)
JOB_PREFIX = "jobs"  # archive prefix: images of job X are jobs/X/0.png ...
MAX_EVENTS = 50
LEASE_MARGIN_SECONDS = 120

# Test hook: called with a step name at each durable step after upstream answered.
# The crash tests raise from it to prove no step loses a job or pays twice.
step_hook: Callable[[str], None] | None = None


class JobRetry(Exception):
    """Raised so the host redelivers the message later (a transient failure)."""


@dataclass
class Outcome:
    """What the handler did with one message (for logs, the runner and tests)."""

    action: str  # succeeded | failed | deferred | busy | duplicate | invalid
    job_id: str | None = None
    detail: str = ""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _step(name: str) -> None:
    if step_hook is not None:
        step_hook(name)


def decode_message(raw: bytes | str) -> Any:
    """A queue message as JSON: raw JSON text, or base64-encoded JSON (what the SDK's encode policies write)."""
    text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        decoded = base64.b64decode(text, validate=True)
        return json.loads(decoded.decode("utf-8"))
    except (binascii.Error, ValueError):
        raise ValueError("the message is neither JSON nor base64-encoded JSON") from None


class JobStore:
    """Job records in Blob Storage, read and written with ETag conditions."""

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

    async def get(self, job_id: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            stream = await self._container().download_blob(f"{job_id}.json")
            data = await stream.readall()
            return json.loads(data), stream.properties.etag
        except ResourceNotFoundError:
            return None, None
        except AzureError as exc:
            raise storage_error(exc, "reading a job record") from None

    async def create(self, job: dict[str, Any]) -> str | None:
        """Write a new record; None if one with this id exists already."""
        try:
            result = await self._container().get_blob_client(f"{job['id']}.json").upload_blob(
                json.dumps(job).encode(), overwrite=False,  # If-None-Match: *
                content_settings=ContentSettings(content_type="application/json"),
            )
            return str(result["etag"])
        except (ResourceExistsError, ResourceModifiedError):
            return None
        except AzureError as exc:
            if getattr(exc, "status_code", None) in (409, 412):
                return None
            raise storage_error(exc, "creating a job record") from None

    async def replace(self, job: dict[str, Any], etag: str) -> str | None:
        """Overwrite the record only if it is unchanged since ``etag``; None if someone else wrote it."""
        job["updated"] = _iso(_now())
        try:
            result = await self._container().get_blob_client(f"{job['id']}.json").upload_blob(
                json.dumps(job).encode(), overwrite=True,
                content_settings=ContentSettings(content_type="application/json"),
                etag=etag, match_condition=MatchConditions.IfNotModified,
            )
            return str(result["etag"])
        except ResourceModifiedError:
            return None
        except AzureError as exc:
            if getattr(exc, "status_code", None) == 412:
                return None
            raise storage_error(exc, "updating a job record") from None


def new_job(job_id: str, deployment: str, body: dict[str, Any], source: str) -> dict[str, Any]:
    now = _iso(_now())
    return {
        "id": job_id,
        "status": NOT_RUNNING,
        "created": int(time.time()),
        "created_at": now,
        "updated": now,
        "source": source,
        "deployment": deployment,
        "request": body,
        "attempts": 0,
        "lease": None,
        "error": None,
        "result": None,
        "notified": False,
        "events": [{"at": now, "event": "accepted", "detail": source}],
    }


def _event(job: dict[str, Any], event: str, detail: str = "") -> None:
    events = job.setdefault("events", [])
    events.append({"at": _iso(_now()), "event": event, "detail": detail})
    del events[:-MAX_EVENTS]


def _message_job(message: Any, message_id: str, default_deployment: str) -> tuple[str, str, dict[str, Any]]:
    """(job id, deployment, generation body) from a decoded message; ServiceError if unusable."""
    if not isinstance(message, dict):
        raise ServiceError(400, "invalid_type", "The queue message must be a JSON object.", param=None)
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
    return job_id, deployment, body


class Jobs:
    """Accepts jobs (HTTP or queue) and runs them from queue messages."""

    def __init__(self, service: ImageService, max_dequeue_count: int = 5) -> None:
        self.service = service
        self.settings = service.settings
        self.store = JobStore(service)
        self.max_dequeue_count = max_dequeue_count

    # --- acceptance (HTTP) ---

    async def submit(self, job_id: str, deployment: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Record and enqueue a checked request; an existing id returns the existing job (False)."""
        existing, _ = await self.store.get(job_id)
        if existing is not None:
            return existing, False
        await self.store.ensure_container()
        # Enqueue before recording: a crash in between leaves a message that
        # creates its own record, never a record without a message.
        message = {"id": job_id, "deployment": deployment, **body}
        await self._send(self.settings.queue_name, json.dumps(message))
        job = new_job(job_id, deployment, body, "http")
        if await self.store.create(job) is None:
            current, _ = await self.store.get(job_id)
            return current or job, False
        return job, True

    async def _send(self, queue: str, content: str, delay: float = 0) -> None:
        client = self.service.queues.get_queue_client(queue)
        visibility = math.ceil(delay) if delay > 0 else None
        try:
            await client.send_message(content, visibility_timeout=visibility)
        except ResourceNotFoundError:
            try:
                await client.create_queue()
            except ResourceExistsError:
                pass
            except AzureError as exc:
                raise storage_error(exc, f"creating queue {queue}") from None
            try:
                await client.send_message(content, visibility_timeout=visibility)
            except AzureError as exc:
                raise storage_error(exc, f"sending to queue {queue}") from None
        except AzureError as exc:
            raise storage_error(exc, f"sending to queue {queue}") from None

    async def status(self, job_id: str) -> dict[str, Any] | None:
        """The operation view: {id, status, created, result?, error?} with fresh links."""
        job, _ = await self.store.get(job_id)
        if job is None:
            return None
        view: dict[str, Any] = {"id": job["id"], "status": job["status"], "created": job["created"]}
        if job.get("result"):
            view["result"] = await self._result_view(job["result"])
        if job.get("error"):
            view["error"] = job["error"]
        return view

    async def _result_view(self, result: dict[str, Any]) -> dict[str, Any]:
        archive = self.service.archive
        data = []
        for image in result["images"]:
            item = {"url": await archive.link(image["name"])}
            if image.get("revised_prompt"):
                item["revised_prompt"] = image["revised_prompt"]
            data.append(item)
        view: dict[str, Any] = {"created": result["created"], "data": data}
        if result.get("usage"):
            view["usage"] = result["usage"]
        return view

    # --- the queue handler ---

    async def handle(self, raw: bytes | str, message_id: str, dequeue_count: int) -> Outcome:
        """Process one delivery. Returns normally to consume the message; raises JobRetry to have it redelivered."""
        try:
            message = decode_message(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            log.error("queue message %s dropped: %s", message_id, exc)
            return Outcome("invalid", None, str(exc))
        job_id: str | None = message.get("id") if isinstance(message, dict) and isinstance(message.get("id"), str) else None
        try:
            job_id, deployment, body = _message_job(message, message_id, self.settings.default_deployment)
        except ServiceError as error:
            if job_id and is_safe_id(job_id):
                await self._fail_unparsed(job_id, message, error)
            log.error("queue message %s (job %s) refused: %s", message_id, job_id, error.message)
            return Outcome("invalid", job_id, error.message)

        try:
            return await self._run(job_id, deployment, body, message_id, dequeue_count)
        except ServiceError as error:
            # Storage or credentials failing around the job: let the host redeliver.
            return await self._transient(job_id, error, dequeue_count)

    async def _fail_unparsed(self, job_id: str, message: Any, error: ServiceError) -> None:
        await self.store.ensure_container()
        job, etag = await self.store.get(job_id)
        if job is None:
            job = new_job(job_id, str(message.get("deployment") or ""), {}, "queue")
            etag = await self.store.create(job)
            if etag is None:
                job, etag = await self.store.get(job_id)
        if job is None or etag is None or job["status"] in TERMINAL:
            return
        await self._finish(job, etag, FAILED, error=error.body()["error"])

    async def _run(self, job_id: str, deployment: str, body: dict[str, Any], message_id: str, dequeue_count: int) -> Outcome:
        await self.store.ensure_container()
        job, etag = await self.store.get(job_id)
        if job is None:
            job = new_job(job_id, deployment, body, "queue")
            etag = await self.store.create(job)
            if etag is None:
                job, etag = await self.store.get(job_id)
        assert job is not None and etag is not None

        if job["status"] in TERMINAL:
            if not job.get("notified"):
                await self._notify(job, etag)
            return Outcome("duplicate", job_id, f"already {job['status']}")

        # Images already archived by a delivery that crashed later: finish from the archive.
        # Only a job that was claimed before (attempts > 0) can have reached upstream.
        claimed_before = int(job.get("attempts", 0)) > 0
        archived = await self.service.archive.read_record(JOB_PREFIX, job_id) if claimed_before else None
        if archived is not None:
            await self._finish(job, etag, SUCCEEDED, result=self._result_from_record(archived))
            return Outcome("succeeded", job_id, "finished from the archive")

        family = self.settings.family_of(deployment)
        try:
            if family is None:
                raise ServiceError(404, "DeploymentNotFound", f"The deployment {deployment!r} is not served here.", param="deployment")
            request = parse_request(body, deployment, family)
        except ServiceError as error:
            await self._finish(job, etag, FAILED, error=error.body()["error"])
            return Outcome("failed", job_id, error.message)

        recovered = await self.service.recover(request, generation_id=job_id, prefix=JOB_PREFIX) if claimed_before else None
        if recovered is not None:
            await self._finish(job, etag, SUCCEEDED, result=self._result_from_record(recovered))
            return Outcome("succeeded", job_id, "record rebuilt from archived images")

        # Take the lease. Another live delivery holding it means: come back later.
        now = _now()
        lease = job.get("lease")
        if job["status"] == RUNNING and lease and lease.get("message") != message_id and dt.datetime.fromisoformat(lease["until"]) > now:
            wait = (dt.datetime.fromisoformat(lease["until"]) - now).total_seconds() + 1
            await self._send(self.settings.queue_name, json.dumps({"id": job_id, "deployment": deployment, **body}), delay=wait)
            return Outcome("busy", job_id, f"leased by another delivery for {wait:.0f} s")
        job["status"] = RUNNING
        job["attempts"] = int(job.get("attempts", 0)) + 1
        job["lease"] = {"message": message_id, "until": _iso(now + dt.timedelta(seconds=self.settings.upstream_timeout_seconds + LEASE_MARGIN_SECONDS))}
        _event(job, "running", f"attempt {job['attempts']}, dequeue {dequeue_count}")
        etag = await self.store.replace(job, etag)
        if etag is None:
            return Outcome("busy", job_id, "another delivery updated the job first")

        try:
            generation = await self.service.generate(
                request,
                generation_id=job_id,
                prefix=JOB_PREFIX,
                timeout=self.settings.upstream_timeout_seconds,
                budget=0,  # waiting belongs to the queue, not to a worker slot
                kind="job",
            )
        except ServiceError as error:
            if error.status == 429:
                return await self._defer(job, etag, body, error)
            if error.transient:
                return await self._transient(job_id, error, dequeue_count, job=job, etag=etag)
            await self._finish(job, etag, FAILED, error=error.body()["error"])
            return Outcome("failed", job_id, error.message)

        _step("after_archive")
        await self._finish(job, etag, SUCCEEDED, result=self._result_from_record(generation.record))
        return Outcome("succeeded", job_id)

    @staticmethod
    def _result_from_record(record: dict[str, Any]) -> dict[str, Any]:
        return {
            "created": record.get("upstream_created") or int(time.time()),
            "images": [{"name": i["name"], "link": f"/images/{i['name']}", "revised_prompt": i.get("revised_prompt")} for i in record["images"]],
            "usage": record.get("usage"),
            "record": record["images"][0]["name"].rsplit("/", 1)[0] + "/record.json" if record["images"] else None,
        }

    async def _finish(self, job: dict[str, Any], etag: str, status: str, *, result: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> None:
        """Mark the job terminal (ETag-guarded, retried on conflict), then notify."""
        for _ in range(5):
            if job["status"] in TERMINAL:
                break
            job["status"] = status
            job["lease"] = None
            job["result"] = result
            job["error"] = error
            _event(job, status, (error or {}).get("message", ""))
            new_etag = await self.store.replace(job, etag)
            if new_etag is not None:
                etag = new_etag
                break
            current, current_etag = await self.store.get(job["id"])
            if current is None or current_etag is None:
                return
            job, etag = current, current_etag
        _step("after_job_record")
        if not job.get("notified"):
            await self._notify(job, etag)

    async def _notify(self, job: dict[str, Any], etag: str) -> None:
        """Post {id, status, result|error} on the results queue (if configured), then remember it."""
        if self.settings.results_queue:
            message: dict[str, Any] = {"id": job["id"], "status": job["status"]}
            if job.get("result"):
                message["result"] = await self._result_view(job["result"])
            if job.get("error"):
                message["error"] = job["error"]
            await self._send(self.settings.results_queue, json.dumps(message))
        job["notified"] = True
        await self.store.replace(job, etag)

    async def _defer(self, job: dict[str, Any], etag: str, body: dict[str, Any], error: ServiceError) -> Outcome:
        """429: a continuation message after Retry-After (with jitter); this delivery is consumed."""
        # Never before Retry-After; a little jitter (the queue rounds up to whole seconds anyway)
        # so deferred jobs do not all wake in the same instant, without wasting the window.
        retry_after = error.retry_after or 10.0
        delay = retry_after + random.uniform(0, min(1.0, 0.1 * retry_after))
        job["status"] = NOT_RUNNING
        job["lease"] = None
        _event(job, "throttled", f"retry after {delay:.1f} s")
        # Continuation first: if recording fails, the job still runs.
        await self._send(self.settings.queue_name, json.dumps({"id": job["id"], "deployment": job["deployment"], **body}), delay=delay)
        await self.store.replace(job, etag)
        return Outcome("deferred", job["id"], f"throttled; back in {delay:.1f} s")

    async def _transient(self, job_id: str, error: ServiceError, dequeue_count: int, job: dict[str, Any] | None = None, etag: str | None = None) -> Outcome:
        """Redeliver via the host, or on the last allowed dequeue record the failure first."""
        last = dequeue_count >= self.max_dequeue_count
        try:
            if job is None or etag is None:
                job, etag = await self.store.get(job_id)
            if job is not None and etag is not None and job["status"] not in TERMINAL:
                if last:
                    await self._finish(job, etag, FAILED, error=error.body()["error"] | {"dequeue_count": dequeue_count})
                else:
                    job["status"] = NOT_RUNNING
                    job["lease"] = None
                    job["error"] = None
                    _event(job, "retrying", f"{error.code}: {error.message}")
                    await self.store.replace(job, etag)
        except ServiceError as store_error:
            log.warning("job %s: could not record the failure: %s", job_id, store_error.message)
        log.warning("job %s: %s (dequeue %d of %d)", job_id, error.message, dequeue_count, self.max_dequeue_count)
        raise JobRetry(f"job {job_id}: {error.code}: {error.message}")


def new_job_id() -> str:
    return uuid.uuid4().hex


def host_queue_settings() -> dict[str, Any]:
    """The queue settings of host.json (maxDequeueCount, visibilityTimeout...), which the handler must agree with."""
    host = json.loads((Path(__file__).resolve().parent.parent / "host.json").read_text())
    queues: dict[str, Any] = host.get("extensions", {}).get("queues", {})
    return queues


class QueueMessageLike(Protocol):
    """What the handler needs of azure.functions.QueueMessage (kept free of Functions types)."""

    @property
    def id(self) -> str | None: ...
    @property
    def dequeue_count(self) -> int | None: ...
    def get_body(self) -> bytes: ...


async def handle_queue_message(jobs: Jobs, msg: QueueMessageLike) -> Outcome:
    """The queue trigger's body: used by function_app in Azure and by local/queue_runner.py."""
    outcome = await jobs.handle(msg.get_body(), msg.id or "", msg.dequeue_count or 1)
    log.info("queue message %s: %s %s %s", msg.id, outcome.action, outcome.job_id or "", outcome.detail)
    return outcome
