"""Any request the API accepts can be queued and deferred: the largest ones, through every script of the queue.

A storage-queue message holds 64 KB, and a 32,000-character prompt of non-ASCII text is twice that as
UTF-8 (more once escaped). So the app queues a claim check, ``{"job": id}``: the job record holds the
request. Each script here runs the largest generation and the largest JSON edit (16 archived images, a
mask, every parameter, the longest prompt) through the host's queue semantics (local/queue_runner.py):
submitted and run, throttled and continued, failed before any work and redelivered. A caller's own raw
message (the documented shape) still works, continuation included. Every message the app sent is seen
on its way through the runner, and must be a claim check.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from local.azurite import Azurite
from local.queue_runner import QueueRunner
from shared import edits
from shared.callers import key_caller
from shared.host import host_queue_settings
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import SIM_KEY, SimControl
from tests.test_edits import image_bytes, mask_bytes

API = "?api-version=2025-04-01-preview"
DEPLOYMENT = "gpt-image-1.5"
PROMPT_LIMIT = 32_000
QUEUE_MESSAGE_LIMIT = 64 * 1024
# Three- and four-byte UTF-8: about 100 KB of prompt, which no queue message could carry.
PROMPT = ("夜明けの灯台と霧🏮" * PROMPT_LIMIT)[:PROMPT_LIMIT]


class Harness:
    """The app in process for submissions, and a queue runner (the host's stand-in) with a runtime of its own."""

    def __init__(self, settings: Settings, azurite: Azurite, client: httpx.AsyncClient) -> None:
        self.settings, self.azurite, self.client = settings, azurite, client
        self.runtime = Runtime(settings)
        self.messages: list[bytes] = []
        self.runner: QueueRunner | None = None

    async def handle(self, message: Any) -> Any:
        self.messages.append(message.get_body())
        return await self.runtime.handle_queue_message(message)

    def start(self) -> QueueRunner:
        self.runner = QueueRunner(
            self.azurite.connection_string, self.settings.queue_name, self.handle, host_queues=host_queue_settings(),
            retry_delay=0, lease_seconds=5, max_poll_interval=0.1, on_stop=self.runtime.close,
        )  # fmt: skip
        return self.runner.start_in_thread()

    def ended(self, job_id: str) -> list[str]:
        """Wait until the job ended; what each delivery of it did, in order."""
        assert self.runner is not None
        stats = self.runner.wait_for(lambda s: any(o.job_id == job_id and o.action in ("succeeded", "failed") for o in s.outcomes), timeout=90)
        return [o.action for o in stats.outcomes if o.job_id == job_id]

    async def job(self, job_id: str) -> dict[str, Any]:
        answer = await self.client.get(f"/openai/operations/images/{job_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    def sent_by_the_app(self) -> list[dict[str, Any]]:
        """Every message the runner delivered that the app itself had sent (not dropped by a caller)."""
        decoded = [json.loads(body) for body in self.messages]
        return [m for m in decoded if "prompt" not in m]


@pytest.fixture()
async def harness(in_process: Callable[..., Any], make_settings: Callable[..., Settings], azurite: Azurite) -> Any:
    overrides = {"IMAGES_QUEUE": f"largest-{uuid.uuid4().hex[:10]}", "IMAGES_UPSTREAM_TIMEOUT_SECONDS": "60"}
    made = Harness(make_settings(**overrides), azurite, await in_process(**overrides))
    yield made
    if made.runner is not None:
        made.runner.stop()


async def largest_generation(harness: Harness) -> tuple[str, dict[str, Any]]:
    """The largest generation body the API takes: the longest prompt and every parameter."""
    body = {"prompt": PROMPT, "n": 10, "size": "1024x1024", "quality": "high", "output_format": "png", "background": "auto", "user": "u" * 64}
    return f"/openai/deployments/{DEPLOYMENT}/images/generations:submit{API}", body


async def largest_edit(harness: Harness) -> tuple[str, dict[str, Any]]:
    """The largest JSON edit: as many archived images as the family edits at once, a mask, every parameter, the longest prompt."""
    sources = [image_bytes(colour=(i * 15, 90, 200 - i * 10)) for i in range(16)]
    async with harness.runtime:  # the inputs are stored as the edit routes store uploads
        # As the caller who submits the edit below (key mode: the function key's caller) stores them.
        uploaded = await edits.check_uploads(harness.runtime.service, DEPLOYMENT, [("image[]", [data]) for data in sources], [mask_bytes()], key_caller())
        await edits.store_uploads(harness.runtime.service, uploaded, key_caller())
    assert uploaded.mask is not None
    body = {
        "image": [item.name for item in uploaded.images], "mask": uploaded.mask.name, "prompt": PROMPT, "n": 10, "size": "1024x1024",
        "quality": "high", "output_format": "png", "background": "auto", "input_fidelity": "high", "user": "u" * 64,
    }  # fmt: skip
    return f"/openai/deployments/{DEPLOYMENT}/images/edits:submit{API}", body


LARGEST = {"generation": largest_generation, "edit": largest_edit}


async def submit(harness: Harness, kind: str) -> str:
    path, body = await LARGEST[kind](harness)
    content = json.dumps(body, ensure_ascii=False).encode()  # raw UTF-8, as callers send it
    assert QUEUE_MESSAGE_LIMIT < len(content) <= harness.settings.max_body_bytes  # accepted by the API, far over a queue message
    accepted = await harness.client.post(path, content=content, headers={"Content-Type": "application/json"})
    assert accepted.status_code == 202, accepted.text
    return str(accepted.json()["id"])


def only_claim_checks(harness: Harness, job_id: str, count: int) -> None:
    sent = harness.sent_by_the_app()
    assert sent == [{"job": job_id}] * count  # the record holds the request; each message is a few bytes


def archived_prompt(harness: Harness, job_id: str) -> str:
    """The prompt the job's archive record (written by the service) says was asked."""
    blob = BlobServiceClient.from_connection_string(harness.azurite.connection_string).get_blob_client(harness.settings.images_container, f"jobs/{job_id}/record.json")
    return str(json.loads(blob.download_blob().readall())["prompt"])


def upstream_got_it_whole(sim: SimControl, kind: str) -> None:
    stats = sim.stats()
    assert stats["generations"] == 1 and stats["edits"] == (1 if kind == "edit" else 0)
    [seen] = [r for r in stats["recent"] if r["status"] == 200]
    if kind == "generation":  # the simulator keeps 500 characters of a string and counts the rest
        assert seen["body"]["prompt"].endswith(f"...(+{PROMPT_LIMIT - 500} chars)")


@pytest.mark.parametrize("kind", list(LARGEST))
async def test_the_largest_request_is_submitted_and_run(harness: Harness, sim: SimControl, kind: str) -> None:
    job_id = await submit(harness, kind)
    harness.start()
    assert harness.ended(job_id) == ["succeeded"]
    job = await harness.job(job_id)
    assert job["status"] == "succeeded" and len(job["result"]["data"]) == 10
    only_claim_checks(harness, job_id, 1)
    upstream_got_it_whole(sim, kind)
    assert archived_prompt(harness, job_id) == PROMPT


@pytest.mark.parametrize("kind", list(LARGEST))
async def test_the_largest_request_throttled_upstream_is_continued_by_its_claim_check(harness: Harness, sim: SimControl, kind: str) -> None:
    sim.clock(frozen=True)
    sim.configure(quota_requests=1, quota_window_seconds=60)
    taken = httpx.post(f"{sim.url}/openai/deployments/{DEPLOYMENT}/images/generations{API}", json={"prompt": "first"}, headers={"api-key": SIM_KEY})
    assert taken.status_code == 200  # the deployment's one request of this window
    sim.clock(advance=60 - 0.01)  # the window ends 10 ms from now: a 429 asking for 10 ms, a continuation that waits them out
    job_id = await submit(harness, kind)
    runner = harness.start()
    runner.wait_for(lambda s: any(o.job_id == job_id and o.action == "deferred" for o in s.outcomes))
    sim.clock(advance=1)  # the window has passed when the continuation shows up
    assert harness.ended(job_id) == ["deferred", "succeeded"]
    assert (await harness.job(job_id))["status"] == "succeeded"
    only_claim_checks(harness, job_id, 2)  # the submission and the continuation
    assert sim.stats()["throttled"] == 1


@pytest.mark.parametrize("kind", list(LARGEST))
async def test_the_largest_request_failed_before_any_work_is_redelivered_and_run(harness: Harness, sim: SimControl, kind: str) -> None:
    sim.configure(fail_next=1, fail_status=503)  # unable to handle it: nothing was made, the host may deliver it again
    job_id = await submit(harness, kind)
    runner = harness.start()
    assert harness.ended(job_id) == ["succeeded"]  # the first delivery raised for the host to redeliver
    assert runner.wait_for(lambda s: True).retried == 1
    only_claim_checks(harness, job_id, 2)  # the same message, delivered twice
    assert sim.stats()["failed"] == 1 and sim.stats()["generations"] == 1


async def test_a_caller_s_own_raw_message_still_runs_and_its_continuation_is_a_claim_check(harness: Harness, sim: SimControl) -> None:
    job_id = f"raw-{uuid.uuid4().hex[:8]}"
    message = json.dumps({"id": job_id, "deployment": DEPLOYMENT, "prompt": PROMPT[:20_000], "quality": "low"}, ensure_ascii=False)
    assert len(message.encode()) < QUEUE_MESSAGE_LIMIT  # what a caller can drop: the documented shape, under 64 KB
    queue = QueueClient.from_connection_string(harness.azurite.connection_string, harness.settings.queue_name)
    queue.create_queue()
    queue.send_message(message)
    sim.clock(frozen=True)
    sim.configure(quota_requests=1, quota_window_seconds=60)
    assert httpx.post(f"{sim.url}/openai/deployments/{DEPLOYMENT}/images/generations{API}", json={"prompt": "x"}, headers={"api-key": SIM_KEY}).status_code == 200
    sim.clock(advance=60 - 0.01)
    runner = harness.start()
    runner.wait_for(lambda s: any(o.job_id == job_id and o.action == "deferred" for o in s.outcomes))
    sim.clock(advance=1)
    assert harness.ended(job_id) == ["deferred", "succeeded"]
    assert harness.sent_by_the_app() == [{"job": job_id}]  # the caller's message, then the app's own continuation
    assert (await harness.job(job_id))["status"] == "succeeded"
