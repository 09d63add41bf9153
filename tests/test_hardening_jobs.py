"""Jobs at their edges: the record is the one truth of what a job generates, and no failure is billed twice.

Against real Azurite and the images simulator. Failures are injected through constructors: a
storage transport that fails chosen requests before they are sent, a job store that fails a
chosen write, a clock the test moves.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import AioHttpTransport
from azure.storage.blob import BlobServiceClient

from local.azurite import Azurite
from local.queue_runner import SimulatedCrash
from shared.callers import key_caller
from shared.jobs import Jobs, JobStatus, JobStore, StoredJob
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import SimControl
from tests.test_hardening_faults import app_client
from tests.test_jobs import MAX_DEQUEUE_COUNT, CrashingStore, JobStack, ManualClock, drop

SUBMIT = "/openai/deployments/gpt-image-1-mini/images/generations:submit?api-version=2025-04-01-preview"
START = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


class FailingTransport(AioHttpTransport):
    """The storage clients' real transport, except that requests ``fail`` picks raise before they are sent."""

    def __init__(self, fail: Callable[[str, str], BaseException | None]) -> None:
        super().__init__()
        self.fail = fail
        self.failed = 0

    async def send(self, request: Any, **kwargs: Any) -> Any:
        error = self.fail(request.method, urlsplit(request.url).path)
        if error is not None:
            self.failed += 1
            raise error
        return await super().send(request, **kwargs)


def settings_for(make_settings: Callable[..., Settings], **overrides: str) -> Settings:
    return make_settings(IMAGES_QUEUE=f"hard-{uuid.uuid4().hex[:12]}", IMAGES_UPSTREAM_TIMEOUT_SECONDS="30", **overrides)


def archived_prompt(azurite: Azurite, job_id: str) -> str:
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("images")
    record: dict[str, Any] = json.loads(container.download_blob(f"jobs/{job_id}/record.json").readall())
    return str(record["prompt"])


# --------------------------------------------------------------------------- idempotency


async def test_ten_concurrent_submits_with_one_key_have_one_winner_and_only_its_body_is_generated(
    make_settings: Callable[..., Settings], azurite: Azurite, sim: SimControl
) -> None:
    settings = settings_for(make_settings)
    stack = JobStack(settings, azurite)
    winners: dict[str, str] = {}
    async with app_client(settings) as client:
        for _round in range(3):
            key = f"race-{uuid.uuid4().hex[:8]}"
            bodies = [{"prompt": f"body {i} of {key}"} for i in range(10)]
            answers = await asyncio.gather(*(client.post(SUBMIT, json=b, headers={"Idempotency-Key": key}) for b in bodies))
            statuses = [a.status_code for a in answers]
            assert sorted(statuses) == [202] + [409] * 9, [a.text for a in answers]
            winner = statuses.index(202)
            winners[answers[winner].json()["id"]] = bodies[winner]["prompt"]  # the job: the key scoped by deployment
    queued = [json.loads(m.content) for m in stack.queue().peek_messages(max_messages=32)]
    # One message per job, naming it (a claim check), and its record carries the winner's body: no loser left anything behind.
    assert sorted(m["job"] for m in queued) == sorted(winners) and all(set(m) == {"job"} for m in queued)
    assert {job_id: stack.job(job_id)["request"]["prompt"] for job_id in winners} == winners
    stack.start_runner()
    try:
        stack.runner.drain(received=3)
    finally:
        stack.stop()
    for job_id, prompt in winners.items():
        assert stack.job(job_id)["status"] == "succeeded"
        assert archived_prompt(azurite, job_id) == prompt
    assert sim.stats()["generations"] == 3


async def test_a_crash_between_record_and_enqueue_is_repaired_by_the_status_read(
    make_settings: Callable[..., Settings], azurite: Azurite, sim: SimControl
) -> None:
    settings = settings_for(make_settings)
    queue_path = f"/devstoreaccount1/{settings.queue_name}/messages"
    sends = {"count": 0}

    def first_send_dies(method: str, path: str) -> BaseException | None:
        if method == "POST" and path == queue_path:
            sends["count"] += 1
            return SimulatedCrash("the process died before the message was sent") if sends["count"] == 1 else None
        return None

    clock = ManualClock(START)
    runtime = Runtime(
        settings, storage_options={"transport": FailingTransport(first_send_dies)}, jobs=lambda service: Jobs(service, MAX_DEQUEUE_COUNT, clock=clock)
    )
    jobs = (await runtime.open()).jobs
    stack = JobStack(settings, azurite)
    job_id = f"lost-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(SimulatedCrash):
            await jobs.submit(job_id, "gpt-image-1-mini", {"prompt": "accepted, then the process died"}, caller=key_caller())
        assert (await jobs.status(job_id, key_caller()) or {})["status"] == "notRunning"
        assert stack.queue().peek_messages() == []  # nothing repaired while the submission may still be under way
        clock.advance(3600)
        assert (await jobs.status(job_id, key_caller()) or {})["status"] == "notRunning"
        [message] = stack.queue().receive_messages()
        assert json.loads(message.content) == {"job": job_id}  # the record holds the request
        clock.advance(3600)
        await jobs.status(job_id, key_caller())
        assert stack.queue().peek_messages() == []  # repaired once
        outcome = await jobs.handle(message.content, message.id, 1)
    finally:
        await runtime.close()
    assert outcome.action == "succeeded"
    assert stack.job(job_id)["status"] == "succeeded"
    assert sim.stats()["generations"] == 1


def test_a_stray_message_for_an_existing_job_is_refused_and_only_the_record_s_body_is_generated(
    make_settings: Callable[..., Settings], azurite: Azurite, sim: SimControl
) -> None:
    stack = JobStack(settings_for(make_settings), azurite)
    job_id = f"stray-{uuid.uuid4().hex[:8]}"

    async def submit() -> None:
        await stack.runtime.open()
        try:
            await stack.jobs.submit(job_id, "gpt-image-1-mini", {"prompt": "the submitted body"}, caller=key_caller())
        finally:
            await stack.runtime.close()

    asyncio.run(submit())
    drop(stack.queue(), {"id": job_id, "prompt": "a stray body"})
    drop(stack.queue(), {"id": job_id, "deployment": "gpt-image-1", "prompt": "the submitted body"})
    stack.start_runner()
    try:
        stats = stack.runner.drain(received=3)
    finally:
        stack.stop()
    actions = sorted(o.action for o in stats.outcomes)
    assert actions == ["invalid", "invalid", "succeeded"], stats.outcomes
    assert all("differs from the job's record" in o.detail for o in stats.outcomes if o.action == "invalid")
    assert stack.job(job_id)["status"] == "succeeded"
    assert archived_prompt(azurite, job_id) == "the submitted body"
    assert sim.stats()["generations"] == 1


# --------------------------------------------------------------------------- one classification of failures


class FailingClaims(JobStore):
    """The real store, except that every claim (the write that marks a job running) raises a bug's exception."""

    async def replace(self, stored: StoredJob) -> bool:
        if stored.record.status is JobStatus.RUNNING:
            raise KeyError("a bug before anything was sent upstream")
        return await super().replace(stored)


def test_an_unexpected_failure_before_sending_is_retried_and_failed_on_the_last_dequeue(
    make_settings: Callable[..., Settings], azurite: Azurite, sim: SimControl
) -> None:
    stack = JobStack(settings_for(make_settings), azurite, store=FailingClaims)
    job_id = f"bug-{uuid.uuid4().hex[:8]}"
    drop(stack.queue(), {"id": job_id, "prompt": "x"})
    stack.start_runner()
    try:
        stats = stack.runner.drain(received=MAX_DEQUEUE_COUNT)
    finally:
        stack.stop()
    job = stack.job(job_id)
    assert job["status"] == "failed" and job["lease"] is None
    assert job["error"]["dequeue_count"] == MAX_DEQUEUE_COUNT and "KeyError" in job["error"]["message"]
    assert stats.retried == MAX_DEQUEUE_COUNT - 1 and stats.poisoned == 1
    assert sim.stats()["requests"] == 0


@pytest.mark.parametrize(
    "error", [RuntimeError("a bug in the archive step"), HttpResponseError("storage refused the write")], ids=["bug", "storage"]
)
def test_a_failure_after_upstream_answered_fails_the_job_and_is_never_redelivered(
    make_settings: Callable[..., Settings], azurite: Azurite, sim: SimControl, error: Exception
) -> None:
    job_id = f"after-{uuid.uuid4().hex[:8]}"

    def images_fail(method: str, path: str) -> BaseException | None:
        return error if method == "PUT" and f"/images/jobs/{job_id}/" in path else None

    stack = JobStack(settings_for(make_settings), azurite, tap=FailingTransport(images_fail))
    drop(stack.queue(), {"id": job_id, "prompt": "billed once"})
    stack.start_runner()
    try:
        stats = stack.runner.drain(received=1)
    finally:
        stack.stop()
    job = stack.job(job_id)
    assert job["status"] == "failed" and job["lease"] is None
    assert "not repeated" in job["error"]["message"].lower()
    assert stats.retried == 0 and stats.poisoned == 0
    assert sim.stats()["generations"] == 1


async def test_a_running_job_whose_lease_ended_long_ago_is_failed_when_read(
    make_settings: Callable[..., Settings], azurite: Azurite, sim: SimControl
) -> None:
    clock = ManualClock(START)
    settings = settings_for(make_settings)
    runtime = Runtime(settings, jobs=lambda service: Jobs(service, MAX_DEQUEUE_COUNT, store=CrashingStore(service, JobStatus.RUNNING, "after"), clock=clock))
    jobs = (await runtime.open()).jobs
    job_id = f"orphan-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(SimulatedCrash):
            await jobs.handle(json.dumps({"id": job_id, "prompt": "x"}), "m-1", 1)
        clock.advance(settings.upstream_timeout_seconds)
        assert (await jobs.status(job_id, key_caller()) or {})["status"] == "running"  # its lease is still live
        clock.advance(24 * 3600)
        view = await jobs.status(job_id, key_caller()) or {}
    finally:
        await runtime.close()
    assert view["status"] == "failed" and "abandoned" in view["error"]["message"]
    stored = JobStack(settings, azurite).job(job_id)
    assert stored["status"] == "failed" and stored["lease"] is None


# --------------------------------------------------------------------------- messages that break parsers


NASTY_MESSAGES: dict[str, bytes] = {
    "deep": b'{"id": "deep-ID", "prompt": "x", "user": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "nan": b'{"id": "nan-ID", "prompt": "x", "n": NaN}',
    "huge-number": b'{"id": "huge-ID", "prompt": "x", "n": 1e400}',
    "surrogate": b'{"id": "surrogate-ID", "prompt": "\\ud800 a picture"}',
    "duplicate-keys": b'{"id": "dup-ID", "prompt": "x", "prompt": "y"}',
    "not-utf8": b'{"id": "bytes-ID", "prompt": "\xff\xfe"}',
    "huge-int": b'{"id": "int-ID", "prompt": "x", "n": 1' + b"0" * 5000 + b"}",
}


@pytest.mark.parametrize("name", list(NASTY_MESSAGES))
def test_a_message_that_breaks_parsers_is_consumed_with_a_reason_and_never_generated(
    make_settings: Callable[..., Settings], azurite: Azurite, sim: SimControl, name: str
) -> None:
    stack = JobStack(settings_for(make_settings), azurite)
    suffix = uuid.uuid4().hex[:8]
    raw = NASTY_MESSAGES[name].replace(b"ID", suffix.encode())
    stack.queue().send_message(base64.b64encode(raw).decode() if name == "not-utf8" else raw.decode("utf-8", "surrogatepass"))
    stack.start_runner()
    try:
        stats = stack.runner.drain(received=1)
    finally:
        stack.stop()
    assert stats.retried == 0 and stats.poisoned == 0
    assert [o.action for o in stats.outcomes] == ["invalid"] and stats.outcomes[0].detail
    assert sim.stats()["requests"] == 0
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    jobs = blobs.get_container_client(stack.settings.jobs_container)
    records = [b.name for b in jobs.list_blobs() if suffix in b.name] if jobs.exists() else []
    for record_name in records:  # a record, if the id was readable, says why it failed
        record = json.loads(jobs.download_blob(record_name).readall())
        assert record["status"] == "failed" and record["error"]["message"]
