"""The images API simulator over real HTTP: paths, family rules, images, expiry, quota, faults, filters, auth, control."""

from __future__ import annotations

import asyncio
import base64
import io
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette

from local.servers import ServerThread, serve_in_thread
from local.simulator import (
    FAMILIES,
    FILTER_MARKERS,
    MARKERS,
    SimClock,
    SimError,
    Simulator,
    SimulatorConfig,
    check_request,
    create_simulator,
    parse_args,
)

KEY = "simulator-test-key-0001"
VERSION = "2025-04-01-preview"
BASE = SimulatorConfig(
    api_keys={KEY},
    deployments={"my-dalle": "dall-e-3", "images-prod": "gpt-image-2"},
    bearer_validator=lambda token: token == "good-entra-token",
    seed=7,
)


@pytest.fixture(scope="module")
def sim_app() -> Starlette:
    return create_simulator(replace(BASE))


@pytest.fixture(scope="module")
def sim_server(sim_app: Starlette) -> Iterator[ServerThread]:
    server = serve_in_thread(sim_app)
    yield server
    server.stop()


@pytest.fixture()
def state(sim_app: Starlette, sim_server: ServerThread) -> Simulator:
    """The simulator's in-process state (app.state.sim), back to BASE and zeroed before each test."""
    sim: Simulator = sim_app.state.sim
    sim.config = replace(BASE)
    sim.reset()
    return sim


@pytest.fixture()
def http(sim_server: ServerThread, state: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim_server.url, headers={"api-key": KEY}, timeout=30, trust_env=False) as client:
        yield client


def deployment_path(deployment: str, version: str | None = VERSION) -> str:
    return f"/openai/deployments/{deployment}/images/generations" + (f"?api-version={version}" if version else "")


def generate(http: httpx.Client, deployment: str, **body: Any) -> httpx.Response:
    return http.post(deployment_path(deployment), json={"prompt": "a lighthouse at dusk", **body})


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) >= {"error"}, body
    return body["error"]


# ------------------------------------------------------------------ paths and success bodies


def test_families_match_the_service() -> None:
    from shared.models import FAMILIES as SERVICE_FAMILIES

    assert FAMILIES == SERVICE_FAMILIES


def test_deployment_path_gpt_image_success_body_and_real_png(http: httpx.Client, state: Simulator) -> None:
    now = state.clock.freeze()
    response = generate(http, "gpt-image-1", quality="high")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == response.headers["apim-request-id"]
    body = response.json()
    assert set(body) == {"created", "data", "usage"}
    assert body["created"] == int(now)  # the simulator's clock
    (item,) = body["data"]
    assert set(item) == {"b64_json", "content_filter_results", "prompt_filter_results"}
    assert item["content_filter_results"]["sexual"] == {"filtered": False, "severity": "safe"}
    assert item["prompt_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    usage = body["usage"]
    assert usage["output_tokens"] == 4160
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"] == {"text_tokens": usage["input_tokens"], "image_tokens": 0}
    raw = base64.b64decode(item["b64_json"])
    image = decode(item["b64_json"])
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert 1_500_000 <= len(raw) <= 3_000_000


def test_every_result_is_a_distinct_valid_image(http: httpx.Client) -> None:
    response = generate(http, "gpt-image-1-mini", n=3, quality="low")
    assert response.status_code == 200, response.text
    payloads = [item["b64_json"] for item in response.json()["data"]]
    again = generate(http, "gpt-image-1-mini").json()["data"][0]["b64_json"]
    assert len(set([*payloads, again])) == 4
    for b64 in [*payloads, again]:
        assert decode(b64).size == (1024, 1024)
    assert response.json()["usage"]["output_tokens"] == 3 * 272


def test_v1_path_takes_model_from_body(http: httpx.Client) -> None:
    response = http.post(
        "/openai/v1/images/generations",
        json={"model": "images-prod", "prompt": "x", "size": "1536x1024", "output_format": "jpeg", "output_compression": 60},
    )
    assert response.status_code == 200, response.text
    image = decode(response.json()["data"][0]["b64_json"])
    assert (image.format, image.size) == ("JPEG", (1536, 1024))
    missing = http.post("/openai/v1/images/generations", json={"prompt": "x"})
    assert missing.status_code == 400 and error(missing)["param"] == "model"
    unknown = http.post("/openai/v1/images/generations", json={"model": "nope", "prompt": "x"})
    assert unknown.status_code == 404 and error(unknown)["code"] == "DeploymentNotFound"


def test_v1_path_accepts_the_key_as_bearer(sim_server: ServerThread, state: Simulator) -> None:
    response = httpx.post(
        f"{sim_server.url}/openai/v1/images/generations",
        json={"model": "gpt-image-1", "prompt": "x"},
        headers={"Authorization": f"Bearer {KEY}"},
        trust_env=False,
    )
    assert response.status_code == 200, response.text


def test_openai_path_bearer_key_and_openai_shapes(sim_server: ServerThread, state: Simulator) -> None:
    url = f"{sim_server.url}/v1/images/generations"
    ok = httpx.post(url, json={"model": "gpt-image-1", "prompt": "x"}, headers={"Authorization": f"Bearer {KEY}"}, trust_env=False)
    assert ok.status_code == 200, ok.text
    assert set(ok.json()["data"][0]) == {"b64_json"}  # no Azure filter annotations on OpenAI itself
    wrong = httpx.post(url, json={"model": "gpt-image-1", "prompt": "x"}, headers={"Authorization": "Bearer sk-wrong-123456"}, trust_env=False)
    assert wrong.status_code == 401 and error(wrong)["code"] == "invalid_api_key"
    azure_header = httpx.post(url, json={"model": "gpt-image-1", "prompt": "x"}, headers={"api-key": KEY}, trust_env=False)
    assert azure_header.status_code == 401
    no_model = httpx.post(url, json={"prompt": "x"}, headers={"Authorization": f"Bearer {KEY}"}, trust_env=False)
    assert no_model.status_code == 404 and error(no_model)["code"] == "model_not_found"


def test_api_version_is_required_and_gpt_image_needs_a_preview(http: httpx.Client) -> None:
    missing = http.post(deployment_path("gpt-image-1", None), json={"prompt": "x"})
    assert missing.status_code == 400 and error(missing)["code"] == "MissingApiVersionParameter"
    ga = http.post(deployment_path("gpt-image-1", "2024-10-21"), json={"prompt": "x"})
    assert ga.status_code == 400 and error(ga)["code"] == "OperationNotSupported"
    dalle_ga = http.post(deployment_path("my-dalle", "2024-10-21"), json={"prompt": "x"})
    assert dalle_ga.status_code == 200, dalle_ga.text


def test_unknown_deployment_and_model_in_body(http: httpx.Client, state: Simulator) -> None:
    unknown = generate(http, "not-deployed")
    assert unknown.status_code == 404
    assert error(unknown)["code"] == "DeploymentNotFound"
    assert error(unknown)["message"].startswith("The API deployment for this resource does not exist.")
    other = generate(http, "gpt-image-1", model="gpt-image-2")
    assert other.status_code == 404
    assert error(other) == {"code": "DeploymentNotFound", "message": "The model 'gpt-image-2' does not exist"}
    assert generate(http, "gpt-image-1", model="gpt-image-1").status_code == 200  # what the openai SDK sends
    state.update_config(model_in_body="reject")
    strict = generate(http, "gpt-image-1", model="gpt-image-1")
    assert strict.status_code == 404 and error(strict)["message"] == "The model 'gpt-image-1' does not exist"


def test_unknown_route_is_azure_shaped_404(http: httpx.Client) -> None:
    response = http.get("/openai/nothing-here")
    assert response.status_code == 404 and response.json() == {"error": {"code": "404", "message": "Resource not found"}}


# ------------------------------------------------------------------ dall-e-3 and expiring URLs


def test_dalle3_url_default_revised_prompt_and_blob(http: httpx.Client) -> None:
    now = http.post("/_sim/clock", json={"frozen": True}).json()["now"]
    response = generate(http, "my-dalle", size="1024x1792", style="natural")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"created", "data"}  # no usage for dall-e-3
    (item,) = body["data"]
    assert set(item) == {"url", "revised_prompt", "content_filter_results", "prompt_filter_results"}
    assert item["revised_prompt"] and item["revised_prompt"] != "a lighthouse at dusk"
    query = parse_qs(urlsplit(item["url"]).query)
    assert query["sig"] == ["sim"]
    expiry = datetime.strptime(query["se"][0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert expiry == math.ceil(now + 86_400)  # url_ttl_seconds, rounded up to a whole second as SAS se= is
    blob = httpx.get(item["url"], trust_env=False)
    assert blob.status_code == 200 and blob.headers["content-type"] == "image/png"
    extended = item["url"].replace(f"se={quote(query['se'][0], safe='')}", "se=2999-01-01T00%3A00%3A00Z")
    assert extended != item["url"] and httpx.get(extended, trust_env=False).status_code == 403  # se is signed
    image = Image.open(io.BytesIO(blob.content))
    assert (image.format, image.size) == ("PNG", (1024, 1792))
    b64 = generate(http, "my-dalle", response_format="b64_json").json()["data"][0]
    assert set(b64) == {"b64_json", "revised_prompt", "content_filter_results", "prompt_filter_results"}
    assert decode(b64["b64_json"]).size == (1024, 1024)


def test_url_expires_with_azure_blob_403(http: httpx.Client, state: Simulator) -> None:
    http.post("/_sim/config", json={"url_ttl_seconds": 1}).raise_for_status()
    now = http.post("/_sim/clock", json={"frozen": True}).json()["now"]
    url = generate(http, "my-dalle").json()["data"][0]["url"]
    assert httpx.get(url, trust_env=False).status_code == 200
    se = parse_qs(urlsplit(url).query)["se"][0]
    expiry = datetime.strptime(se, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert expiry == math.ceil(now + 1)
    assert http.post("/_sim/clock", json={"advance": expiry - now - 0.5}).json()["now"] == expiry - 0.5
    assert httpx.get(url, trust_env=False).status_code == 200  # half a second left
    assert http.post("/_sim/clock", json={"advance": 0.5}).json()["now"] == expiry
    expired = httpx.get(url, trust_env=False)
    assert expired.status_code == 403
    assert expired.headers["content-type"].startswith("application/xml")
    assert "<Code>AuthenticationFailed</Code>" in expired.text
    blob_id = urlsplit(url).path.rsplit("/", 1)[1].split(".")[0]
    assert state.blobs.get(blob_id) is None  # evicted
    assert httpx.get(url, trust_env=False).status_code == 403  # still refused after eviction
    forged = url.replace("sig=sim", "sig=forged")
    assert httpx.get(forged, trust_env=False).status_code == 403
    unknown = url.split("/_sim/blobs/")[0] + "/_sim/blobs/0000.png?se=2999-01-01T00%3A00%3A00Z&sig=sim"
    missing = httpx.get(unknown, trust_env=False)
    assert missing.status_code == 404 and "<Code>BlobNotFound</Code>" in missing.text


# ------------------------------------------------------------------ family rules


def rule_error(family: str, **body: Any) -> dict[str, Any]:
    with pytest.raises(SimError) as caught:
        check_request(family, {"prompt": "x", **body})
    assert caught.value.status == 400
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    return caught.value.body["error"]


@pytest.mark.parametrize(
    ("family", "body", "param", "code"),
    [
        ("dall-e-3", {"n": 2}, "n", "integer_above_max_value"),
        ("dall-e-3", {"size": "1536x1024"}, "size", "invalid_value"),
        ("dall-e-3", {"quality": "high"}, "quality", "invalid_value"),
        ("dall-e-3", {"style": "bold"}, "style", "invalid_value"),
        ("dall-e-3", {"prompt": "p" * 4001}, "prompt", "string_above_max_length"),
        ("dall-e-3", {"output_format": "png"}, "output_format", "unknown_parameter"),
        ("gpt-image-1", {"response_format": "b64_json"}, "response_format", "unknown_parameter"),
        ("gpt-image-1", {"style": "vivid"}, "style", "unknown_parameter"),
        ("gpt-image-1", {"size": "1792x1024"}, "size", "invalid_value"),
        ("gpt-image-1", {"n": 11}, "n", "integer_above_max_value"),
        ("gpt-image-1", {"n": 0}, "n", "integer_below_min_value"),
        ("gpt-image-1", {"n": "2"}, "n", "invalid_type"),
        ("gpt-image-1-mini", {"quality": "hd"}, "quality", "invalid_value"),
        ("gpt-image-1-mini", {"output_format": "webp"}, "output_format", "invalid_value"),
        ("gpt-image-1.5", {"output_compression": 50}, "output_compression", "invalid_value"),
        ("gpt-image-1.5", {"output_format": "jpeg", "output_compression": 101}, "output_compression", "integer_above_max_value"),
        ("gpt-image-1.5", {"output_format": "jpeg", "background": "transparent"}, "background", "invalid_value"),
        ("gpt-image-2", {"prompt": "p" * 32001}, "prompt", "string_above_max_length"),
        ("gpt-image-2", {"prompt": ""}, "prompt", "empty_string"),
        ("gpt-image-2", {"prompt": None}, "prompt", "missing_required_parameter"),
        ("gpt-image-2", {"response_format": "url"}, "response_format", "unknown_parameter"),
    ],
)
def test_family_rules_refuse(family: str, body: dict[str, Any], param: str, code: str) -> None:
    err = rule_error(family, **body)
    assert (err["param"], err["code"]) == (param, code), err


def test_unknown_parameter_message_is_the_real_one() -> None:
    assert rule_error("gpt-image-1", response_format="b64_json")["message"] == "Unknown parameter: 'response_format'."
    assert rule_error("gpt-image-1", style="vivid")["message"] == "Unknown parameter: 'style'."


@pytest.mark.parametrize(
    ("family", "body"),
    [
        ("dall-e-3", {"size": "1792x1024", "quality": "hd", "style": "natural", "response_format": "b64_json", "prompt": "p" * 4000}),
        ("gpt-image-1", {"size": "1024x1536", "n": 10, "quality": "high", "background": "transparent"}),
        ("gpt-image-1-mini", {"size": "auto", "output_format": "jpeg", "output_compression": 0}),
        ("gpt-image-1.5", {"quality": "medium", "background": "opaque", "moderation": "low", "user": "u1", "prompt": "p" * 32000}),
        ("gpt-image-2", {"size": "auto", "quality": "low", "stream": False}),
    ],
)
def test_family_rules_accept(family: str, body: dict[str, Any]) -> None:
    params = check_request(family, {"prompt": "x", **body})
    assert params.family == family
    assert params.response_format == ("b64_json" if family != "dall-e-3" else body.get("response_format", "url"))


@pytest.mark.parametrize(
    ("size", "ok"),
    [
        ("auto", True),
        ("1024x1024", True),
        ("1008x1008", True),
        ("1024x640", True),  # exactly 655,360 pixels
        ("1024x624", False),  # 638,976: too few
        ("3824x2160", True),  # 8,259,840 pixels, long edge < 3840
        ("3824x2176", False),  # 8,321,024: too many
        ("3840x2160", False),  # long edge must be < 3840
        ("3840x1280", False),
        ("3072x1024", True),  # ratio exactly 3:1
        ("3088x1024", False),  # ratio above 3:1
        ("1024x3088", False),
        ("1000x1000", False),  # not multiples of 16
        ("1024x1032", False),
        ("0x1024", False),
        ("1024", False),
        ("big", False),
    ],
)
def test_gpt_image_2_size_rule(size: str, ok: bool) -> None:
    if ok:
        params = check_request("gpt-image-2", {"prompt": "x", "size": size})
        assert (params.width, params.height) == ((1024, 1024) if size == "auto" else tuple(int(v) for v in size.split("x")))
    else:
        err = rule_error("gpt-image-2", size=size)
        assert (err["param"], err["code"]) == ("size", "invalid_value")


def test_rules_over_http_and_gpt_image_2_free_size(http: httpx.Client) -> None:
    refused = generate(http, "gpt-image-1", response_format="b64_json")
    assert refused.status_code == 400
    assert error(refused) == {
        "code": "unknown_parameter",
        "message": "Unknown parameter: 'response_format'.",
        "param": "response_format",
        "type": "invalid_request_error",
    }
    assert generate(http, "gpt-image-2", size="1032x1032").status_code == 400
    odd = generate(http, "gpt-image-2", size="1280x720", quality="low")
    assert odd.status_code == 200, odd.text
    assert decode(odd.json()["data"][0]["b64_json"]).size == (1280, 720)
    assert http.post(deployment_path("gpt-image-1"), content=b"{not json").status_code == 400


def test_transparent_png_has_alpha(http: httpx.Client) -> None:
    response = generate(http, "gpt-image-1", background="transparent")
    assert response.status_code == 200, response.text
    image = decode(response.json()["data"][0]["b64_json"])
    assert image.mode == "RGBA" and image.getchannel("A").getextrema()[0] == 0


def test_jpeg_compression_changes_weight(http: httpx.Client) -> None:
    sizes = {}
    for compression in (20, 95):
        data = generate(http, "gpt-image-1", output_format="jpeg", output_compression=compression).json()["data"][0]["b64_json"]
        assert decode(data).format == "JPEG"
        sizes[compression] = len(base64.b64decode(data))
    assert sizes[20] < sizes[95] < 1_500_000


# ------------------------------------------------------------------ quota, faults, latency, hang


def test_quota_429_with_both_headers_per_deployment(http: httpx.Client, state: Simulator) -> None:
    state.update_config(quota_requests=2, quota_window_seconds=30)
    state.clock.freeze()  # the window only moves when the test moves it
    first = generate(http, "gpt-image-1-mini")
    assert first.status_code == 200 and first.headers["x-ratelimit-remaining-requests"] == "1"
    assert generate(http, "gpt-image-1-mini").status_code == 200
    throttled = generate(http, "gpt-image-1-mini")
    assert throttled.status_code == 429
    seconds = int(throttled.headers["Retry-After"])
    assert seconds == 30
    assert int(throttled.headers["retry-after-ms"]) == 30_000
    assert error(throttled)["code"] == "429"
    assert f"Please retry after {seconds} seconds." in error(throttled)["message"]
    assert generate(http, "gpt-image-1").status_code == 200  # another deployment has its own window
    stats = state.snapshot()
    assert (stats["generations"], stats["throttled"], stats["requests"]) == (3, 1, 4)
    assert stats["deployments"] == {"gpt-image-1-mini": 2, "gpt-image-1": 1}
    state.clock.advance(29)
    one_left = generate(http, "gpt-image-1-mini")
    assert one_left.status_code == 429  # the window is not over yet
    assert (one_left.headers["Retry-After"], one_left.headers["retry-after-ms"]) == ("1", "1000")
    state.clock.advance(1)
    assert generate(http, "gpt-image-1-mini").status_code == 200  # ... and now it is
    assert generate(http, "gpt-image-1-mini").status_code == 200
    assert generate(http, "gpt-image-1-mini").status_code == 429
    http.post("/_sim/reset").raise_for_status()  # the window goes with the stats
    assert generate(http, "gpt-image-1-mini").status_code == 200


def test_fail_next_and_fail_status(http: httpx.Client, state: Simulator) -> None:
    http.post("/_sim/config", json={"fail_next": 2}).raise_for_status()
    for _ in range(2):
        failed = generate(http, "gpt-image-1")
        assert failed.status_code == 500
        assert failed.json() == {"error": {"code": "InternalServerError", "message": "The server had an error while processing your request."}}
    assert generate(http, "gpt-image-1").status_code == 200
    state.update_config(fail_status=503, fail_rate=1.0)
    assert generate(http, "gpt-image-1").status_code == 503
    state.update_config(fail_rate=0.0)
    assert generate(http, "gpt-image-1", prompt="x [[fail:502]]").status_code == 502
    stats = state.snapshot()
    assert (stats["failed"], stats["generations"], stats["succeeded"]) == (4, 1, 1)


def test_policy_block_403(http: httpx.Client, state: Simulator) -> None:
    state.update_config(policy_blocked=True)
    blocked = generate(http, "gpt-image-1")
    assert blocked.status_code == 403 and error(blocked)["code"] == "Forbidden"
    assert state.snapshot()["blocked"] == 1


async def test_latency_overlaps_across_concurrent_requests(sim_server: ServerThread, state: Simulator) -> None:
    state.update_config(latency=600)  # longer than the test: only release() ends it
    async with httpx.AsyncClient(base_url=sim_server.url, headers={"api-key": KEY}, timeout=30, trust_env=False) as client:
        requests = [asyncio.ensure_future(client.post(deployment_path("my-dalle"), json={"prompt": f"p{i}"})) for i in range(6)]
        met, stats = await asyncio.to_thread(state.wait_for, {"in_flight": 6})
        assert met, stats  # all six are in their latency at once: overlapped, not one after another
        assert not any(r.done() for r in requests)
        assert state.release() == 6
        responses = await asyncio.gather(*requests)
    assert [r.status_code for r in responses] == [200] * 6
    assert state.snapshot()["in_flight"] == 0
    state.update_config(latency=[0.05, 0.1])
    assert (state.config.latency, state.config.latency_max) == (0.05, 0.1)


def test_hang_outlasts_the_client_and_is_still_billed(sim_server: ServerThread, http: httpx.Client, state: Simulator) -> None:
    with pytest.raises(httpx.ReadTimeout):
        http.post(deployment_path("gpt-image-1"), json={"prompt": "slow [[hang]]"}, timeout=0.3)
    assert state.snapshot()["generations"] == 1  # billed when the work started
    met, stats = state.wait_for(at_most={"in_flight": 0})  # the disconnect ends the 600 s hang
    assert met, stats
    assert (stats["in_flight"], stats["abandoned"], stats["succeeded"]) == (0, 1, 0)
    assert stats["recent"][-1]["outcome"] == "abandoned"

    state.update_config(hang_next=1)  # hang_seconds stays 600: the countdown holds the next generation
    held = ThreadPoolExecutor(1)
    answer = held.submit(generate, http, "gpt-image-1")
    met, stats = state.wait_for(at_least={"in_flight": 1})
    assert met, stats
    assert not answer.done()
    assert http.post("/_sim/release").json() == {"released": 1}
    assert answer.result(timeout=30).status_code == 200
    assert state.config.hang_next == 0

    state.update_config(stop_on_disconnect=False)
    with pytest.raises(httpx.ReadTimeout):
        http.post(deployment_path("gpt-image-1"), json={"prompt": "slow [[hang]]"}, timeout=0.2)
    assert state.snapshot()["in_flight"] == 1  # keeps working for a client that is gone
    assert state.release() == 1
    met, stats = state.wait_for(at_most={"in_flight": 0})
    assert met, stats
    assert (stats["succeeded"], stats["abandoned"]) == (2, 1)  # finished, not abandoned
    held.shutdown()


# ------------------------------------------------------------------ content filter


def test_markers_are_documented() -> None:
    assert set(FILTER_MARKERS) <= set(MARKERS)
    assert set(FILTER_MARKERS.values()) == {"prompt", "prompt:legacy", "image", "image:legacy"}


def test_prompt_filter_current_shape(http: httpx.Client, state: Simulator) -> None:
    response = generate(http, "gpt-image-1", prompt="a scene [[filter:prompt]]")
    assert response.status_code == 400
    err = error(response)
    assert (err["code"], err["type"]) == ("content_policy_violation", "invalid_request_error")
    assert err["message"].startswith("Your request was rejected as a result of our safety system.")
    inner = err["inner_error"]
    assert inner["code"] == "ResponsibleAIPolicyViolation"
    assert inner["content_filter_results"]["violence"] == {"filtered": True, "severity": "high"}
    assert inner["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    assert "[[" not in inner["revised_prompt"]
    stats = state.snapshot()
    assert (stats["filtered"], stats["generations"]) == (1, 0)  # a refused prompt is not billed


def test_prompt_filter_legacy_shape(http: httpx.Client) -> None:
    response = generate(http, "my-dalle", prompt="[[filter:prompt:legacy]]")
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"created", "error"} and isinstance(body["created"], int)
    assert body["error"] == {"code": "contentFilter", "message": "Your task failed as a result of our safety system."}


def test_image_filter_legacy_shape(http: httpx.Client) -> None:
    response = generate(http, "my-dalle", prompt="[[filter:image:legacy]]")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "contentFilter",
        "message": "Generated image was filtered as a result of our safety system.",
    }


def test_image_filter_current_shape_is_billed(http: httpx.Client, state: Simulator) -> None:
    response = generate(http, "gpt-image-2", prompt="[[filter:image]] a beach")
    assert response.status_code == 400
    err = error(response)
    assert err["code"] == "content_policy_violation"
    assert err["message"].startswith("Generated image was filtered as a result of our safety system.")
    assert err["inner_error"]["code"] == "ResponsibleAIPolicyViolation"
    assert err["inner_error"]["content_filter_results"]["sexual"]["filtered"] is True
    stats = state.snapshot()
    assert (stats["filtered"], stats["generations"]) == (1, 1)


# ------------------------------------------------------------------ auth


def test_auth_keys_and_entra_tokens(sim_server: ServerThread, state: Simulator) -> None:
    url = f"{sim_server.url}{deployment_path('gpt-image-1')}"

    def post(headers: dict[str, str]) -> httpx.Response:
        return httpx.post(url, json={"prompt": "x"}, headers=headers, trust_env=False)

    assert post({"api-key": KEY}).status_code == 200
    wrong = post({"api-key": "wrong"})
    assert wrong.status_code == 401
    assert error(wrong)["code"] == "401" and error(wrong)["message"].startswith("Access denied due to invalid subscription key")
    assert post({}).status_code == 401
    assert post({"Authorization": "Bearer good-entra-token"}).status_code == 200
    assert post({"Authorization": "Bearer bad-token"}).status_code == 401
    assert post({"Authorization": f"Bearer {KEY}"}).status_code == 401  # a key is no Entra token here
    state.update_config(bearer_validator=None)
    assert post({"Authorization": "Bearer good-entra-token"}).status_code == 401
    state.update_config(accept_any_bearer=True)
    assert post({"Authorization": "Bearer anything"}).status_code == 200
    state.update_config(api_keys=[], accept_any_bearer=False)
    assert not state.config.auth_enabled
    assert post({}).status_code == 200  # local convenience: nothing configured, nothing checked
    state.update_config(require_auth=True)
    assert post({"api-key": KEY}).status_code == 401
    assert state.snapshot()["unauthorized"] == 6


# ------------------------------------------------------------------ control endpoints


def test_stats_config_and_reset_over_http(http: httpx.Client) -> None:
    config = http.post("/_sim/config", json={"latency": [0, 0.01], "quota_requests": 50, "fail_rate": 0})
    assert config.status_code == 200
    shown = config.json()
    assert (shown["latency"], shown["latency_max"], shown["quota_requests"]) == (0, 0.01, 50)
    assert KEY not in config.text and shown["api_keys"] == ["***0001"]
    assert http.get("/_sim/config").json()["quota_requests"] == 50
    assert http.post("/_sim/config", json={"no_such_field": 1}).status_code == 400
    assert http.post("/_sim/config", json={"fail_rate": 2}).status_code == 400
    assert http.post("/_sim/config", json={"fail_status": 404}).status_code == 400
    assert http.post("/_sim/config", json={"bearer_validator": None}).status_code == 400

    generate(http, "gpt-image-1", prompt="counted")
    generate(http, "gpt-image-1", size="bad")
    http.post(deployment_path("gpt-image-1"), json={"prompt": "x"}, headers={"api-key": "a-wrong-but-long-key-9999"})
    stats = http.get("/_sim/stats").json()
    assert {k: stats[k] for k in ("requests", "generations", "succeeded", "rejected", "unauthorized", "throttled", "failed", "filtered")} == {
        "requests": 3,
        "generations": 1,
        "succeeded": 1,
        "rejected": 1,
        "unauthorized": 1,
        "throttled": 0,
        "failed": 0,
        "filtered": 0,
    }
    assert stats["deployments"] == {"gpt-image-1": 1}
    recent = stats["recent"]
    assert [r["status"] for r in recent] == [200, 400, 401]
    assert recent[0]["body"] == {"prompt": "counted"} and recent[0]["family"] == "gpt-image-1"
    assert recent[0]["headers"]["api-key"] == "***0001"
    assert recent[2]["headers"]["api-key"] == "***9999"
    assert KEY not in str(recent)

    after = http.post("/_sim/reset").json()
    assert (after["requests"], after["generations"], after["recent"]) == (0, 0, [])
    assert http.get("/_sim/config").json()["quota_requests"] == 50  # reset keeps the configuration
    assert http.get("/_sim/health").json() == {"ok": True}


def test_clock_is_injectable_and_moves_only_as_told() -> None:
    real = [1_000.0]
    clock = SimClock(lambda: real[0])
    assert create_simulator(replace(BASE, prewarm=False), clock=clock).state.sim.clock is clock
    assert clock.now() == 1_000
    real[0] = 1_005
    assert clock.advance(10) == 1_015 and clock.now() == 1_015
    assert clock.freeze() == 1_015
    real[0] = 2_000
    assert clock.now() == 1_015  # frozen
    assert clock.advance(5) == 1_020
    clock.unfreeze()
    real[0] = 2_001
    assert clock.now() == 1_021  # runs again from where it stood
    clock.real()
    assert clock.now() == 2_001
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_clock_wait_and_release_over_http(http: httpx.Client, state: Simulator) -> None:
    shown = http.get("/_sim/clock").json()
    assert (shown["frozen"], shown["offset"]) == (False, 0)
    assert http.post("/_sim/clock", json={"advance": 3600}).json()["offset"] == 3600
    assert http.post("/_sim/clock", json={"real": True, "frozen": True}).json()["frozen"] is True
    for bad in ({"advance": -1}, {"advance": "soon"}, {"rewind": 1}, [1]):
        assert http.post("/_sim/clock", json=bad).status_code == 400
    http.post("/_sim/reset").raise_for_status()
    assert http.get("/_sim/clock").json()["frozen"] is False  # reset puts the clock back to real time

    timed_out = http.post("/_sim/wait", json={"at_least": {"requests": 1}, "timeout": 0})
    assert timed_out.status_code == 408 and timed_out.json()["requests"] == 0
    assert http.post("/_sim/wait", json={"at_least": {"no_such_counter": 1}}).status_code == 400
    assert http.post("/_sim/wait", json={"at_most": {"requests": "one"}}).status_code == 400
    generate(http, "gpt-image-1-mini")
    met = http.post("/_sim/wait", json={"at_least": {"requests": 1, "succeeded": 1}, "at_most": {"in_flight": 0}})
    assert met.status_code == 200 and met.json()["succeeded"] == 1
    assert http.post("/_sim/release").json() == {"released": 0}  # nothing at work


def test_recent_is_bounded_and_long_prompts_truncated(http: httpx.Client, state: Simulator) -> None:
    state.update_config(recent_limit=3)
    for i in range(5):
        generate(http, "gpt-image-1-mini", prompt=f"{i}" + "p" * 2000, size="nope")
    recent = state.snapshot()["recent"]
    assert len(recent) == 3 and recent[-1]["body"]["prompt"].startswith("4")
    assert len(recent[-1]["body"]["prompt"]) < 600


# ------------------------------------------------------------------ clients and CLI


def test_official_openai_sdk_against_the_simulator(sim_server: ServerThread, state: Simulator) -> None:
    from openai import AzureOpenAI, OpenAI

    azure = AzureOpenAI(azure_endpoint=sim_server.url, api_key=KEY, api_version=VERSION, max_retries=0)
    result = azure.images.generate(model="gpt-image-1", prompt="a red fox in snow", quality="low")
    assert result.data and result.data[0].b64_json
    assert decode(result.data[0].b64_json).size == (1024, 1024)
    assert result.usage is not None and result.usage.output_tokens == 272
    sent = state.snapshot()["recent"][-1]
    assert sent["path"] == "/openai/deployments/gpt-image-1/images/generations" and sent["query"] == f"api-version={VERSION}"

    v1 = OpenAI(base_url=f"{sim_server.url}/openai/v1/", api_key=KEY, max_retries=0)
    assert v1.images.generate(model="images-prod", prompt="x", size="1024x1024").data

    openai = OpenAI(base_url=f"{sim_server.url}/v1", api_key=KEY, max_retries=0)
    dalle = openai.images.generate(model="dall-e-3", prompt="x", response_format="url")
    assert dalle.data and dalle.data[0].url and dalle.data[0].revised_prompt


def test_command_line_builds_the_config() -> None:
    args, config = parse_args(
        ["--port", "9000", "--latency", "1,3", "--quota", "6", "--api-key", "k1", "--deployment", "prod=gpt-image-2", "--fail-status", "503"]
    )
    assert args.port == 9000
    assert (config.latency, config.latency_max, config.quota_requests, config.fail_status) == (1.0, 3.0, 6, 503)
    assert config.api_keys == frozenset({"k1"}) and config.family_of("prod") == "gpt-image-2"
    assert config.family_of("gpt-image-1") == "gpt-image-1" and config.family_of("other") is None
    with pytest.raises(ValueError):
        SimulatorConfig(deployments={"x": "dall-e-2"})
