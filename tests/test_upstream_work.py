"""The one rule, "may upstream have done (and billed) the work", over every status code and every transport failure,
and every path that must ask it: the retry, the pool's failover, the job handler, the answer's ``x-should-retry``.

The rule's table is stated here once more from its sources (Microsoft's billing note, RFC 9110), so a change of the
rule is a change of this test. Property tests draw statuses from 100-599 with any error body and Retry-After; one
exhaustive sweep makes sure no status is left unvisited.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.credentials import KeyAuth
from shared.deadline import Deadline
from shared.errors import SHOULD_RETRY, ServiceError
from shared.jobs.handler import next_step
from shared.models import parse_request
from shared.pool.router import did_no_work
from shared.settings import Settings
from shared.upstream import RetryPolicy, UpstreamClient, safe_to_repeat
from shared.upstream.errors import UpstreamAnswer, deadline_error, map_answer, transport_error, unexpected_error
from shared.upstream.work import AttemptFailed, answer_may_have_worked
from tests.conftest import SIM_KEY, SimControl

REQUEST = httpx.Request("POST", "https://upstream.test/openai/deployments/d/images/generations")
# Refusals before any work (the request, the credential, the resource, the deployment; throttled; unable to handle it now).
REFUSED_BEFORE_WORK = {400, 401, 403, 404, 429, 503}
AGAIN_AFTER_A_WAIT = {429, 503}
MAY_HAVE_WORKED_EXAMPLES = [408, 409, 413, 422, 499, 500, 502, 504]  # the and the gateway's

error_bodies = st.one_of(
    st.none(),
    st.fixed_dictionaries({"error": st.fixed_dictionaries({"code": st.sampled_from(["x", "Timeout", "InternalServerError", "429"]), "message": st.text(max_size=40)})}),
    st.just({"error": {"code": "content_policy_violation", "message": "Your request was rejected as a result of our safety system."}}),
    st.text(max_size=20),
)
retry_headers = st.dictionaries(st.sampled_from(["Retry-After", "retry-after-ms"]), st.sampled_from(["0", "1", "2.5", "1e400", "-5", "soon"]))


def expected(status: int, body_sent: bool) -> bool:
    """The rule as its sources state it: upstream may have worked once it had the whole request, unless it refused first."""
    return body_sent and status not in REFUSED_BEFORE_WORK


def answer(status: int, body: Any, headers: dict[str, str], body_sent: bool) -> UpstreamAnswer:
    return UpstreamAnswer(status, body, httpx.Headers(headers), body_sent=body_sent)


@given(st.integers(100, 599), error_bodies, retry_headers, st.booleans())
def test_every_status_is_classified_once_and_every_path_agrees(status: int, body: Any, headers: dict[str, str], body_sent: bool) -> None:
    raw = answer(status, body, headers, body_sent)
    error = map_answer(raw)
    worked = expected(status, body_sent)
    assert raw.may_have_worked is worked and error.may_have_worked is worked
    # The retry repeats it only when upstream did no work, and only a throttle, an unavailable service, or what never
    # arrived; never a content filter's verdict, whatever status it came with.
    again = status in AGAIN_AFTER_A_WAIT or (not body_sent and (status == 429 or status >= 500))
    assert safe_to_repeat(raw) is (not worked and again and error.code != "contentFilter")
    if safe_to_repeat(raw):
        assert error.transient
    # Nothing that may have been worked is transient, sent to another backend, or handed back to the queue.
    if worked:
        assert not error.transient and not did_no_work(error) and next_step(error) == "fail"
        assert error.headers()[SHOULD_RETRY] == "false"  # nor resent by the caller's openai SDK
    else:
        assert SHOULD_RETRY not in error.headers()


def test_no_status_from_100_to_599_is_left_out() -> None:
    for status in range(100, 600):
        for body_sent in (True, False):
            assert answer_may_have_worked(status, body_sent=body_sent) is expected(status, body_sent), (status, body_sent)
            assert map_answer(answer(status, None, {}, body_sent)).may_have_worked is expected(status, body_sent)


@pytest.mark.parametrize("status", MAY_HAVE_WORKED_EXAMPLES)
def test_a_408_and_its_kin_are_final_502s_that_say_why(status: int) -> None:
    error = map_answer(answer(status, {"error": {"code": str(status), "message": "The operation was timeout."}}, {"Retry-After": "1"}, True))
    assert (error.status, error.code, error.transient, error.may_have_worked) == (502, "UpstreamError", False, True)
    assert "not repeated" in error.message.lower() and str(status) in error.message


@pytest.mark.parametrize(("status", "step"), [(429, "defer"), (503, "retry"), (401, "retry"), (400, "fail"), (403, "fail"), (404, "fail")])
def test_what_upstream_refused_before_working_is_never_marked_as_worked(status: int, step: str) -> None:
    error = map_answer(answer(status, {"error": {"code": "x", "message": "refused"}}, {"Retry-After": "3"}, True))
    assert not error.may_have_worked and next_step(error) == step


# --------------------------------------------------------------------------- transport failures and the deadline


def _transport_errors() -> list[type[httpx.TransportError]]:
    """Every concrete httpx transport failure."""
    found: list[type[httpx.TransportError]] = []
    pending: list[type[httpx.TransportError]] = [httpx.TransportError]
    while pending:
        kind = pending.pop()
        found.append(kind)
        pending.extend(kind.__subclasses__())
    return found


NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@given(st.sampled_from(_transport_errors()), st.booleans())
def test_every_transport_failure_is_classified_by_whether_the_request_reached_upstream_whole(kind: type[httpx.TransportError], body_sent: bool) -> None:
    failure = AttemptFailed(kind("failed", request=REQUEST), body_sent=body_sent)
    worked = body_sent and not issubclass(kind, NOT_SENT)  # a cut or a timeout after the request left: it may have been worked
    assert failure.may_have_worked is worked and safe_to_repeat(failure) is (not worked)
    error = transport_error(failure)
    assert error.may_have_worked is worked and error.transient is (not worked)
    assert did_no_work(error) is (not worked) and next_step(error) == ("fail" if worked else "retry")
    assert (error.headers().get(SHOULD_RETRY) == "false") is worked


@pytest.mark.parametrize("worked", [True, False])
def test_the_deadline_and_the_unexpected_follow_the_same_verdict(worked: bool) -> None:
    for error in (deadline_error(220, may_have_worked=worked), unexpected_error(ZeroDivisionError(), may_have_worked=worked)):
        assert error.may_have_worked is worked and error.transient is (not worked)
        assert next_step(error) == ("fail" if worked else "retry") and did_no_work(error) is (not worked)


def test_a_raw_transport_error_whose_moment_is_unknown_is_repeated_only_when_nothing_was_sent() -> None:
    assert safe_to_repeat(httpx.ConnectError("refused", request=REQUEST))
    assert not safe_to_repeat(httpx.ReadError("cut", request=REQUEST))
    assert not safe_to_repeat(httpx.WriteError("cut while writing", request=REQUEST))  # not known how much arrived


def test_an_error_that_may_have_been_worked_is_never_transient_whatever_its_maker_says() -> None:
    error = ServiceError(502, "UpstreamError", "x", transient=True, may_have_worked=True)
    assert not error.transient and not did_no_work(error) and next_step(error) == "fail"


# --------------------------------------------------------------------------- over a real socket, retries allowed


async def _generate_with_retries(sim: SimControl, prompt: str, deadline: float) -> tuple[ServiceError, list[float]]:
    """One call through the client's own connection pool (its real transport) to the simulator, three retries allowed."""
    env = {"AZURE_OPENAI_ENDPOINT": sim.url, "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1-mini", "AZURE_OPENAI_API_KEY": SIM_KEY}
    settings = Settings.from_env({**env, "AzureWebJobsStorage": "UseDevelopmentStorage=true", "IMAGES_ALLOW_HTTP_UPSTREAM": "true"})
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client = UpstreamClient(settings, KeyAuth(SIM_KEY), retry=RetryPolicy(3, sleep=sleep))
    request = parse_request({"prompt": prompt, "quality": "low"}, "gpt-image-1-mini", "gpt-image-1-mini")
    try:
        with pytest.raises(ServiceError) as caught:
            await client.generate(request, deadline=Deadline(deadline), budget=60)
    finally:
        await client.close()
    return caught.value, slept


@pytest.mark.parametrize(("prompt", "status"), [("a cut [[truncated]]", 502), ("a 408 [[fail:408]]", 502), ("a 504 [[fail:504]]", 502)])
async def test_a_cut_stream_or_an_answer_upstream_may_have_worked_on_is_one_request_however_many_retries_are_allowed(
    sim: SimControl, prompt: str, status: int
) -> None:
    error, slept = await _generate_with_retries(sim, prompt, 30)
    assert (error.status, error.may_have_worked, slept) == (status, True, [])
    assert sim.stats()["requests"] == 1  # neither the retry policy nor the transport sent it again


async def test_a_timeout_after_the_request_left_is_one_request_and_a_final_504(sim: SimControl) -> None:
    error, slept = await _generate_with_retries(sim, "a long one [[hang]]", 0.5)
    assert (error.status, error.code, error.may_have_worked, slept) == (504, "UpstreamTimeout", True, [])
    assert sim.wait(at_least={"abandoned": 1})["requests"] == 1  # billed, and left alone
