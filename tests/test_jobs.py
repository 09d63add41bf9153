"""Background generation through the storage queue, against real Azurite and the simulator.

The queue runner drives the same handler as the Functions trigger with the host's
semantics (dequeue count, visibility, poison queue), so these tests prove what
the host will do in Azure: no lost job, never two generations for one job.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient
from fastapi import FastAPI, Request
from fastapi.responses import Response

from local.azurite import Azurite
from local.queue_runner import QueueRunner, SimulatedCrash
from local.servers import ServerThread, serve_in_thread
from shared import jobs as jobs_module
from shared.api import create_app
from shared.jobs import host_queue_settings
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import SimControl

SUBMIT = "/openai/deployments/{}/images/generations:submit?api-version=2025-04-01-preview"


class JobStack:
    """A queue runner (and optionally the API) sharing settings with a fresh queue."""

    def __init__(self, settings: Settings, azurite: Azurite) -> None:
        self.settings = settings
        self.azurite = azurite
        self.runner: QueueRunner | None = None
        self.api: ServerThread | None = None

    def start_runner(self, storage_options: dict[str, Any] | None = None, **options: Any) -> QueueRunner:
        runtime = Runtime(self.settings, storage_options=storage_options)  # the runner's loop gets its own
        options = {"retry_delay": 0.2, "lease_seconds": 2, "max_poll_interval": 0.3, **options}
        self.runner = QueueRunner(
            self.azurite.connection_string, self.settings.queue_name, runtime.handle_queue_message, host_queues=host_queue_settings(), on_stop=runtime.close, **options
        )
        return self.runner.start_in_thread()

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

    def job(self, job_id: str) -> dict[str, Any] | None:
        blob = BlobServiceClient.from_connection_string(self.azurite.connection_string).get_blob_client(self.settings.jobs_container, f"{job_id}.json")
        if not blob.exists():
            return None
        return json.loads(blob.download_blob().readall())  # type: ignore[no-any-return]

    def wait_for(self, job_ids: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = {j: self.job(j) for j in job_ids}
            if all(f and f["status"] in ("succeeded", "failed") for f in found.values()):
                return found  # type: ignore[return-value]
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs not finished: { {j: (f or {}).get('status') for j, f in found.items()} }")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.runner:
            self.runner.stop()
        if self.api:
            self.api.stop()


@pytest.fixture()
def job_stack(make_settings: Callable[..., Settings], azurite: Azurite, sim: SimControl) -> Iterator[Callable[..., JobStack]]:
    made: list[JobStack] = []

    def make(**overrides: str) -> JobStack:
        name = f"jobs-{uuid.uuid4().hex[:12]}"
        settings = make_settings(IMAGES_QUEUE=name, IMAGES_UPSTREAM_TIMEOUT_SECONDS="30", **overrides)
        stack = JobStack(settings, azurite)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.stop()
    jobs_module.step_hook = None


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
    finished = stack.wait_for(valid + filtered + refused, timeout=90)
    for job_id in valid:
        job = finished[job_id]
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 1
        assert job["result"]["images"][0]["name"].startswith(f"jobs/{job_id}/")
    for job_id in filtered:
        assert finished[job_id]["status"] == "failed"
        assert finished[job_id]["error"]["code"] == "contentFilter"
    assert finished[refused[0]]["error"]["param"] == "size"
    assert finished[refused[1]]["error"]["code"] == "missing_required_parameter"
    deadline = time.monotonic() + 10
    while stack.runner and stack.runner.stats.received < 30 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert sim.stats()["generations"] == len(valid)  # one generation per valid job, none for the rest
    assert stack.runner and stack.runner.stats.poisoned == 0
    assert stack.queue().peek_messages(max_messages=32) == []  # the malformed ones did not block or linger


def test_throttling_storm_ends_with_every_job_succeeded(job_stack: Callable[..., JobStack], sim: SimControl) -> None:
    sim.configure(quota_requests=2, quota_window_seconds=1)
    stack = job_stack(IMAGES_MAX_CONCURRENT_UPSTREAM="4")
    queue = stack.queue()
    ids = [f"storm-{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    for job_id in ids:
        drop(queue, {"id": job_id, "prompt": "storm"})
    stack.start_runner()
    finished = stack.wait_for(ids, timeout=120)
    assert all(j["status"] == "succeeded" for j in finished.values())
    stats = sim.stats()
    assert stats["throttled"] > 0
    assert stats["generations"] == len(ids)
    assert stack.runner and stack.runner.stats.poisoned == 0
    assert stack.queue(stack.settings.poison_queue_name).peek_messages() == []
    assert any(e["event"] == "throttled" for j in finished.values() for e in j["events"])


@pytest.mark.parametrize("step", ["after_images", "after_archive", "after_job_record"])
def test_crash_at_each_step_never_loses_a_job_or_generates_twice(job_stack: Callable[..., JobStack], sim: SimControl, step: str) -> None:
    stack = job_stack(IMAGES_RESULTS_QUEUE=f"results-{uuid.uuid4().hex[:8]}")
    crashed: list[str] = []

    def crash_once(name: str) -> None:
        if name == step and not crashed:
            crashed.append(name)
            raise SimulatedCrash(name)

    jobs_module.step_hook = crash_once
    job_id = f"crash-{step.replace('_', '-')}-{uuid.uuid4().hex[:6]}"

    def crash_before_the_record(request: Any) -> None:
        # A job writes its images, then its record: crashing as the record's upload starts is crashing after the images.
        http = request.http_request
        if http.method == "PUT" and http.url.split("?")[0].endswith(f"/{job_id}/record.json"):
            crash_once("after_images")

    drop(stack.queue(), {"id": job_id, "prompt": "survive", "n": 2})
    stack.start_runner(storage_options={"raw_request_hook": crash_before_the_record})
    job = stack.wait_for([job_id], timeout=60)[job_id]
    if step == "after_job_record":
        deadline = time.monotonic() + 20
        while not (stack.job(job_id) or {}).get("notified") and time.monotonic() < deadline:
            time.sleep(0.2)
    assert crashed == [step]
    assert job["status"] == "succeeded"
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
    assert stack.runner and stack.runner.stats.crashed == 1


def test_always_failing_job_is_failed_and_poisoned_after_five_dequeues(job_stack: Callable[..., JobStack], sim: SimControl) -> None:
    sim.configure(fail_next=1000)
    stack = job_stack()
    job_id = f"doomed-{uuid.uuid4().hex[:6]}"
    drop(stack.queue(), {"id": job_id, "prompt": "never"})
    stack.start_runner()
    job = stack.wait_for([job_id], timeout=60)[job_id]
    assert job["status"] == "failed"
    assert job["error"]["code"] == "UpstreamError"
    assert job["error"]["dequeue_count"] == 5
    deadline = time.monotonic() + 10
    poison = stack.queue(stack.settings.poison_queue_name)
    while not poison.peek_messages() and time.monotonic() < deadline:
        time.sleep(0.2)
    poisoned = poison.peek_messages(max_messages=5)
    assert len(poisoned) == 1
    assert json.loads(poisoned[0].content)["id"] == job_id
    assert sim.stats()["failed"] == 5
    assert stack.runner and stack.runner.stats.retried == 4 and stack.runner.stats.poisoned == 1


def test_redelivered_finished_job_is_consumed_without_upstream(job_stack: Callable[..., JobStack], sim: SimControl) -> None:
    stack = job_stack()
    job_id = f"twice-{uuid.uuid4().hex[:6]}"
    drop(stack.queue(), {"id": job_id, "prompt": "once"})
    stack.start_runner()
    stack.wait_for([job_id])
    drop(stack.queue(), {"id": job_id, "prompt": "once"})
    deadline = time.monotonic() + 20
    while stack.runner and stack.runner.stats.succeeded < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.runner and [o.action for o in stack.runner.stats.outcomes] == ["succeeded", "duplicate"]
    assert sim.stats()["generations"] == 1


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
        view = poll(client, location)
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
        assert first.json()["id"] == second.json()["id"] == key
        conflict = client.post(path, json={"prompt": "different"}, headers=headers)
        assert conflict.status_code == 409 and conflict.json()["error"]["param"] == "Idempotency-Key"
        bad = client.post(path, json={"prompt": "x"}, headers={"Prefer": "respond-async", "Idempotency-Key": "no spaces allowed"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "Idempotency-Key"
        invalid = client.post(path, json={"prompt": "x", "n": 99}, headers={"Prefer": "respond-async"})
        assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "n"
        stack.start_runner()
        view = poll(client, first.headers["Operation-Location"])
        assert view["status"] == "succeeded"
    assert sim.stats()["generations"] == 1  # two submissions, two messages, one generation


def test_filtered_job_reports_error_over_http(job_stack: Callable[..., JobStack], sim: SimControl) -> None:
    stack = job_stack()
    api = stack.start_api()
    stack.start_runner()
    with httpx.Client(base_url=api.url, timeout=30) as client:
        accepted = client.post(SUBMIT.format("dall-e-3"), json={"prompt": "x [[filter:image]]"})
        view = poll(client, accepted.headers["Operation-Location"])
    assert view["status"] == "failed"
    assert view["error"]["code"] == "contentFilter"
    assert view["error"]["message"] == "Generated image was filtered as a result of our safety system."
    assert "result" not in view


def poll(client: httpx.Client, location: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = client.get(location)
        assert view.status_code == 200, view.text
        if view.json()["status"] in ("succeeded", "failed"):
            return view.json()  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, view.json()
        time.sleep(0.2)


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
        job = stack.wait_for([job_id])[job_id]
        time.sleep(0.5)
    finally:
        upstream.stop()
    assert job["status"] == "failed"
    assert "base64" in job["error"]["message"]
    assert calls == ["gpt-image-1-mini"]
    assert stack.runner and stack.runner.stats.retried == 0
