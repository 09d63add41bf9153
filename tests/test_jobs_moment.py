"""A throttled job runs at its moment: the 429's Retry-After, not the next whole second the queue shows it at.

The queue counts visibility in whole seconds and the host polls an empty queue once a second, so a
continuation made visible "after Retry-After" wakes up to two seconds late, every time the quota turns
over. The continuation shows up a little early instead, and the delivery waits out the rest in process.

Against real Azurite (the job record, the continuation on the queue) and the images simulator (its quota
and its clock); the handler's clock and its wait are the test's, so nothing here sleeps.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest

from local.azurite import Azurite
from shared.errors import ServiceError
from shared.jobs import Jobs
from shared.jobs.handler import MOMENT_HOLD_SECONDS, POLL_LEAD_SECONDS, continuation_delay
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import SIM_KEY, SimControl
from tests.test_jobs import MAX_DEQUEUE_COUNT, JobStack, ManualClock

DEPLOYMENT = "gpt-image-1-mini"
START = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
RETRY_AFTER = 9.4  # what the simulator's 429 asks for below (its window ends that far ahead)


class Waits:
    """The handler's wait: records it and moves the handler's and the simulator's clocks by it."""

    def __init__(self, clock: ManualClock, sim: SimControl) -> None:
        self.clock, self.sim = clock, sim
        self.waited: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waited.append(seconds)
        self.clock.advance(seconds)
        self.sim.clock(advance=seconds)


def _quota_spent(sim: SimControl, window: float) -> None:
    """The deployment's one request of a window, taken now; the window then ends ``window`` seconds from now."""
    sim.clock(frozen=True)
    sim.configure(quota_requests=1, quota_window_seconds=60)
    taken = httpx.post(f"{sim.url}/openai/deployments/{DEPLOYMENT}/images/generations?api-version=2025-04-01-preview", json={"prompt": "first"}, headers={"api-key": SIM_KEY})
    assert taken.status_code == 200
    sim.clock(advance=60 - window)


@dataclass
class Throttled:
    """A runtime whose jobs run on the test's clock and wait through it, its deployment's quota spent for 9.4 s."""

    stack: JobStack
    clock: ManualClock
    waits: Waits
    jobs: Jobs


@pytest.fixture()
async def throttled(make_settings: Callable[..., Settings], azurite: Azurite, sim: SimControl) -> AsyncIterator[Throttled]:
    settings = make_settings(IMAGES_QUEUE=f"moment-{uuid.uuid4().hex[:10]}")
    clock = ManualClock(START)
    waits = Waits(clock, sim)
    runtime = Runtime(settings, jobs=lambda service: Jobs(service, MAX_DEQUEUE_COUNT, clock=clock, sleep=waits))
    jobs = (await runtime.open()).jobs
    _quota_spent(sim, RETRY_AFTER)
    try:
        yield Throttled(JobStack(settings, azurite), clock, waits, jobs)
    finally:
        await runtime.close()


async def test_a_throttled_job_shows_up_before_its_moment_and_is_sent_upstream_then(throttled: Throttled, sim: SimControl) -> None:
    stack, clock, waits, jobs = throttled.stack, throttled.clock, throttled.waits, throttled.jobs
    message = json.dumps({"id": f"moment-{uuid.uuid4().hex[:8]}", "deployment": DEPLOYMENT, "prompt": "a lighthouse at dusk"})
    deferred = await jobs.handle(message, "delivery-1", 1)
    assert deferred.action == "deferred", deferred
    stored = stack.job(deferred.job_id or "")
    assert stored["status"] == "notRunning" and stored["events"][-1]["event"] == "throttled"
    moment = (dt.datetime.fromisoformat(stored["not_before"]) - START).total_seconds()
    assert RETRY_AFTER <= moment <= RETRY_AFTER + min(1.0, 0.1 * RETRY_AFTER)  # Retry-After and a little jitter, never less
    # The continuation is on the queue, still invisible: Azurite shows it after whole seconds that end before the moment.
    queue = stack.queue()
    assert queue.get_queue_properties().approximate_message_count == 1 and queue.peek_messages() == []

    # It shows up 1.5 s early (the whole seconds, then the host's poll): the delivery waits the rest, then sends it.
    clock.advance(moment - 1.5)
    sim.clock(advance=moment - 1.5)
    done = await jobs.handle(json.dumps({"job": deferred.job_id}), "delivery-2", 1)
    assert done.action == "succeeded", done
    assert waits.waited == [pytest.approx(1.5)]
    finished = stack.job(deferred.job_id or "")
    assert finished["status"] == "succeeded" and "not_before" not in finished  # the moment is spent
    assert sim.stats()["throttled"] == 1 and sim.stats()["generations"] == 2  # one 429, then the job's one generation


async def test_a_continuation_shown_long_before_its_moment_is_sent_on_without_calling_upstream(throttled: Throttled, sim: SimControl) -> None:
    stack, jobs = throttled.stack, throttled.jobs
    job_id = f"early-{uuid.uuid4().hex[:8]}"
    deferred = await jobs.handle(json.dumps({"id": job_id, "deployment": DEPLOYMENT, "prompt": "a harbour at dawn"}), "delivery-1", 1)
    assert deferred.action == "deferred"
    before = stack.job(job_id)
    generations = sim.stats()["generations"]
    # Another instance's clock ran seconds ahead, or an older message of the job: far too early to wait for.
    early = await jobs.handle(json.dumps({"job": job_id}), "delivery-2", 1)
    assert early.action == "deferred" and "sent on" in early.detail
    assert throttled.waits.waited == [] and sim.stats()["generations"] == generations  # nothing sent upstream, nothing waited
    after = stack.job(job_id)
    assert after["attempts"] == before["attempts"] and after["not_before"] == before["not_before"]  # not claimed
    assert stack.queue().get_queue_properties().approximate_message_count == 2  # the first continuation, and this one


def test_a_continuation_shows_up_before_its_moment_never_after_and_the_wait_covers_the_rest() -> None:
    rng = random.Random(7)
    for retry_after in (0.01, 0.9, 1.99, 2.5, 10.0, 59.0):
        for _ in range(20):
            shown, moment, detail = continuation_delay(ServiceError(429, "429", "throttled", retry_after=retry_after, transient=True), rng)
            assert moment is not None and retry_after <= moment <= retry_after + min(1.0, 0.1 * retry_after)
            assert shown == int(shown) and 0 <= shown <= max(0.0, moment - POLL_LEAD_SECONDS)
            assert shown > moment - POLL_LEAD_SECONDS - 1 or shown == 0
            assert f"{moment:.1f} s" in detail
    # Shown at most POLL_LEAD_SECONDS + 1 s early and picked up within a poll: the handler waits that out.
    assert POLL_LEAD_SECONDS + 1 < MOMENT_HOLD_SECONDS
