"""Schemathesis against the app's own /openapi.json: no 5xx on any route, every error in the Azure shape.

In process (schemathesis calls the ASGI app and runs its lifespan, which opens the runtime)
against real Azurite and the simulator, as the rest of the suite. Examples are bounded
per route so the whole run stays within seconds; hypothesis shrinks whatever it finds.
Bodies, path and query parameters are schemathesis's own generation, positive and negative;
what the document leaves to the caller's knowledge (a served deployment, api-version,
Prefer, Idempotency-Key) is drawn alongside, valid or not, so requests get past the first check.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python import asgi as schemathesis_asgi  # runs the app's lifespan in schemathesis's event loop

from shared.api import create_app
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import DEPLOYMENTS, SimControl

# Generated requests against every route (about 6 s): CI runs it (`.ci/run`: `dev.py test -m slow`).
pytestmark = pytest.mark.slow

SERVED = [item.split("=", 1)[0] for item in DEPLOYMENTS.split(",")]
API_VERSION = "2025-04-01-preview"
# What an HTTP client can put in a header value: printable ASCII, no whitespace at either end.
_ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=70).map(str.strip)
# What /openapi.json leaves to the caller's knowledge, steered so that requests get past the first check
# as often as they stop there: a served deployment (path, or model on the v1 path), the api-version
# query parameter, Prefer: respond-async and an Idempotency-Key.
STEERING = st.fixed_dictionaries(
    {
        "deployment": st.one_of(st.sampled_from(SERVED), st.sampled_from(["unknown", "x" * 10_000, "gpt-image-1\n", "%2e%2e"])),
        "api_version": st.one_of(st.just(API_VERSION), st.none(), st.text(max_size=30), st.just("9" * 5_000)),
        "prefer": st.sampled_from([None, "respond-async"]),
        "idempotency_key": st.one_of(st.none(), _ASCII, st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True)),
    }
)
EXAMPLES = 20  # per operation: the whole run stays within seconds
ERROR_FIELDS = {"code", "message", "param", "type", "filtered", "categories", "content_filter_results", "inner_error", "dequeue_count"}


@pytest.fixture()
def api_app(make_settings: Callable[..., Settings], sim: SimControl) -> Iterator[Any]:
    """The app as the entry points build it; its own queue, no retry budget (a 429 comes back at once)."""
    settings = make_settings(IMAGES_QUEUE=f"schemathesis-{uuid.uuid4().hex[:12]}", IMAGES_RETRY_BUDGET_SECONDS="0")
    yield create_app(Runtime(settings))
    schemathesis_asgi.shutdown_lifespans()  # closes the runtime, in the loop that opened it


@pytest.fixture()
def api_schema(api_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", api_app)


def test_no_route_answers_5xx_and_every_error_has_the_azure_shape(api_schema: Any) -> None:
    # One hypothesis run per operation, so a route added later is covered without a change here.
    # (schemathesis.pytest.from_fixture would do the same, but fails on this pytest: request.node._nodeid.)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /openai/v1/images/generations", "GET /openai/operations/images/{job_id}", "GET /images/{name}"}
    for operation in operations:
        _fuzz(operation)


def _fuzz(operation: Any) -> None:
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases, steer=STEERING)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any, steer: dict[str, Any]) -> None:
        _steer(case, steer)
        response = case.call()
        where = f"{case.method} {case.formatted_path}"
        assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
        if response.status_code >= 400:
            _assert_azure_error(where, response.json(), response.text)

    run()


def _steer(case: Any, steer: dict[str, Any]) -> None:
    if "deployment" in (case.path_parameters or {}):
        case.path_parameters["deployment"] = steer["deployment"]
    elif isinstance(case.body, dict) and case.method.upper() == "POST":
        case.body["model"] = steer["deployment"]  # the v1 path: model names the deployment
    if steer["api_version"] is not None:
        case.query = {**(case.query or {}), "api-version": steer["api_version"]}
    extra = {"Prefer": steer["prefer"], "Idempotency-Key": steer["idempotency_key"]}
    case.headers = {**(case.headers or {}), **{k: v for k, v in extra.items() if v is not None}}


def _assert_azure_error(where: str, body: Any, text: str) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, (where, body)
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"], (where, error)
    assert isinstance(error["message"], str) and error["message"], (where, error)
    assert "param" not in error or isinstance(error["param"], str), (where, error)
    assert set(error) <= ERROR_FIELDS, (where, error)
    assert len(text) < 4000, (where, text[:500])  # echoes are capped
