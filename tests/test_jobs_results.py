"""The results queue: who hears of a job's end, and a post that always fits a queue message.

Its readers are services the operator lets read it. The entra way, several callers share one
deployment, and a result carries links that open the caller's images: the queue carries the queue's
own jobs only, and an HTTP caller reads its job at its Operation-Location. The key way has one owner,
and the queue carries every job.

Against real Azurite (the queues, the records, the links) and the images simulator (its hostile
``[[huge-revised-prompt]]`` answer); the Functions host's part is local/queue_runner.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from local.azurite import Azurite
from shared.settings import Settings
from tests.callers import ENTRA, principal
from tests.conftest import SimControl
from tests.test_jobs import JobStack, drop

SUBMIT = "/openai/deployments/gpt-image-1-mini/images/generations:submit?api-version=2025-04-01-preview"
QUEUE_MESSAGE_LIMIT = 64 * 1024  # what Azure Storage accepts in one message


@pytest.fixture()
def stacks(make_settings: Callable[..., Settings], azurite: Azurite, sim: SimControl) -> Iterator[Callable[..., JobStack]]:
    """Job stacks with a results queue of their own, each on a fresh queue; stopped after the test."""
    made: list[JobStack] = []

    def make(**overrides: str) -> JobStack:
        suffix = uuid.uuid4().hex[:10]
        settings = make_settings(IMAGES_QUEUE=f"res-{suffix}", IMAGES_RESULTS_QUEUE=f"results-{suffix}", IMAGES_UPSTREAM_TIMEOUT_SECONDS="30", **overrides)
        made.append(JobStack(settings, azurite))
        return made[-1]

    yield make
    for stack in made:
        stack.stop()


def _posted(stack: JobStack) -> dict[str, dict[str, object]]:
    """Every post on the results queue, by job id (read, not consumed)."""
    messages = stack.queue(stack.settings.results_queue).peek_messages(max_messages=32)
    assert all(len(m.content) <= QUEUE_MESSAGE_LIMIT for m in messages)
    return {post["id"]: post for post in (json.loads(m.content) for m in messages)}


@pytest.mark.parametrize("mode", ["key", "entra"])
def test_the_results_queue_hears_of_the_queues_own_jobs_and_the_key_way_of_every_job(
    stacks: Callable[..., JobStack], sim: SimControl, mode: str
) -> None:
    stack = stacks(**(ENTRA if mode == "entra" else {}))
    api = stack.start_api()
    headers = principal("team-a") if mode == "entra" else {}
    with httpx.Client(base_url=api.url, timeout=30) as client:
        accepted = client.post(SUBMIT, json={"prompt": "team a's lighthouse"}, headers=headers)
        assert accepted.status_code == 202, accepted.text
        submitted = accepted.json()["id"]
        queued = f"queued-{uuid.uuid4().hex[:8]}"
        drop(stack.queue(), {"id": queued, "prompt": "the queue's harbour"})
        stack.start_runner()
        stack.finished(submitted)
        stack.finished(queued)
        # The submitter reads its own job where it always could: its Operation-Location.
        view = client.get(accepted.headers["Operation-Location"], headers=headers).json()
        assert view["status"] == "succeeded" and view["result"]["data"][0]["url"]
    posted = _posted(stack)
    assert posted[queued]["status"] == "succeeded"
    if mode == "entra":
        assert submitted not in posted  # its links would open team a's images to whoever reads the results queue
        assert stack.job(submitted)["notified"] is True  # nothing owed: the record says so, and no post is tried again
    else:
        assert posted[submitted]["status"] == "succeeded"
    assert sim.stats()["generations"] == 2


def test_a_result_too_large_for_a_queue_message_is_posted_without_upstreams_words(stacks: Callable[..., JobStack], sim: SimControl) -> None:
    # Upstream revises every one of ten prompts at length, not in ASCII: as JSON, far more than 64 KiB.
    stack = stacks()
    job_id = f"wordy-{uuid.uuid4().hex[:8]}"
    drop(stack.queue(), {"id": job_id, "prompt": "ten shelves [[huge-revised-prompt]]", "n": 10})
    stack.start_runner()
    stats = stack.finished(job_id)
    # Posted at the first try: no delivery raised for the host to redeliver, nothing poisoned (a slow delivery whose
    # message showed up again meanwhile ends "busy", which is not what this test is about).
    assert "succeeded" in [o.action for o in stats.outcomes if o.job_id == job_id] and stats.retried == 0 and stats.poisoned == 0
    job = stack.job(job_id)
    assert job["status"] == "succeeded" and job["notified"] is True
    assert all(0 < len(i["revised_prompt"]) <= 4000 for i in job["result"]["images"])  # the record keeps them (bounded)
    post = _posted(stack)[job_id]
    assert post["status"] == "succeeded" and set(post) == {"id", "status", "result", "omitted"}
    result = post["result"]
    assert isinstance(result, dict) and [i["name"] for i in result["data"]] == [i["name"] for i in job["result"]["images"]]
    for item in result["data"]:
        assert set(item) == {"url", "name"} and httpx.get(item["url"]).content.startswith(b"\x89PNG")
    assert "cost" in result and "result.data[].revised_prompt" in post["omitted"] and "result.usage" in post["omitted"]
    assert stack.queue(stack.settings.poison_queue_name).peek_messages() == []
