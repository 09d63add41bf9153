"""Deployment pools against three simulators over real HTTP and Azurite: fail over only when upstream did no work.

Each backend is its own simulator (its own port, quota and faults); every test counts what
each one was asked through its ``/_sim/stats``. The throttle state lives in a jobs container of
the test's own, so tests do not see each other's. Time that matters is injected (``FakeTime``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient as SyncBlobServiceClient
from azure.storage.blob.aio import BlobServiceClient
from PIL import Image

from local.azurite import Azurite
from local.servers import ServerThread, free_port, serve_in_thread
from local.simulator import SimulatorConfig, create_simulator
from shared import streaming
from shared.api import create_app
from shared.callers import key_caller
from shared.deadline import Deadline
from shared.errors import ServiceError
from shared.host import host_queue_settings
from shared.jobs.handler import POLL_LEAD_SECONDS, continuation_delay
from shared.models import parse_request
from shared.pool.clients import open_pools
from shared.pool.router import JOB_HOLD_SECONDS, Pools, PoolThrottled
from shared.pool.throttle import SLACK_SECONDS, ThrottleBoard
from shared.runtime import Runtime
from shared.service import new_generation_id, sync_prefix
from shared.settings import Settings
from tests.conftest import SIM_KEY, SimControl, settings_for

POOL = "images-pool"
PROMPT = {"prompt": "a lighthouse in fog", "size": "1024x1024", "quality": "low"}


@pytest.fixture(scope="module")
def backends() -> Iterator[list[tuple[ServerThread, SimControl]]]:
    servers = [serve_in_thread(create_simulator(SimulatorConfig(api_keys={SIM_KEY}, prewarm=False))) for _ in range(3)]
    controls = [SimControl(s.url) for s in servers]
    yield list(zip(servers, controls, strict=True))
    for server, control in zip(servers, controls, strict=True):
        control.release()
        control.http.close()
        server.stop()


@pytest.fixture()
def sims(backends: list[tuple[ServerThread, SimControl]]) -> Iterator[list[SimControl]]:
    controls = [c for _, c in backends]
    for c in controls:
        c.reset()
    yield controls
    for c in controls:
        c.release()


def entry(url: str, priority: int = 0, rpm: int = 60, **extra: Any) -> dict[str, Any]:
    return {"endpoint": url, "deployment": "gpt-image-2", "rpm": rpm, "priority": priority, **extra}


@pytest.fixture()
def pool_settings(azurite: Azurite, backends: list[tuple[ServerThread, SimControl]]) -> Callable[..., Settings]:
    jobs = f"pool-{uuid.uuid4().hex[:10]}"  # throttle state of this test alone

    def make(entries: list[dict[str, Any]], family: str = "gpt-image-2", **env: str) -> Settings:
        pools = json.dumps({POOL: entries})
        return settings_for(
            azurite, backends[0][0].url, IMAGES_BACKENDS=pools, IMAGES_DEPLOYMENTS=f"{POOL}={family}", IMAGES_JOBS_CONTAINER=jobs, **env
        )

    return make


class FakeTime:
    """Epoch seconds that move only when the router sleeps; the sleeps are recorded."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture()
async def runtimes() -> AsyncIterator[Callable[[Settings], Any]]:
    opened: list[Runtime] = []

    async def open_runtime(settings: Settings) -> Runtime:
        runtime = await Runtime(settings).open()
        opened.append(runtime)
        return runtime

    yield open_runtime
    for runtime in opened:
        await runtime.close()


async def generate(runtime: Runtime, body: dict[str, Any] | None = None, *, timeout: float = 30, budget: float = 0) -> dict[str, Any]:
    """One generation through the service; the archive record written for it."""
    family = runtime.settings.family_of(POOL)
    assert family is not None
    request = parse_request(body or PROMPT, POOL, family)
    generation = await runtime.service.generate(request, generation_id=new_generation_id(), prefix=sync_prefix(), deadline=Deadline(timeout), budget=budget, caller=key_caller())
    return generation.record


async def timed_pools(
    stack: AsyncExitStack, settings: Settings, runtime: Runtime, clock: FakeTime, sleep: Callable[[float], Awaitable[None]] | None = None
) -> Pools:
    """The runtime's pools opened again on ``clock`` (and ``sleep``, the clock's own by default): time moved, not waited."""
    http = await stack.enter_async_context(httpx.AsyncClient())
    blobs = runtime.service.blobs
    return await open_pools(settings, stack, runtime.service.upstream, http=http, blobs=blobs, credential=None, clock=clock, sleep=sleep or clock.sleep)


def counts(sim: SimControl) -> dict[str, int]:
    stats = sim.stats()
    return {k: stats[k] for k in ("requests", "generations", "throttled", "failed", "unauthorized", "blocked")}


# ---------------------------------------------------------------- fail over: the call did no work


async def test_a_429_goes_to_the_next_backend_and_the_first_is_skipped_after(sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any) -> None:
    first, second, _ = sims
    first.configure(quota_requests=1)
    runtime = await runtimes(pool_settings([entry(first.url, 0), entry(second.url, 1)]))
    assert (await generate(runtime))["backend"] == _name(first)
    served = await generate(runtime)  # the first is out of quota: 429, then the second
    assert counts(first) == {"requests": 2, "generations": 1, "throttled": 1, "failed": 0, "unauthorized": 0, "blocked": 0}
    assert counts(second)["generations"] == 1
    assert served["backend_attempts"] == {_name(first): 1, _name(second): 1} and served["backend"] == _name(second)
    await generate(runtime)  # its Retry-After is live: the first is not called again
    assert counts(first)["requests"] == 2 and counts(second)["generations"] == 2


@pytest.mark.parametrize(
    ("fault", "env", "stat", "attempts"),
    [
        ({"fail_next": 1, "fail_status": 503}, {}, "failed", 1),
        ({"policy_blocked": True}, {}, "blocked", 1),
        ({}, {"IMAGES_KEY_FIRST": "wrong-key-0123456789"}, "unauthorized", 2),  # refreshed once, then refused
    ],
    ids=["503", "403", "401"],
)
async def test_an_answer_that_did_no_work_goes_to_the_next_backend(
    sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any, fault: dict[str, Any], env: dict[str, str], stat: str, attempts: int
) -> None:
    first, second, _ = sims
    first.configure(**fault)
    extra: dict[str, Any] = {"auth": "key", "api_key_setting": "IMAGES_KEY_FIRST"} if env else {}
    runtime = await runtimes(pool_settings([entry(first.url, 0, **extra), entry(second.url, 1)], **env))
    record = await generate(runtime)
    assert counts(first)[stat] == attempts and counts(first)["generations"] == 0
    assert counts(second)["generations"] == 1 and counts(second)["requests"] == 1
    assert record["backend"] == _name(second) and record["backend_attempts"] == {_name(first): attempts, _name(second): 1}


async def test_a_refused_connection_goes_to_the_next_backend(sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any) -> None:
    _, second, _ = sims
    port = free_port("127.0.0.1")
    closed = f"http://127.0.0.1:{port}"  # nothing listens: refused before anything is sent
    runtime = await runtimes(pool_settings([entry(closed, 0), entry(second.url, 1)]))
    record = await generate(runtime)
    assert counts(second)["generations"] == 1 and record["backend"] == _name(second)
    assert record["backend_attempts"][f"127.0.0.1:{port}/gpt-image-2"] == 1


# ---------------------------------------------------------------- never after upstream may have worked


async def test_a_timeout_is_not_sent_elsewhere(sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any) -> None:
    first, second, _ = sims
    first.configure(hang_next=1)
    runtime = await runtimes(pool_settings([entry(first.url, 0), entry(second.url, 1)]))
    with pytest.raises(ServiceError) as failed:
        await generate(runtime, timeout=0.5)
    assert (failed.value.status, failed.value.code) == (504, "UpstreamTimeout")
    assert counts(first)["generations"] == 1  # billed, and so never repeated
    assert counts(second)["requests"] == 0


async def test_an_unusable_200_is_not_sent_elsewhere(sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any) -> None:
    first, second, _ = sims
    # The image is made (and billed) but larger than this service accepts: a 200 that cannot be used.
    runtime = await runtimes(pool_settings([entry(first.url, 0), entry(second.url, 1)], IMAGES_MAX_IMAGE_BYTES="1024"))
    with pytest.raises(ServiceError) as failed:
        await generate(runtime)
    assert (failed.value.status, failed.value.code, failed.value.transient) == (502, "UpstreamError", False)
    assert counts(first)["generations"] == 1 and counts(second)["requests"] == 0


async def test_a_filtered_image_is_not_sent_elsewhere(sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any) -> None:
    first, second, _ = sims
    runtime = await runtimes(pool_settings([entry(first.url, 0), entry(second.url, 1)]))
    with pytest.raises(ServiceError) as failed:
        await generate(runtime, {**PROMPT, "prompt": "a lighthouse [[filter:image]]"})
    assert (failed.value.status, failed.value.code) == (400, "contentFilter")
    assert counts(first)["generations"] == 1 and counts(second)["requests"] == 0  # the image was made: billed once


# ---------------------------------------------------------------- choosing


async def test_the_best_priority_serves_while_it_has_headroom_then_the_next(sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any) -> None:
    first, second, third = sims
    # rpm 6: one call per 10 seconds; the second backend is first in priority.
    runtime = await runtimes(pool_settings([entry(first.url, 1, rpm=6), entry(second.url, 0, rpm=6), entry(third.url, 2, rpm=6)]))
    served = [(await generate(runtime))["backend"] for _ in range(3)]
    assert served == [_name(second), _name(first), _name(third)]
    assert [counts(s)["requests"] for s in sims] == [1, 1, 1]  # no backend was called without headroom: no 429 anywhere


async def test_when_every_backend_is_at_quota_a_job_hears_the_earliest_moment_and_a_sync_call_waits_for_it(
    sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any
) -> None:
    first, second, _ = sims
    settings = pool_settings([entry(first.url, 0, rpm=6), entry(second.url, 0, rpm=12)])  # 1 and 2 calls per 10 s
    runtime = await runtimes(settings)
    clock = FakeTime()
    async with AsyncExitStack() as stack:
        pools = await timed_pools(stack, settings, runtime, clock)
        for _ in range(3):
            await _generate(pools, settings, budget=0)
        clock.now += 4
        with pytest.raises(ServiceError) as throttled:
            await _generate(pools, settings, budget=0)  # a job: deferred, nobody called
        assert throttled.value.status == 429 and throttled.value.retry_after == pytest.approx(10 + SLACK_SECONDS - 4)
        assert sum(counts(s)["requests"] for s in sims) == 3
        routed = await _generate(pools, settings, budget=30)  # a sync call waits for exactly that
        assert clock.slept == [pytest.approx(6 + SLACK_SECONDS)] and routed.backend in (_name(first), _name(second))
    assert sum(counts(s)["throttled"] for s in sims) == 0


async def _generate(pools: Pools, settings: Settings, *, budget: float, **options: Any) -> Any:
    return await pools.generate(parse_request(PROMPT, POOL, "gpt-image-2"), deadline=Deadline(30), budget=budget, **options)


# ---------------------------------------------------------------- shared across instances


async def test_what_one_instance_learns_the_other_respects(sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any) -> None:
    first, second, _ = sims
    first.configure(quota_requests=1)
    settings = pool_settings([entry(first.url, 0), entry(second.url, 1, rpm=6)])
    one, two = await runtimes(settings), await runtimes(settings)  # two instances, one storage
    await generate(one)
    assert (await generate(one))["backend"] == _name(second)  # the first answered 429 with a Retry-After
    with pytest.raises(ServiceError) as throttled:
        await generate(two)  # the first is in its Retry-After, the second used its 10 s: nobody is called
    assert throttled.value.status == 429 and throttled.value.retry_after is not None and throttled.value.retry_after > 0
    assert counts(first)["requests"] == 2 and counts(second)["requests"] == 1


async def test_a_pooled_answer_says_what_it_cost_and_where_it_was_made(sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any) -> None:
    first, _, _ = sims
    runtime = await runtimes(pool_settings([entry(first.url, 0)]))  # a pool of one: a plain call
    record = await generate(runtime)
    usage = record["usage"]
    expected = (usage["input_tokens_details"]["text_tokens"] * 5 + usage["output_tokens"] * 30) / 1_000_000
    assert record["cost"]["usd"] == pytest.approx(expected) and "gpt-image-2" in record["cost"]["basis"]
    assert record["deployment"] == POOL and record["backend"] == _name(first) and record["backend_attempts"] == {_name(first): 1}


def _name(sim: SimControl) -> str:
    return sim.url.split("//", 1)[1].rstrip("/") + "/gpt-image-2"


# ---------------------------------------------------------------- bookings: waiters queue, they do not herd


async def test_bookings_take_one_moment_each_and_no_window_ever_holds_more_than_its_quota(azurite: Azurite) -> None:
    clock = FakeTime()
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as blobs:
        container = blobs.get_container_client(f"book-{uuid.uuid4().hex[:10]}")
        boards = [ThrottleBoard(container, clock=clock), ThrottleBoard(container, clock=clock)]  # two instances
        start = clock.now
        for i in range(7):  # rpm 12: 2 calls in any 10 s (and the slack); the instances take turns
            assert await boards[i % 2].reserve("p/0", 12, not_after=clock.now + 60) is not None
            clock.now += 0.01
        assert await boards[0].reserve("p/0", 12, not_after=clock.now + 5) is None  # nothing free that soon: nothing written
        calls = sorted((await ThrottleBoard(container, clock=clock).state("p/0")).calls)  # a third instance reads storage
    window = 10 + SLACK_SECONDS
    assert len(calls) == 7 and len(set(calls)) == 7  # every waiter holds its own moment
    assert all(sum(1 for t in calls if at - window < t <= at) <= 2 for at in calls)
    # The first two now, then each one window after the call whose place it takes.
    assert [round(t - start, 2) for t in calls] == [0.0, 0.01, round(window, 2), round(window + 0.01, 2), round(2 * window, 2), round(2 * window + 0.01, 2), round(3 * window, 2)]


async def test_a_job_hears_the_exact_moment_and_back_a_little_early_waits_for_it_in_process(
    sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any
) -> None:
    first, second, _ = sims
    settings = pool_settings([entry(first.url, 0, rpm=6), entry(second.url, 1, rpm=6)])  # 1 call per 10 s each
    runtime = await runtimes(settings)
    clock = FakeTime()
    async with AsyncExitStack() as stack:
        pools = await timed_pools(stack, settings, runtime, clock)
        await asyncio.gather(*(_generate(pools, settings, budget=0) for _ in range(2)))  # both at their quota
        window = 10 + SLACK_SECONDS
        clock.now += 3
        with pytest.raises(PoolThrottled) as deferred:
            await _generate(pools, settings, budget=0, job=True)
        assert deferred.value.status == 429 and deferred.value.retry_after == pytest.approx(window - 3)
        clock.now += window - 3 - (JOB_HOLD_SECONDS + 0.5)
        with pytest.raises(PoolThrottled) as too_early:  # back before the hold: deferred again, to the same moment
            await _generate(pools, settings, budget=0, job=True)
        assert too_early.value.retry_after == pytest.approx(JOB_HOLD_SECONDS + 0.5)
        assert sum(counts(s)["requests"] for s in sims) == 2 and clock.slept == []  # nobody called, nobody waited

        clock.now += 1.0  # back a little early, as a continuation is
        routed = await _generate(pools, settings, budget=0, job=True)
        assert clock.slept == [pytest.approx(JOB_HOLD_SECONDS - 0.5)] and routed.backend == _name(first)  # the best priority: first
    assert [counts(s)["requests"] for s in sims] == [2, 1, 0] and sum(counts(s)["throttled"] for s in sims) == 0


async def test_waiting_sync_calls_each_hold_a_moment_instead_of_all_waking_for_the_first(
    sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any
) -> None:
    first, second, _ = sims
    settings = pool_settings([entry(first.url, 0, rpm=6), entry(second.url, 0, rpm=6)])
    runtime = await runtimes(settings)
    clock = FakeTime()
    woken: list[float] = []

    async def sleep(seconds: float) -> None:  # each caller says when it will send; time stays put
        woken.append(round(clock.now + seconds - 1_900_000_000.0, 3))

    async with AsyncExitStack() as stack:
        pools = await timed_pools(stack, settings, runtime, clock, sleep)
        await asyncio.gather(*(_generate(pools, settings, budget=0) for _ in range(2)))
        await asyncio.gather(*(_generate(pools, settings, budget=60) for _ in range(4)))
    window = round(10 + SLACK_SECONDS, 3)
    assert sorted(woken) == [window, window, 2 * window, 2 * window]


async def test_a_throttled_job_is_deferred_to_the_exact_moment_and_sent_then(
    sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any
) -> None:
    first, second, _ = sims
    settings = pool_settings([entry(first.url, 0, rpm=6), entry(second.url, 0, rpm=6)], IMAGES_QUEUE=f"pool-{uuid.uuid4().hex[:10]}")
    runtime = await runtimes(settings)
    clock = FakeTime()
    async with AsyncExitStack() as stack:
        pools = await timed_pools(stack, settings, runtime, clock)
        runtime.service.attach(dataclasses.replace(runtime.service.clients, pools=pools))
        await asyncio.gather(*(_generate(pools, settings, budget=0) for _ in range(2)))  # both at their quota
        message = json.dumps({"id": "pooled-job", "deployment": POOL, **PROMPT})
        deferred = await runtime.jobs.handle(message, "delivery-1", 1)
        window = 10 + SLACK_SECONDS
        assert deferred.action == "deferred" and f"free in {window:.1f} s" in deferred.detail
        stored = await runtime.jobs.store.get("pooled-job")
        assert stored is not None and stored.record.status.value == "notRunning" and stored.record.events[-1].event == "throttled"

        clock.now += window - 1.5  # the continuation shows up a little early (continuation_delay)
        done = await runtime.jobs.handle(message, "delivery-2", 1)
        assert done.action == "succeeded" and clock.slept == [pytest.approx(1.5)]
    assert sum(counts(s)["generations"] for s in sims) == 3 and sum(counts(s)["throttled"] for s in sims) == 0


@pytest.mark.parametrize(("wait", "delay"), [(10.1, 9.0), (2.99, 1.0), (1.99, 0.0), (0.4, 0.0)])
def test_a_pooled_continuation_shows_up_before_its_moment_never_after(wait: float, delay: float) -> None:
    shown, moment, detail = continuation_delay(PoolThrottled(POOL, wait))
    assert moment is None  # the pool's router waits out the rest, not the handler
    assert shown == delay and wait - POLL_LEAD_SECONDS - 1 < shown <= max(0.0, wait - POLL_LEAD_SECONDS)
    assert f"free in {wait:.1f} s" in detail
    # Shown by then and picked up within the host's polling interval, the job waits the rest in process.
    hours, minutes, seconds = (float(part) for part in host_queue_settings()["maxPollingInterval"].split(":"))
    assert hours * 3600 + minutes * 60 + seconds <= POLL_LEAD_SECONDS and POLL_LEAD_SECONDS + 1 < JOB_HOLD_SECONDS


def test_any_other_retry_after_is_kept_with_a_little_jitter_never_less() -> None:
    rng = random.Random(7)
    moments = [continuation_delay(ServiceError(429, "429", "throttled", retry_after=10, transient=True), rng)[1] for _ in range(50)]
    assert all(m is not None and 10 <= m <= 11 for m in moments) and len(set(moments)) > 1


async def test_an_edit_goes_through_the_pool_and_fails_over_as_a_generation_does(
    sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any, azurite: Azurite
) -> None:
    first, second, _ = sims
    first.configure(quota_requests=1)
    container = f"pool-edit-{uuid.uuid4().hex[:8]}"
    runtime = await runtimes(pool_settings([entry(first.url, 0), entry(second.url, 1)], IMAGES_CONTAINER=container))
    await generate(runtime)  # the first backend's one call in its window
    source = io.BytesIO()
    Image.new("RGB", (64, 48), (0, 0, 255)).save(source, "PNG")
    app = create_app(runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        edited = await client.post(
            f"/openai/deployments/{POOL}/images/edits?api-version=2025-04-01-preview",
            data={"prompt": "a brighter shelf"},
            files={"image": ("shop.png", source.getvalue(), "image/png")},
        )
    assert edited.status_code == 200, edited.text
    assert counts(first)["throttled"] == 1 and second.stats()["edits"] == 1 and counts(second)["requests"] == 1
    with SyncBlobServiceClient.from_connection_string(azurite.connection_string) as blobs:  # the edit's archive record
        records = [b.name for b in blobs.get_container_client(container).list_blobs() if b.name.endswith(".json") and "/" in b.name]
        edit_record = next(r for r in (json.loads(blobs.get_blob_client(container, n).download_blob().readall()) for n in records) if r.get("operation") == "edit")
    assert edit_record["backend"] == _name(second) and edit_record["backend_attempts"] == {_name(first): 1, _name(second): 1}
    assert edit_record["cost"]["usd"] is not None


# ---------------------------------------------------------------- may upstream have worked: one call in the whole pool

GENERATE = f"/openai/deployments/{POOL}/images/generations?api-version=2025-04-01-preview"


@pytest.mark.parametrize("status", [408, 409, 413, 422, 499, 500, 502, 504])
async def test_an_answer_after_which_upstream_may_have_worked_is_one_call_in_the_whole_pool(
    sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any, status: int
) -> None:
    first, second, third = sims
    first.configure(fail_next=1, fail_status=status)
    runtime = await runtimes(pool_settings([entry(first.url, 0), entry(second.url, 1), entry(third.url, 2)]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://api") as client:
        answer = await client.post(GENERATE, json=PROMPT)
    assert (answer.status_code, answer.json()["error"]["code"]) == (502, "UpstreamError"), answer.text
    assert answer.headers["x-should-retry"] == "false"  # and the caller's openai SDK does not send it again either
    assert [counts(s)["requests"] for s in sims] == [1, 0, 0]


async def test_a_pooled_job_with_an_upstream_408_is_failed_and_never_sent_again_on_redelivery(
    sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any
) -> None:
    first, second, _ = sims
    first.configure(fail_next=1, fail_status=408)
    runtime = await runtimes(pool_settings([entry(first.url, 0), entry(second.url, 1)], IMAGES_QUEUE=f"pool-{uuid.uuid4().hex[:10]}"))
    message = json.dumps({"id": f"pooled-408-{uuid.uuid4().hex[:6]}", "deployment": POOL, **PROMPT})
    first_delivery = await runtime.jobs.handle(message, "delivery-1", 1)
    redelivery = await runtime.jobs.handle(message, "delivery-1", 2)
    assert (first_delivery.action, redelivery.action) == ("failed", "duplicate")
    assert "not repeated" in first_delivery.detail.lower()
    assert sum(counts(s)["requests"] for s in sims) == 1


# ---------------------------------------------------------------- one cap on calls in flight for the instance


@pytest.mark.parametrize(("cap", "most"), [(1, {1}), (4, {2, 3, 4})])
async def test_the_upstream_cap_holds_for_the_instance_across_every_backend_of_a_pool(
    sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any, cap: int, most: set[int]
) -> None:
    sim = sims[0]
    sim.configure(latency=0.3, deployments={"images-b": "gpt-image-2"})  # two backends on one simulator: its count is the instance's
    try:
        entries = [entry(sim.url, 0), {**entry(sim.url, 0), "deployment": "images-b"}]
        runtime = await runtimes(pool_settings(entries, IMAGES_MAX_CONCURRENT_UPSTREAM=str(cap)))
        records = await asyncio.gather(*(generate(runtime) for _ in range(4)))
    finally:
        sim.configure(deployments={})
    stats = sim.stats()
    assert stats["generations"] == 4 and {r["backend"] for r in records} <= {_name(sim), _name(sim).replace("gpt-image-2", "images-b")}
    assert stats["max_in_flight"] in most  # with cap 1, never two at once however the calls are spread


# ---------------------------------------------------------------- one deadline: booked waits and every failover attempt


async def test_a_booked_wait_is_never_longer_than_what_is_left_of_the_deadline(
    sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any
) -> None:
    first, second, _ = sims
    settings = pool_settings([entry(first.url, 0, rpm=6), entry(second.url, 0, rpm=6)])
    runtime = await runtimes(settings)
    clock = FakeTime()
    async with AsyncExitStack() as stack:
        pools = await timed_pools(stack, settings, runtime, clock)
        await asyncio.gather(*(_generate(pools, settings, budget=0) for _ in range(2)))  # both at their quota for 10.1 s
        request = parse_request(PROMPT, POOL, "gpt-image-2")
        with pytest.raises(PoolThrottled) as throttled:  # the budget would allow the wait; the deadline does not
            await pools.generate(request, deadline=Deadline(5, clock=clock), budget=60)
        assert throttled.value.retry_after == pytest.approx(10 + SLACK_SECONDS) and clock.slept == []
        routed = await pools.generate(request, deadline=Deadline(12, clock=clock), budget=60)  # within 12 s: booked and waited
        assert clock.slept == [pytest.approx(10 + SLACK_SECONDS)] and routed.result.images
    assert sum(counts(s)["requests"] for s in sims) == 3


async def test_every_failover_attempt_takes_from_one_deadline_never_a_fresh_timeout(
    sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any
) -> None:
    for sim in sims:
        sim.configure(fail_next=1, fail_status=503)  # each backend unable to handle it: no work, fail over
    settings = pool_settings([entry(s.url, 0) for s in sims])
    runtime = await runtimes(settings)
    clock = FakeTime()
    deadline = Deadline(6, clock=clock)
    left: list[float] = []

    async def send(client: Any, request: Any, budget: float) -> Any:
        left.append(deadline.remaining())  # what this attempt may take
        try:
            return await client.generate(request, deadline=deadline, budget=budget)
        finally:
            clock.now += 4  # each attempt takes 4 s on the test's clock

    async with AsyncExitStack() as stack:
        pools = await timed_pools(stack, settings, runtime, clock)
        with pytest.raises(ServiceError) as failed:
            await pools.route(parse_request(PROMPT, POOL, "gpt-image-2"), send, deadline=deadline, budget=30)
    assert left == [6, 2]  # the second attempt had what the first left; there was no time for a third
    assert failed.value.status == 502 and failed.value.transient  # the last answer: a 503, nothing worked
    assert sorted(counts(s)["requests"] for s in sims) == [0, 1, 1]


async def test_a_429_the_board_did_not_foresee_hands_back_the_refused_call_s_reservation(
    sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any
) -> None:
    """Upstream counts no throttled request; a board that did would keep that slot of the window empty (a window lost)."""
    first, second, _ = sims
    first.configure(quota_requests=1)  # upstream allows less than the board was told (rpm 60)
    settings = pool_settings([entry(first.url, 0), entry(second.url, 1)])
    runtime = await runtimes(settings)
    await generate(runtime)
    assert (await generate(runtime))["backend"] == _name(second)  # the first answered 429
    board = ThrottleBoard(runtime.service.blobs.get_container_client(settings.jobs_container))
    state = await board.state(f"{POOL}/0")
    assert len(state.calls) == 1  # the call upstream served; the refused one was handed back
    assert state.retry_until > board.clock() and counts(first) == {**counts(first), "requests": 2, "throttled": 1}


# ---------------------------------------------------------------- streams: the pool picks before the stream starts


async def _stream(runtime: Runtime, prompt: str) -> tuple[list[bytes | memoryview], Any]:
    """One streamed generation through the pool, relayed in process; its events and the record's place."""
    family = runtime.settings.family_of(POOL)
    assert family is not None
    request = parse_request({**PROMPT, "prompt": prompt, "stream": True, "partial_images": 1}, POOL, family)
    deadline = Deadline(30)
    streamed = await streaming.open_streamed(
        runtime.service, request, streaming.generation_send(deadline), generation_id=new_generation_id(), prefix=sync_prefix(),
        deadline=deadline, budget=0, caller=key_caller(),
    )  # fmt: skip
    return [piece async for piece in streaming.relay(runtime.service, streamed, lambda name: name)], streamed


async def test_a_stream_fails_over_before_it_starts_and_records_where_it_was_made(
    sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any
) -> None:
    first, second, _ = sims
    first.configure(quota_requests=1)
    runtime = await runtimes(pool_settings([entry(first.url, 0), entry(second.url, 1)]))
    await generate(runtime)  # the first's one request
    events, streamed = await _stream(runtime, "a lighthouse, streamed")  # the first answers 429: the second streams
    assert b"image_generation.completed" in b"".join(bytes(e) for e in events)
    assert counts(first)["throttled"] == 1 and counts(second)["generations"] == 1
    assert streamed.routed.backend == _name(second) and streamed.routed.attempts == {_name(first): 1, _name(second): 1}


async def test_a_stream_cut_after_it_started_is_not_sent_elsewhere(sims: list[SimControl], pool_settings: Callable[..., Settings], runtimes: Any) -> None:
    first, second, _ = sims
    runtime = await runtimes(pool_settings([entry(first.url, 0), entry(second.url, 1)]))
    events, _ = await _stream(runtime, "a lighthouse [[stream-cut:1]]")
    assert b"event: error" in bytes(events[-1])
    assert counts(first)["generations"] == 1 and counts(second)["requests"] == 0
