"""The upstream retry policy: what is repeated, how long it waits, when it stops; and the 401 refresh.

Time is an input: the policy gets a sleep that records the wait and a clock that moves by it,
so nothing here waits. The policy is driven first by scripted outcomes (real httpx exceptions
and upstream answers), then through UpstreamClient against the images simulator in process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from local.servers import free_port
from local.simulator import SimulatorConfig, create_simulator
from shared.credentials import KeyAuth
from shared.deadline import Deadline
from shared.errors import ServiceError
from shared.models import ImageRequest, parse_request
from shared.settings import Settings
from shared.upstream import RefreshOnce, RetryPolicy, UpstreamClient, safe_to_repeat
from shared.upstream.errors import DEFAULT_THROTTLE_SECONDS, UpstreamAnswer
from shared.upstream.retry import BACKOFF_CAP, BACKOFF_FIRST_CAP

KEY = "upstream-retry-test-key-0123"
REQUEST = httpx.Request("POST", "https://upstream.test/images/generations")


class Time:
    """A clock and a sleep for the policy: sleeping records the wait and moves the clock by it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def policy(self, max_retries: int = 3) -> RetryPolicy:
        return RetryPolicy(max_retries, sleep=self.sleep, clock=self.clock)


class Script:
    """An attempt that raises (or returns) the next scripted outcome on each call; the last one repeats."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> Any:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def answer(status: int, **headers: str) -> UpstreamAnswer:
    return UpstreamAnswer(status, {"error": {"code": str(status), "message": "scripted"}}, httpx.Headers(headers))


def throttled(**headers: str) -> UpstreamAnswer:
    return answer(429, **{k.replace("_", "-"): v for k, v in headers.items()})


@pytest.fixture()
def time_() -> Time:
    return Time()


# --------------------------------------------------------------------------- the predicate


@pytest.mark.parametrize(
    "outcome",
    [
        answer(429),
        answer(503),
        httpx.ConnectError("refused", request=REQUEST),
        httpx.ConnectTimeout("no connection", request=REQUEST),
        httpx.PoolTimeout("no free connection", request=REQUEST),
    ],
    ids=repr,
)
def test_safe_to_repeat_when_upstream_accepted_no_work(outcome: BaseException) -> None:
    assert safe_to_repeat(outcome)


@pytest.mark.parametrize(
    "outcome",
    [
        answer(400),
        answer(401),
        answer(403),
        answer(404),
        answer(408),
        answer(500),
        answer(502),
        answer(504),
        httpx.ReadTimeout("sent, no answer", request=REQUEST),
        httpx.WriteTimeout("partly sent", request=REQUEST),
        httpx.ReadError("broke after sending", request=REQUEST),
        httpx.RemoteProtocolError("closed mid-answer", request=REQUEST),
        ServiceError(502, "UpstreamError", "a 200 answer that was not an image", transient=False),
    ],
    ids=repr,
)
def test_never_repeated_when_upstream_may_have_done_the_work_or_refused(outcome: BaseException) -> None:
    assert not safe_to_repeat(outcome)


@pytest.mark.parametrize(
    "outcome",
    [
        httpx.ReadTimeout("sent, no answer", request=REQUEST),
        httpx.ReadError("broke after sending", request=REQUEST),
        answer(400),
        ServiceError(502, "UpstreamError", "a 200 answer that was not an image", transient=False),
    ],
    ids=repr,
)
async def test_a_policy_run_raises_what_is_not_safe_to_repeat_at_once(outcome: BaseException, time_: Time) -> None:
    attempt = Script(outcome, "never reached")
    with pytest.raises(type(outcome)) as caught:
        await time_.policy().run(attempt, budget=600)
    assert caught.value is outcome
    assert attempt.calls == 1 and time_.slept == []


# --------------------------------------------------------------------------- the wait


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry_after_ms": "1500", "Retry-After": "2"}, 1.5),  # the finer header wins
        ({"Retry-After": "2"}, 2.0),
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT", "retry_after_ms": "250"}, 0.25),
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, DEFAULT_THROTTLE_SECONDS),  # a date: not read
        ({}, DEFAULT_THROTTLE_SECONDS),
    ],
)
async def test_a_429_waits_what_upstream_asks(headers: dict[str, str], wait: float, time_: Time) -> None:
    attempt = Script(throttled(**headers), "done")
    assert await time_.policy().run(attempt, budget=600) == "done"
    assert time_.slept == [wait]
    assert attempt.calls == 2


async def test_backoff_is_full_jitter_in_a_doubling_window_up_to_the_cap(time_: Time) -> None:
    runs = 300
    for _ in range(runs):
        attempt = Script(*[answer(503)] * 5, "done")
        assert await time_.policy(max_retries=5).run(attempt, budget=10_000) == "done"
    waits = [time_.slept[i::5] for i in range(5)]  # waits[n]: the wait after the (n+1)-th failure, over every run
    for n, seen in enumerate(waits):
        window = min(BACKOFF_FIRST_CAP * 2**n, BACKOFF_CAP)
        assert len(seen) == runs
        assert all(0 <= w <= window for w in seen), (n, max(seen))
        # Spread over the whole window, not a fixed delay: some in its lower and some in its upper fifth.
        assert min(seen) < window / 5 and max(seen) > window * 4 / 5, (n, min(seen), max(seen))


async def test_connection_failures_before_sending_are_retried_with_backoff(time_: Time) -> None:
    refused = httpx.ConnectError("refused", request=REQUEST)
    attempt = Script(refused, httpx.PoolTimeout("pool", request=REQUEST), "done")
    assert await time_.policy().run(attempt, budget=600) == "done"
    assert len(time_.slept) == 2
    assert 0 <= time_.slept[0] <= BACKOFF_FIRST_CAP and 0 <= time_.slept[1] <= 2 * BACKOFF_FIRST_CAP


# --------------------------------------------------------------------------- when it stops


async def test_max_retries_bounds_the_attempts_and_the_last_answer_is_raised(time_: Time) -> None:
    last = answer(503)
    attempt = Script(answer(503), throttled(retry_after_ms="10"), last)
    with pytest.raises(UpstreamAnswer) as caught:
        await time_.policy(max_retries=2).run(attempt, budget=10_000)
    assert caught.value is last
    assert attempt.calls == 3 and len(time_.slept) == 2


async def test_a_wait_that_does_not_fit_the_budget_is_not_waited(time_: Time) -> None:
    attempt = Script(throttled(retry_after_ms="3000"))
    with pytest.raises(UpstreamAnswer) as caught:
        await time_.policy(max_retries=10).run(attempt, budget=5)
    # 3 s fits in 5; after it, another 3 s would end at the budget's end: the caller hears the 429 instead.
    assert time_.slept == [3.0]
    assert attempt.calls == 2
    assert caught.value.status == 429


async def test_a_throttle_longer_than_the_budget_is_handed_to_the_caller_at_once(time_: Time) -> None:
    attempt = Script(throttled(Retry_After="30"), "never reached")
    with pytest.raises(UpstreamAnswer):
        await time_.policy().run(attempt, budget=10)
    assert time_.slept == [] and attempt.calls == 1


async def test_the_budget_counts_the_time_the_attempts_took_too(time_: Time) -> None:
    calls = 0

    async def slow_throttle() -> None:
        nonlocal calls
        calls += 1
        time_.now += 4  # each attempt takes 4 s before upstream answers 429
        raise throttled(retry_after_ms="500")

    with pytest.raises(UpstreamAnswer):
        await time_.policy(max_retries=10).run(slow_throttle, budget=10)
    # 4 + 0.5 + 4 + 0.5 + 4 = 13: after the third attempt a wait cannot end within 10 s.
    assert time_.slept == [0.5, 0.5]
    assert calls == 3


# --------------------------------------------------------------------------- the 401 rule


async def test_a_401_refreshes_the_credential_once_and_repeats_that_request_once() -> None:
    auth = KeyAuth(KEY)
    refresh = RefreshOnce(auth)
    sent: list[dict[str, str]] = []

    async def send(headers: dict[str, str]) -> str:
        sent.append(headers)
        if len(sent) == 1:
            raise answer(401)
        return "done"

    assert await refresh.call(send) == "done"
    assert sent == [{"api-key": KEY}, {"api-key": KEY}]

    async def refused(headers: dict[str, str]) -> str:
        sent.append(headers)
        raise answer(401)

    sent.clear()
    with pytest.raises(UpstreamAnswer) as caught:
        await refresh.call(refused)  # already refreshed in this generation: a 401 is final
    assert caught.value.status == 401 and len(sent) == 1


async def test_other_refusals_are_not_the_401_rule_s_business() -> None:
    calls = 0

    async def send(headers: dict[str, str]) -> str:
        nonlocal calls
        calls += 1
        raise answer(403)

    with pytest.raises(UpstreamAnswer):
        await RefreshOnce(KeyAuth(KEY)).call(send)
    assert calls == 1


# --------------------------------------------------------------------------- through the client, against the simulator


def settings(**env: str) -> Settings:
    return Settings.from_env(
        {
            "AZURE_OPENAI_ENDPOINT": "http://simulator.test",
            "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1-mini",
            "AZURE_OPENAI_API_KEY": KEY,
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "IMAGES_ALLOW_HTTP_UPSTREAM": "true",
            **env,
        }
    )


def image_request() -> ImageRequest:
    return parse_request({"prompt": "a lighthouse", "quality": "low", "size": "1024x1024"}, "gpt-image-1-mini", "gpt-image-1-mini")


@pytest.fixture()
def simulator() -> Iterator[Any]:
    """The images simulator in this process (httpx's ASGI transport), accepting :data:`KEY`."""
    app = create_simulator(SimulatorConfig(api_keys={KEY}, prewarm=False))
    yield app


def client_for(app: Any, time_: Time, *, key: str = KEY, max_retries: int = 3) -> UpstreamClient:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    return UpstreamClient(settings(), KeyAuth(key), http, retry=time_.policy(max_retries))


async def test_client_waits_out_the_simulator_s_429_as_its_retry_after_ms_says(simulator: Any, time_: Time) -> None:
    sim = simulator.state.sim
    sim.update_config(quota_requests=1, quota_window_seconds=30)
    client = client_for(simulator, time_, max_retries=2)
    # The waits count against the call's total deadline too: it is longer than both waits here.
    first = await client.generate(image_request(), deadline=Deadline(100), budget=100)
    assert first.attempts == 1
    with pytest.raises(ServiceError) as caught:
        await client.generate(image_request(), deadline=Deadline(100), budget=100)
    # The simulator's window does not move with the test's clock: throttled each time, waited each time.
    assert len(time_.slept) == 2 and all(29 < w <= 30 for w in time_.slept), time_.slept
    assert caught.value.status == 429 and caught.value.retry_after is not None and 29 < caught.value.retry_after <= 30
    assert sim.snapshot()["throttled"] == 3
    await client.http.aclose()


async def test_client_repeats_a_server_error_and_counts_the_attempts(simulator: Any, time_: Time) -> None:
    sim = simulator.state.sim
    sim.update_config(fail_next=1, fail_status=503)
    client = client_for(simulator, time_)
    result = await client.generate(image_request(), deadline=Deadline(30), budget=100)
    assert result.attempts == 2 and result.images[0].content_type == "image/png"
    assert len(time_.slept) == 1 and 0 <= time_.slept[0] <= BACKOFF_FIRST_CAP
    stats = sim.snapshot()
    assert stats["failed"] == 1 and stats["succeeded"] == 1
    await client.http.aclose()


async def test_client_refused_key_is_refreshed_once_then_a_502_without_waiting(simulator: Any, time_: Time) -> None:
    client = client_for(simulator, time_, key="a-key-the-simulator-refuses")
    with pytest.raises(ServiceError) as caught:
        await client.generate(image_request(), deadline=Deadline(30), budget=100)
    assert (caught.value.status, caught.value.code) == (502, "UpstreamAuthenticationFailed")
    assert simulator.state.sim.snapshot()["unauthorized"] == 2  # the call, and its one repetition after the refresh
    assert time_.slept == []
    await client.http.aclose()


async def test_client_unreachable_upstream_is_retried_then_502_unavailable(time_: Time) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused before anything is sent
    client = UpstreamClient(settings(AZURE_OPENAI_ENDPOINT=closed), KeyAuth(KEY), retry=time_.policy(max_retries=2))
    try:
        with pytest.raises(ServiceError) as caught:
            await client.generate(image_request(), deadline=Deadline(30), budget=100)
    finally:
        await client.close()
    assert (caught.value.status, caught.value.code, caught.value.transient) == (502, "UpstreamUnavailable", True)
    assert len(time_.slept) == 2


async def test_client_waits_only_what_fits_in_the_call_s_total_deadline(simulator: Any, time_: Time) -> None:
    sim = simulator.state.sim
    sim.update_config(quota_requests=1, quota_window_seconds=30)
    client = client_for(simulator, time_, max_retries=5)
    await client.generate(image_request(), deadline=Deadline(100), budget=100)
    with pytest.raises(ServiceError) as caught:
        await client.generate(image_request(), deadline=Deadline(20), budget=100)  # the budget would allow a 30 s wait; the deadline does not
    assert caught.value.status == 429 and time_.slept == []
    await client.http.aclose()
