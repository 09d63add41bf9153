"""Background generation through the storage queue, against real Azurite and the simulator.

The queue runner drives the same handler as the Functions trigger with the host's
semantics (dequeue count, visibility, poison queue), so these tests prove what
the host will do in Azure: no lost job, never two generations for one job.

They wait on what the runner did (``drain``, ``wait_for``), never on the clock.
Crashes are injected through constructors: a job store that dies at a chosen
write, a storage transport that dies after a chosen request. Lease expiry comes
from a clock the test moves.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from azure.core.pipeline.transport import AioHttpTransport
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient
from fastapi import FastAPI, Request
from fastapi.responses import Response

from local.azurite import Azurite
from local.queue_runner import QueueRunner, RunnerStats, SimulatedCrash
from local.servers import ServerThread, serve_in_thread
from shared.api import create_app
from shared.host import host_queue_settings
from shared.jobs import JobRecord, Jobs, JobStatus, JobStore, StoredJob
from shared.jobs.handler import LEASE_MARGIN_SECONDS, job_deadline
from shared.runtime import Runtime
from shared.service import ImageService
from shared.settings import Settings
from tests import scoping
from tests.conftest import SimControl

SUBMIT = "/openai/deployments/{}/images/generations:submit?api-version=2025-04-01-preview"
T = TypeVar("T")
HOST_QUEUES = host_queue_settings()
MAX_DEQUEUE_COUNT = int(HOST_QUEUES["maxDequeueCount"])


@dataclass(frozen=True)
class Seen:
    """One storage request that got an answer."""

    method: str
    path: str
    query: str
    condition: Literal["create", "replace", "none"]  # If-None-Match: * / If-Match: <etag> / neither


class StorageTap(AioHttpTransport):
    """The storage clients' real HTTP transport, tapped: it notes every answered request, and the
    worker 'dies' (SimulatedCrash) right after the first request ``crash_after`` picks."""

    def __init__(self, crash_after: Callable[[Seen], bool] | None = None) -> None:
        super().__init__()
        self.crash_after = crash_after
        self.seen: list[Seen] = []
        self.crashed = False

    async def send(self, request: Any, **kwargs: Any) -> Any:
        response = await super().send(request, **kwargs)
        url = urlsplit(request.url)
        headers = request.headers
        condition = "create" if headers.get("If-None-Match") == "*" else "replace" if headers.get("If-Match") else "none"
        seen = Seen(request.method, url.path, url.query, condition)
        self.seen.append(seen)
        if self.crash_after is not None and not self.crashed and self.crash_after(seen):
            self.crashed = True
            raise SimulatedCrash(f"after {seen.method} {seen.path}")
        return response

    def writes_of(self, container: str, name: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "PUT" and s.path.endswith(f"/{container}/{name}")]


def after_images_written(job_id: str, count: int) -> Callable[[Seen], bool]:
    """Crash once all ``count`` images of the job are in the archive (whatever their record's state)."""
    written: set[str] = set()
    image = re.compile(rf"/jobs/{re.escape(job_id)}/\d+\.\w+$")

    def crash_after(seen: Seen) -> bool:
        if seen.method == "PUT" and "comp=" not in seen.query and image.search(seen.path):
            written.add(seen.path)
        return len(written) == count

    return crash_after


class CrashingStore(JobStore):
    """The real job store, except that the worker 'dies' once: just before or just after
    the first write of a record whose status is ``status``."""

    def __init__(self, service: ImageService, status: JobStatus, when: Literal["before", "after"]) -> None:
        super().__init__(service)
        self.status = status
        self.when = when
        self.crashed = False

    async def replace(self, stored: StoredJob) -> bool:
        hit = not self.crashed and stored.record.status is self.status
        if hit and self.when == "before":
            self.crashed = True
            raise SimulatedCrash(f"before writing the job {self.status}")
        written = await super().replace(stored)
        if hit:
            self.crashed = True
            raise SimulatedCrash(f"after writing the job {self.status}")
        return written


class ManualClock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class JobStack:
    """A queue runner (and optionally the API) sharing settings with a fresh queue."""

    def __init__(
        self,
        settings: Settings,
        azurite: Azurite,
        *,
        store: Callable[[ImageService], JobStore] | None = None,
        tap: StorageTap | None = None,
        clock: ManualClock | None = None,
    ) -> None:
        self.settings = settings
        self.azurite = azurite
        options: dict[str, Any] = {"clock": clock} if clock else {}

        def jobs(service: ImageService) -> Jobs:
            return Jobs(service, MAX_DEQUEUE_COUNT, store=store(service) if store else None, **options)

        # The runner's loop gets this runtime; the API (its own loop) gets another. A tapped storage
        # fails at once instead of through the SDK's retry backoff: what is tested is what the app does next.
        self.runtime = Runtime(settings, storage_options={"transport": tap, "retry_total": 0} if tap else None, jobs=jobs)
        self.service, self.jobs = self.runtime.service, self.runtime.jobs
        self._runner: QueueRunner | None = None
        self.api: ServerThread | None = None

    @property
    def runner(self) -> QueueRunner:
        assert self._runner is not None, "start_runner() first"
        return self._runner

    def start_runner(self, **options: Any) -> QueueRunner:
        # A retry is visible again at once, and a crashed delivery's lease "has run out" at once:
        # the test moves time on instead of waiting for it.
        options = {"retry_delay": 0, "lease_seconds": 2, "max_poll_interval": 0.1, "crash_visibility": 0, **options}
        self._runner = QueueRunner(
            self.azurite.connection_string, self.settings.queue_name, self.runtime.handle_queue_message, host_queues=HOST_QUEUES, on_stop=self.runtime.close, **options
        )
        return self._runner.start_in_thread()

    def start_api(self) -> ServerThread:
        self.api = serve_in_thread(create_app(Runtime(self.settings)))
        return self.api

    def queue(self, name: str | None = None) -> QueueClient:
        client = QueueClient.from_connection_string(self.azurite.connection_string, name or self.settings.queue_name)
        try:
            client.create_queue()
        except Exception:  # noqa: S110  # exists already
            pass
        return client

    def job(self, job_id: str) -> dict[str, Any]:
        """The job blob as stored (raw JSON: its format is part of what is tested)."""
        blob = BlobServiceClient.from_connection_string(self.azurite.connection_string).get_blob_client(self.settings.jobs_container, f"{job_id}.json")
        assert blob.exists(), f"no record for job {job_id}"
        return json.loads(blob.download_blob().readall())  # type: ignore[no-any-return]

    def finished(self, job_id: str, timeout: float = 60) -> RunnerStats:
        """Wait until a delivery of ``job_id`` ended the job."""
        return self.runner.wait_for(lambda s: any(o.job_id == job_id and o.action in ("succeeded", "failed") for o in s.outcomes), timeout)

    def stop(self) -> None:
        if self._runner:
            self._runner.stop()
        if self.api:
            self.api.stop()


@pytest.fixture()
def job_stack(make_settings: Callable[..., Settings], azurite: Azurite, sim: SimControl) -> Iterator[Callable[..., JobStack]]:
    made: list[JobStack] = []

    def make(*, store: Callable[[ImageService], JobStore] | None = None, tap: StorageTap | None = None, clock: ManualClock | None = None, **overrides: str) -> JobStack:
        name = f"jobs-{uuid.uuid4().hex[:12]}"
        settings = make_settings(IMAGES_QUEUE=name, IMAGES_UPSTREAM_TIMEOUT_SECONDS="30", **overrides)
        stack = JobStack(settings, azurite, store=store, tap=tap, clock=clock)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.stop()


def drop(queue: QueueClient, message: Any, encode: bool = False) -> None:
    text = message if isinstance(message, str) else json.dumps(message)
    queue.send_message(base64.b64encode(text.encode()).decode() if encode else text)


def test_thirty_messages_reach_the_right_final_state(job_stack: Callable[..., JobStack], sim: SimControl) -> None:
    stack = job_stack()
    queue = stack.queue()
    valid, filtered, refused = [], [], []
    for i in range(22):
        job_id = f"ok-{i}-{uuid.uuid4().hex[:6]}"
        valid.append(job_id)
        body: dict[str, Any] = {"id": job_id, "prompt": f"picture {i}", "size": "1024x1024"}
        if i % 3 == 0:
            body["deployment"] = "gpt-image-1"
        drop(queue, body, encode=i % 2 == 1)
    for i in range(3):
        job_id = f"filtered-{i}-{uuid.uuid4().hex[:6]}"
        filtered.append(job_id)
        drop(queue, {"id": job_id, "prompt": "bad [[filter:prompt]]"}, encode=i == 1)
    for body in ({"prompt": "no", "size": "7x7"}, {"size": "1024x1024"}):
        job_id = f"refused-{uuid.uuid4().hex[:6]}"
        refused.append(job_id)
        drop(queue, {"id": job_id, **body})
    drop(queue, "this is not json {")
    drop(queue, base64.b64encode(b"\xff\xfe garbage").decode())
    drop(queue, "[1, 2, 3]")
    stack.start_runner()
    stats = stack.runner.drain(received=30, timeout=90)  # nothing running, nothing left in the queue
    finished = {j: stack.job(j) for j in valid + filtered + refused}
    for job_id in valid:
        job = finished[job_id]
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 1
        assert job["result"]["images"][0]["name"].startswith(f"jobs/{job_id}/")
    for job_id in filtered:
        assert finished[job_id]["status"] == "failed"
        assert finished[job_id]["error"]["code"] == "contentFilter"
    assert finished[refused[0]]["status"] == finished[refused[1]]["status"] == "failed"
    assert finished[refused[0]]["error"]["param"] == "size"
    assert finished[refused[1]]["error"]["code"] == "missing_required_parameter"
    assert sim.stats()["generations"] == len(valid)  # one generation per valid job, none for the rest
    assert stats.poisoned == 0
    assert stack.queue().peek_messages(max_messages=32) == []  # the malformed ones did not block or linger


@pytest.mark.slow  # real quota windows (about 6 s): CI runs it
def test_throttling_storm_ends_with_every_job_succeeded(job_stack: Callable[..., JobStack], sim: SimControl) -> None:
    sim.configure(quota_requests=2, quota_window_seconds=1)
    stack = job_stack(IMAGES_MAX_CONCURRENT_UPSTREAM="4")
    queue = stack.queue()
    ids = [f"storm-{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    for job_id in ids:
        drop(queue, {"id": job_id, "prompt": "storm"})
    stack.start_runner()
    runner_stats = stack.runner.drain(received=len(ids), timeout=120)  # deferred continuations count until they ran
    finished = {j: stack.job(j) for j in ids}
    assert all(j["status"] == "succeeded" for j in finished.values())
    stats = sim.stats()
    assert stats["throttled"] > 0
    assert stats["generations"] == len(ids)
    assert runner_stats.poisoned == 0
    assert stack.queue(stack.settings.poison_queue_name).peek_messages() == []
    assert any(e["event"] == "throttled" for j in finished.values() for e in j["events"])


CRASH_POINTS = ["after_images", "after_archive", "after_job_record"]


@pytest.mark.parametrize("step", CRASH_POINTS)
def test_crash_at_each_step_never_loses_a_job_or_generates_twice(job_stack: Callable[..., JobStack], sim: SimControl, step: str) -> None:
    job_id = f"crash-{step.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    # after_images: both images archived, their record not yet; after_archive: the generation is
    # archived, the job record still says running; after_job_record: the job says succeeded, its
    # results-queue post is not made yet.
    tap = StorageTap(after_images_written(job_id, 2)) if step == "after_images" else None
    stores: list[CrashingStore] = []

    def crashing_store(service: ImageService) -> JobStore:
        stores.append(CrashingStore(service, JobStatus.SUCCEEDED, "before" if step == "after_archive" else "after"))
        return stores[-1]

    stack = job_stack(IMAGES_RESULTS_QUEUE=f"results-{uuid.uuid4().hex[:8]}", tap=tap, store=None if tap else crashing_store)
    drop(stack.queue(), {"id": job_id, "prompt": "survive", "n": 2})
    stack.start_runner()
    stats = stack.runner.drain(received=2)  # the crashed delivery and the one after it
    assert (tap.crashed if tap else stores[0].crashed) and stats.crashed == 1
    assert [o.action for o in stats.outcomes] == (["duplicate"] if step == "after_job_record" else ["succeeded"])
    job = stack.job(job_id)
    assert job["status"] == "succeeded" and job["notified"]
    assert sim.stats()["generations"] == 1
    images = [i["name"] for i in job["result"]["images"]]
    assert len(images) == 2
    container = BlobServiceClient.from_connection_string(stack.azurite.connection_string).get_container_client("images")
    record = json.loads(container.download_blob(f"jobs/{job_id}/record.json").readall())
    assert [i["name"] for i in record["images"]] == images
    for name in images:
        assert container.get_blob_client(name).exists()
    results = stack.queue(stack.settings.results_queue).receive_messages(max_messages=10)
    posted = [json.loads(m.content) for m in results]
    assert [(p["id"], p["status"]) for p in posted] == [(job_id, "succeeded")]


def test_always_failing_job_is_failed_and_poisoned_after_five_dequeues(job_stack: Callable[..., JobStack], sim: SimControl) -> None:
    sim.configure(fail_next=1000, fail_status=503)  # unable to handle it: no work done, so each delivery may try again
    stack = job_stack()
    job_id = f"doomed-{uuid.uuid4().hex[:6]}"
    drop(stack.queue(), {"id": job_id, "prompt": "never"})
    stack.start_runner()
    stats = stack.runner.drain(received=MAX_DEQUEUE_COUNT)
    job = stack.job(job_id)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "UpstreamError"
    assert job["error"]["dequeue_count"] == 5
    poisoned = stack.queue(stack.settings.poison_queue_name).peek_messages(max_messages=5)
    assert len(poisoned) == 1
    assert json.loads(poisoned[0].content)["id"] == job_id
    assert sim.stats()["failed"] == 5
    assert stats.retried == 4 and stats.poisoned == 1


def test_redelivered_finished_job_is_consumed_without_upstream(job_stack: Callable[..., JobStack], sim: SimControl) -> None:
    stack = job_stack()
    job_id = f"twice-{uuid.uuid4().hex[:6]}"
    drop(stack.queue(), {"id": job_id, "prompt": "once"})
    stack.start_runner()
    stack.runner.drain(received=1)
    drop(stack.queue(), {"id": job_id, "prompt": "once"})
    stats = stack.runner.drain(received=2)
    assert [o.action for o in stats.outcomes] == ["succeeded", "duplicate"]
    assert sim.stats()["generations"] == 1


@pytest.mark.parametrize("results_queue", [False, True], ids=["no-results-queue", "results-queue"])
def test_a_job_record_is_written_only_when_it_changes(job_stack: Callable[..., JobStack], sim: SimControl, results_queue: bool) -> None:
    """Counted on the wire: create, running, terminal; plus 'notified' only when there is a post to remember."""
    tap = StorageTap()
    overrides = {"IMAGES_RESULTS_QUEUE": f"results-{uuid.uuid4().hex[:8]}"} if results_queue else {}
    stack = job_stack(tap=tap, **overrides)
    job_id = f"writes-{uuid.uuid4().hex[:6]}"
    drop(stack.queue(), {"id": job_id, "prompt": "count my writes"})
    stack.start_runner()
    stack.runner.drain(received=1)
    writes = tap.writes_of(stack.settings.jobs_container, f"{job_id}.json")
    assert [w.condition for w in writes] == ["create", "replace", "replace"] + (["replace"] if results_queue else [])
    job = stack.job(job_id)
    assert job["status"] == "succeeded" and job["notified"]
    assert [e["event"] for e in job["events"]] == ["accepted", "running", "succeeded"]


def test_a_live_lease_holds_off_another_delivery_and_once_it_ran_out_the_job_is_abandoned_never_sent(
    job_stack: Callable[..., JobStack], sim: SimControl
) -> None:
    """A delivery that claimed the job and died may have sent its request: no later delivery sends it again."""
    start = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
    clock = ManualClock(start)
    stack = job_stack(store=lambda service: CrashingStore(service, JobStatus.RUNNING, "after"), clock=clock)
    job_id = f"leased-{uuid.uuid4().hex[:6]}"
    raw = json.dumps({"id": job_id, "prompt": "one at a time"})
    lease = job_deadline(stack.settings).total + LEASE_MARGIN_SECONDS

    async def deliveries() -> tuple[dict[str, Any], Any, Any]:
        await stack.runtime.open()
        try:
            with pytest.raises(SimulatedCrash):
                await stack.jobs.handle(raw, "first", 1)  # claimed the job, then died (before or after upstream: nobody knows)
            claimed = stack.job(job_id)
            clock.advance(60)
            busy = await stack.jobs.handle(raw, "second", 1)  # the first delivery's lease is still live
            clock.advance(lease - 60 + 1)
            done = await stack.jobs.handle(raw, "third", 1)  # the lease has run out
            return claimed, busy, done
        finally:
            await stack.runtime.close()

    claimed, busy, done = asyncio.run(deliveries())
    assert claimed["status"] == "running" and claimed["attempts"] == 1
    assert claimed["lease"] == {"message": "first", "until": (start + dt.timedelta(seconds=lease)).isoformat().replace("+00:00", "Z")}
    assert claimed["created"] == int(start.timestamp())
    assert (busy.action, busy.detail) == ("busy", f"leased by another delivery for {lease - 60 + 1:.0f} s")
    # The busy delivery left a continuation (invisible until the lease ends) and called nobody.
    assert stack.queue().get_queue_properties().approximate_message_count == 1
    assert done.action == "failed" and "abandoned" in done.detail
    assert sim.stats()["requests"] == 0
    job = stack.job(job_id)
    assert job["status"] == "failed" and job["attempts"] == 1 and job["lease"] is None
    assert job["error"]["code"] == "JobAbandoned" and "not repeated" in job["error"]["message"]
    assert dt.datetime.fromisoformat(job["updated"]) == start + dt.timedelta(seconds=lease + 1)


# A job blob as the service has written it until now (with fields nobody reads any more).
STORED_JOB = {
    "id": "stored-format",
    "status": "succeeded",
    "created": 1795000000,
    "created_at": "2026-11-20T10:00:00.123456Z",
    "updated": "2026-11-20T10:00:09.500000Z",
    "source": "http",
    "deployment": "gpt-image-1",
    "request": {"prompt": "kept", "quality": "high"},
    "attempts": 1,
    "lease": None,
    "error": None,
    "result": {
        "created": 1795000008,
        "images": [{"name": "jobs/stored-format/0.png", "link": "/images/jobs/stored-format/0.png", "revised_prompt": "a kept picture"}],
        "usage": {"total_tokens": 10},
        "cost": {"usd": 0.00084, "basis": "gpt-image-1 per 1M tokens: text in 5, image in 10, image out 40 USD (2026-11)"},
        "record": "jobs/stored-format/record.json",
    },
    "notified": True,
    "events": [
        {"at": "2026-11-20T10:00:00.123456Z", "event": "accepted", "detail": "http"},
        {"at": "2026-11-20T10:00:01Z", "event": "running", "detail": "attempt 1, dequeue 1"},
        {"at": "2026-11-20T10:00:09.500000Z", "event": "succeeded", "detail": ""},
    ],
}


def test_the_job_record_reads_and_writes_the_stored_json() -> None:
    record = JobRecord.from_json(json.dumps(STORED_JOB))
    assert record.status is JobStatus.SUCCEEDED and record.status.terminal
    rewritten = json.loads(record.to_json())
    expected = json.loads(json.dumps(STORED_JOB))
    for image in expected["result"]["images"]:
        del image["link"]  # dead fields: links are made when the job is read
    del expected["result"]["record"]
    expected["enqueued"] = True  # a record from before the field existed had its message
    assert rewritten == expected
    running = {**STORED_JOB, "status": "running", "result": None, "lease": {"message": "m-1", "until": "2026-11-20T10:02:31Z"}, "enqueued": True}
    assert json.loads(JobRecord.from_json(json.dumps(running)).to_json()) == running
    submitted = {**STORED_JOB, "status": "notRunning", "result": None, "enqueued": False}  # recorded, message not sent yet
    assert JobRecord.from_json(json.dumps(submitted)).enqueued is False
    assert [s.value for s in JobStatus] == ["notRunning", "running", "succeeded", "failed"]


def test_a_stored_job_is_served_with_fresh_links(job_stack: Callable[..., JobStack], sim: SimControl) -> None:
    stack = job_stack()
    blobs = BlobServiceClient.from_connection_string(stack.azurite.connection_string)
    jobs_container = blobs.get_container_client(stack.settings.jobs_container)
    if not jobs_container.exists():
        jobs_container.create_container()
    job_id = f"stored-{uuid.uuid4().hex[:6]}"
    stored = json.loads(json.dumps(STORED_JOB).replace("stored-format", job_id))
    jobs_container.upload_blob(f"{job_id}.json", json.dumps(stored))
    api = stack.start_api()
    view = httpx.get(f"{api.url}/openai/operations/images/{job_id}").json()
    assert view["id"] == job_id and view["status"] == "succeeded" and view["created"] == STORED_JOB["created"]
    assert view["result"]["created"] == 1795000008 and view["result"]["usage"] == {"total_tokens": 10}
    [item] = view["result"]["data"]
    assert item["revised_prompt"] == "a kept picture"
    assert item["url"].startswith(f"{stack.azurite.blob_url}/images/jobs/{job_id}/0.png?") and "sig=" in item["url"]
    assert "error" not in view


def test_submit_and_poll_over_http(job_stack: Callable[..., JobStack], sim: SimControl) -> None:
    stack = job_stack()
    api = stack.start_api()
    stack.start_runner()
    with httpx.Client(base_url=api.url, timeout=30) as client:
        accepted = client.post(SUBMIT.format("gpt-image-1"), json={"prompt": "background work", "quality": "hd"})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        assert accepted.json()["status"] == "notRunning"
        location = accepted.headers["Operation-Location"]
        assert location.startswith(f"{api.url}/openai/operations/images/{job_id}")
        stack.finished(job_id)
        view = status(client, location)
        assert view["status"] == "succeeded"
        assert set(view) >= {"id", "status", "created", "result"}
        image = httpx.get(view["result"]["data"][0]["url"])
        assert image.content.startswith(b"\x89PNG")
        unknown = client.get("/openai/operations/images/does-not-exist")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NotFound"


def test_prefer_respond_async_and_idempotency_key(job_stack: Callable[..., JobStack], sim: SimControl) -> None:
    stack = job_stack()
    api = stack.start_api()
    key = f"order-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=api.url, timeout=30) as client:
        path = "/openai/deployments/gpt-image-1-mini/images/generations?api-version=2025-04-01-preview"
        headers = {"Prefer": "respond-async", "Idempotency-Key": key}
        first = client.post(path, json={"prompt": "same"}, headers=headers)
        second = client.post(path, json={"prompt": "same"}, headers=headers)
        assert first.status_code == second.status_code == 202
        # The key is scoped by deployment and caller, keyed with the app's secret: its job id is derived from all three.
        assert first.json()["id"] == second.json()["id"] == scoping.job_id(stack.azurite, "gpt-image-1-mini", key)
        conflict = client.post(path, json={"prompt": "different"}, headers=headers)
        assert conflict.status_code == 409 and conflict.json()["error"]["param"] == "Idempotency-Key"
        bad = client.post(path, json={"prompt": "x"}, headers={"Prefer": "respond-async", "Idempotency-Key": "no spaces allowed"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "Idempotency-Key"
        invalid = client.post(path, json={"prompt": "x", "n": 99}, headers={"Prefer": "respond-async"})
        assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "n"
        pending = status(client, first.headers["Operation-Location"])
        assert pending["status"] == "notRunning"
        stack.start_runner()
        stack.runner.drain(received=1)
        view = status(client, first.headers["Operation-Location"])
        assert view["status"] == "succeeded"
    assert sim.stats()["generations"] == 1  # two submissions, one message, one generation


def test_filtered_job_reports_error_over_http(job_stack: Callable[..., JobStack], sim: SimControl) -> None:
    stack = job_stack()
    api = stack.start_api()
    stack.start_runner()
    with httpx.Client(base_url=api.url, timeout=30) as client:
        accepted = client.post(SUBMIT.format("dall-e-3"), json={"prompt": "x [[filter:image]]"})
        stack.finished(accepted.json()["id"])
        view = status(client, accepted.headers["Operation-Location"])
    assert view["status"] == "failed"
    assert view["error"]["code"] == "contentFilter"
    assert view["error"]["message"] == "Generated image was filtered as a result of our safety system."
    assert "result" not in view


def status(client: httpx.Client, location: str) -> dict[str, Any]:
    """The operation as a client polling it sees it now (Retry-After only while it is not finished)."""
    response = client.get(location)
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    assert ("Retry-After" in response.headers) == (view["status"] in ("notRunning", "running"))
    return view


def test_unusable_200_answer_fails_the_job_without_paying_again(job_stack: Callable[..., JobStack]) -> None:
    """Upstream answered 200 (so it billed) but the body is garbage: the job fails, no redelivery regenerates."""
    calls: list[str] = []
    broken = FastAPI()

    @broken.post("/openai/deployments/{deployment}/images/generations")
    async def generate(deployment: str, request: Request) -> Response:
        calls.append(deployment)
        return Response(b'{"created": 1, "data": [{"b64_json": "not base64 at all!"}]}', media_type="application/json")

    upstream = serve_in_thread(broken)
    try:
        stack = job_stack(AZURE_OPENAI_ENDPOINT=upstream.url)
        job_id = f"garbled-{uuid.uuid4().hex[:6]}"
        drop(stack.queue(), {"id": job_id, "prompt": "x"})
        stack.start_runner()
        stats = stack.runner.drain(received=1)  # and nothing left that could be redelivered
        job = stack.job(job_id)
    finally:
        upstream.stop()
    assert job["status"] == "failed"
    assert "base64" in job["error"]["message"]
    assert calls == ["gpt-image-1-mini"]
    assert stats.retried == 0


# --------------------------------------------------------------------------- never sent twice: the rule on redelivery


def with_open_runtime(stack: JobStack, deliveries: Callable[[], Awaitable[T]]) -> T:
    """Run ``deliveries`` (calls of the handler in this test's event loop) with the stack's runtime open."""

    async def run() -> T:
        await stack.runtime.open()
        try:
            return await deliveries()
        finally:
            await stack.runtime.close()

    return asyncio.run(run())


@pytest.mark.parametrize("status", [408, 499, 500, 504])
def test_a_job_upstream_may_have_worked_on_is_failed_and_never_sent_again_on_redelivery(job_stack: Callable[..., JobStack], sim: SimControl, status: int) -> None:
    sim.configure(fail_next=1, fail_status=status)  # a 408 (or its kin): upstream may have made and billed the image
    stack = job_stack()
    job_id = f"once-{status}-{uuid.uuid4().hex[:6]}"
    raw = json.dumps({"id": job_id, "prompt": "one call, whatever happens"})

    async def deliveries() -> tuple[Any, Any]:
        first = await stack.jobs.handle(raw, "message-1", 1)
        return first, await stack.jobs.handle(raw, "message-1", 2)  # the host delivers the same message again

    first, again = with_open_runtime(stack, deliveries)
    assert first.action == "failed" and again.action == "duplicate"
    job = stack.job(job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "UpstreamError" and "not repeated" in job["error"]["message"].lower()
    assert sim.stats()["requests"] == 1


def test_a_delivery_that_died_after_an_upstream_408_leaves_a_job_its_redelivery_fails_without_sending_it_again(
    job_stack: Callable[..., JobStack], sim: SimControl
) -> None:
    sim.configure(fail_next=1, fail_status=408)
    stack = job_stack(store=lambda service: CrashingStore(service, JobStatus.FAILED, "before"))
    job_id = f"died-{uuid.uuid4().hex[:6]}"
    raw = json.dumps({"id": job_id, "prompt": "answered 408, then the worker died"})

    async def deliveries() -> Any:
        with pytest.raises(SimulatedCrash):
            await stack.jobs.handle(raw, "message-1", 1)  # upstream answered 408; the worker died before recording it
        assert stack.job(job_id)["status"] == "running"
        return await stack.jobs.handle(raw, "message-1", 2)  # the host's redelivery of the same message

    redelivered = with_open_runtime(stack, deliveries)
    assert redelivered.action == "failed"
    job = stack.job(job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "JobAbandoned" and job["attempts"] == 1
    assert sim.stats()["requests"] == 1  # never sent again


def test_a_success_overrules_the_abandonment_a_redelivery_decided_while_the_first_delivery_was_at_work(
    job_stack: Callable[..., JobStack], sim: SimControl
) -> None:
    """The host may hand a message out again while its first delivery still runs: the second fails the job (its request
    may be at work upstream), and the first, finishing with the images, proves that wrong. Upstream is asked once."""
    sim.configure(latency=60)  # the first delivery's generation is at work until the test releases it
    stack = job_stack()
    job_id = f"twice-at-once-{uuid.uuid4().hex[:6]}"
    raw = json.dumps({"id": job_id, "prompt": "one at a time, twice"})

    async def deliveries() -> tuple[Any, Any]:
        first = asyncio.create_task(stack.jobs.handle(raw, "message-1", 1))
        await asyncio.to_thread(sim.wait, {"in_flight": 1})
        second = await stack.jobs.handle(raw, "message-1", 2)  # the same message, while the first is at work
        await asyncio.to_thread(sim.release)
        return await first, second

    first, second = with_open_runtime(stack, deliveries)
    assert (second.action, first.action) == ("failed", "succeeded")
    job = stack.job(job_id)
    assert job["status"] == "succeeded" and job["error"] is None and job["result"]["images"]
    assert [e["event"] for e in job["events"]][-2:] == ["failed", "succeeded"]
    assert sim.stats()["requests"] == 1
