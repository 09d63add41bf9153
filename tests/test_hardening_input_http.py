"""Input hygiene, echo and reflection over HTTP: what a careless or hostile caller sends never breaks a promise.

In process (httpx's ASGI transport) where the transport is not what is tested; over real
uvicorn where it is (keep-alive after a refused body, the server's own address as the
public base). Storage is real Azurite, upstream the simulator: every refusal here happens
before anything goes upstream, which the simulator's counters prove.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from local.servers import ServerThread, serve_in_thread
from shared.api import create_app
from shared.api.public import KNOWN_API_VERSIONS
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import SimControl

InProcess = Callable[..., Awaitable[httpx.AsyncClient]]

API_VERSION = "2025-04-01-preview"
DEPLOYMENT = "/openai/deployments/gpt-image-1/images/generations"
SUBMIT = "/openai/deployments/gpt-image-1/images/generations:submit"
V1 = "/openai/v1/images/generations"
JSON = {"content-type": "application/json"}
EVIL = "evil.example.com"
# Every POST route, and the asynchronous way into the first and the v1 one.
POST_ROUTES: list[tuple[str, dict[str, str]]] = [
    (f"{DEPLOYMENT}?api-version={API_VERSION}", {}),
    (f"{DEPLOYMENT}?api-version={API_VERSION}", {"Prefer": "respond-async"}),
    (f"{SUBMIT}?api-version={API_VERSION}", {}),
    (V1, {}),
    (V1, {"Prefer": "respond-async"}),
]


def deep(depth: int) -> bytes:
    return b'{"prompt": "x", "user": ' + b"[" * depth + b"]" * depth + b"}"


def unique_queue() -> str:
    return f"hardening-{uuid.uuid4().hex[:12]}"


async def post_raw(client: httpx.AsyncClient, path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post(path, content=content, headers={**JSON, **(headers or {})})


def assert_refused(response: httpx.Response, status: int, code: str, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert error.get("param") == param, error
    assert isinstance(error["message"], str) and error["message"]
    return error


# --- text that cannot be stored, and prompts with nothing to draw ------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"prompt": "a cat \\ud800"}', "prompt"),
        (b'{"prompt": "\\udfff"}', "prompt"),
        (b'{"prompt": "a cat", "user": "u\\ud83d"}', "user"),
        (b'{"prompt": "a cat", "model": "gpt-image-1\\udc00"}', "model"),
    ],
)
@pytest.mark.parametrize(("path", "headers"), POST_ROUTES[:3])
async def test_unpaired_surrogates_are_refused_before_upstream(
    in_process: InProcess, sim: SimControl, path: str, headers: dict[str, str], body: bytes, param: str
) -> None:
    client = await in_process(IMAGES_QUEUE=unique_queue())
    assert_refused(await post_raw(client, path, body, headers), 400, "invalid_encoding", param)
    assert sim.stats()["requests"] == 0


async def test_a_surrogate_in_a_parameter_name_is_a_400_not_a_500(app_client: httpx.AsyncClient, sim: SimControl) -> None:
    response = await post_raw(app_client, f"{DEPLOYMENT}?api-version={API_VERSION}", b'{"prompt": "x", "\\ud800": 1}')
    assert_refused(response, 400, "invalid_encoding")
    # On the v1 path model names the deployment, looked up before the body is parsed: no such deployment.
    response = await post_raw(app_client, V1, b'{"prompt": "x", "model": "\\ud800"}')
    assert_refused(response, 404, "DeploymentNotFound", "model")
    assert sim.stats()["requests"] == 0


@pytest.mark.parametrize("prompt", ["\\u0000", "\\u0000\\u0001 \\t", "\\u200b", "\\u200b\\u200d\\u2060", "\\ufeff", "\\u2800", "\\u3164", "\\u00ad"])
async def test_a_prompt_with_no_visible_character_is_not_billed(app_client: httpx.AsyncClient, sim: SimControl, prompt: str) -> None:
    body = b'{"prompt": "' + prompt.encode() + b'"}'
    assert_refused(await post_raw(app_client, f"{DEPLOYMENT}?api-version={API_VERSION}", body), 400, "invalid_value", "prompt")
    assert sim.stats()["requests"] == 0


@pytest.mark.parametrize("field", ["prompt", "user"])
@pytest.mark.parametrize("char", ["\\u0000", "\\u0007", "\\u001b", "\\u007f", "\\u0085", "\\u009b"])
async def test_control_characters_inside_free_text_are_refused(app_client: httpx.AsyncClient, sim: SimControl, field: str, char: str) -> None:
    text = b"a cat " + char.encode() + b" on a mat"
    body = b'{"prompt": "' + (text if field == "prompt" else b"x") + b'"' + (b', "user": "' + text + b'"' if field == "user" else b"") + b"}"
    error = assert_refused(await post_raw(app_client, f"{DEPLOYMENT}?api-version={API_VERSION}", body), 400, "invalid_value", field)
    assert "U+" in error["message"]  # names the character, without echoing it raw
    assert sim.stats()["requests"] == 0


# --- the shape of the JSON itself ---------------------------------------------------------------------


@pytest.mark.parametrize("body", [b'{"prompt": "a", "prompt": "b"}', b'{"prompt": "a", "n": 1, "n": 1}', b'{"prompt": "a", "user": "u", "size": "auto", "user": "v"}'])
async def test_duplicate_keys_are_refused(app_client: httpx.AsyncClient, sim: SimControl, body: bytes) -> None:
    error = assert_refused(await post_raw(app_client, f"{DEPLOYMENT}?api-version={API_VERSION}", body), 400, "invalid_json")
    assert "twice" in error["message"]
    assert sim.stats()["requests"] == 0


@pytest.mark.parametrize(("path", "headers"), POST_ROUTES)
async def test_deeply_nested_bodies_are_invalid_json_on_every_post_route(
    in_process: InProcess, sim: SimControl, path: str, headers: dict[str, str]
) -> None:
    client = await in_process(IMAGES_QUEUE=unique_queue())
    for body in (deep(1000), b"[" * 5000, b'{"a": ' * 3000):
        assert_refused(await post_raw(client, path, body, headers), 400, "invalid_json")
    assert sim.stats()["requests"] == 0


@pytest.fixture()
def own_api(make_settings: Callable[..., Settings], sim: SimControl) -> Iterator[Callable[..., ServerThread]]:
    """An API over real HTTP with settings overrides (each with a queue of its own); stopped after the test."""
    started: list[ServerThread] = []

    def start(**overrides: str) -> ServerThread:
        server = serve_in_thread(create_app(Runtime(make_settings(IMAGES_QUEUE=unique_queue(), **overrides))))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_the_connection_stays_usable_after_a_deeply_nested_body(own_api: Callable[..., ServerThread], sim: SimControl) -> None:
    api = own_api()
    with httpx.Client(base_url=api.url, timeout=30) as client:
        for path, headers in POST_ROUTES:
            first = client.post(path, content=deep(1000), headers={**JSON, **headers})
            assert_refused(first, 400, "invalid_json")
            second = client.get("/healthz")
            assert second.status_code == 200
            # The same TCP connection answered both: the server did not reset it.
            ports = {r.extensions["network_stream"].get_extra_info("client_addr") for r in (first, second)}
            assert len(ports) == 1, ports
    assert sim.stats()["requests"] == 0


# --- echoes of caller input are capped ------------------------------------------------------------------


async def test_every_echo_of_caller_input_is_capped(app_client: httpx.AsyncClient, sim: SimControl) -> None:
    huge = "m" * 250_000
    long_path = "d" * 10_000
    cases = [
        (await app_client.post(f"/openai/deployments/{long_path}/images/generations?api-version={API_VERSION}", json={"prompt": "x"}), 404),
        (await app_client.post(f"/openai/deployments/{long_path}/images/generations:submit?api-version={API_VERSION}", json={"prompt": "x"}), 404),
        (await app_client.post(V1, json={"prompt": "x", "model": huge}), 404),
        (await app_client.post(f"{DEPLOYMENT}?api-version={API_VERSION}", json={"prompt": "x", "model": huge}), 400),
        (await app_client.post(f"{DEPLOYMENT}?api-version={API_VERSION}", json={"prompt": "x", huge: 1}), 400),
        (await app_client.post(f"{DEPLOYMENT}?api-version={API_VERSION}", json={"prompt": "x", "quality": huge}), 400),
        (await app_client.post(f"{DEPLOYMENT}?api-version={'2' * 10_000}", json={"prompt": "x"}), 400),
        (await app_client.get(f"/openai/operations/images/{long_path}"), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text[:300]
        error = response.json()["error"]
        assert len(error["message"]) < 700, error["message"][:800]  # the echo capped (the api-version refusal lists the known ones)
        assert len(error.get("param") or "") <= 110
        assert "characters)" in error["message"], error["message"]  # says how long the original was
    assert sim.stats()["requests"] == 0


# --- api-version: one check, every route that takes it --------------------------------------------------


@pytest.mark.parametrize(
    "version",
    [
        "2025-04-01-preview%0A", "2025-04-01-preview%0D%0A", "2025-04-01%0a", "%202025-04-01", "%3Cscript%3Ealert(1)%3C/script%3E",
        "\uff12\uff10\uff12\uff15-04-01-preview", "2025-04-01-preview-x", "", "2023-01-01", "2099-01-01-preview", "2025-04-01", "2023-06-01-preview",
    ],
)
@pytest.mark.parametrize("path", [DEPLOYMENT, SUBMIT])
async def test_a_malformed_api_version_is_refused_on_every_route_that_takes_it(
    in_process: InProcess, sim: SimControl, path: str, version: str
) -> None:
    client = await in_process(IMAGES_QUEUE=unique_queue())
    response = await client.post(f"{path}?api-version={version}", json={"prompt": "x"})
    code = "missing_required_parameter" if version == "" else "invalid_value"
    error = assert_refused(response, 400, code, "api-version")
    assert "Operation-Location" not in response.headers and "<script>" not in str(response.headers)
    assert len(error["message"]) < 600
    if version:  # the refusal lists what the service takes
        assert all(known in error["message"] for known in KNOWN_API_VERSIONS)
    status = await client.get(f"/openai/operations/images/nothing-here?api-version={version or 'x'}")
    assert_refused(status, 400, "invalid_value", "api-version")
    assert sim.stats()["requests"] == 0


@pytest.mark.parametrize("version", KNOWN_API_VERSIONS)
async def test_every_known_api_version_is_taken_and_none_goes_upstream(in_process: InProcess, sim: SimControl, version: str) -> None:
    client = await in_process(IMAGES_QUEUE=unique_queue())
    response = await client.post(f"{DEPLOYMENT}?api-version={version}", json={"prompt": "x"})
    assert response.status_code == 200, response.text
    [call] = sim.stats()["recent"]
    assert call["query"] == "api-version=2025-04-01-preview"  # AZURE_OPENAI_API_VERSION, whatever the caller spoke
    submitted = await client.post(f"{SUBMIT}?api-version={version}", json={"prompt": "x"})
    assert submitted.status_code == 202 and submitted.headers["Operation-Location"].endswith(f"?api-version={version}")


async def test_submit_requires_an_api_version_like_the_generation_route(in_process: InProcess, sim: SimControl) -> None:
    client = await in_process(IMAGES_QUEUE=unique_queue())
    assert_refused(await client.post(SUBMIT, json={"prompt": "x"}), 400, "missing_required_parameter", "api-version")
    # The status route takes api-version too: checked when given, optional when not.
    assert_refused(await client.get("/openai/operations/images/nothing-here"), 404, "NotFound", "id")
    assert_refused(await client.get(f"/openai/operations/images/nothing-here?api-version={API_VERSION}"), 404, "NotFound", "id")


# --- no reflection of the Host header ---------------------------------------------------------------------


async def test_operation_location_never_reflects_the_host_header(in_process: InProcess, sim: SimControl) -> None:
    client = await in_process(IMAGES_QUEUE=unique_queue())
    hostile = {"Host": EVIL, "X-Forwarded-Host": EVIL, "Forwarded": f"host={EVIL}"}
    responses = [
        await client.post(f"{SUBMIT}?api-version={API_VERSION}", json={"prompt": "x"}, headers=hostile),
        await client.post(f"{DEPLOYMENT}?api-version={API_VERSION}", json={"prompt": "x"}, headers={**hostile, "Prefer": "respond-async"}),
        await client.post(V1 + "?api-version=%3Cscript%3E", json={"prompt": "x", "model": "gpt-image-1"}, headers={**hostile, "Prefer": "respond-async"}),
    ]
    for response in responses:
        assert response.status_code == 202, response.text
        location = response.headers["Operation-Location"]
        assert location.startswith("http://api.test/openai/operations/images/"), location  # the server's own address
        assert location.endswith(f"?api-version={API_VERSION}"), location  # never the caller's text
        assert EVIL not in response.text and EVIL not in str(response.headers)
    for path in ("/healthz/", "/openapi.json/", "/images/", "/openai/operations/images/x/"):
        response = await client.get(path, headers=hostile)
        assert response.status_code in (404, 405) and EVIL not in str(response.headers) and EVIL not in response.text, (path, response.headers)


async def test_the_configured_public_base_wins(in_process: InProcess, sim: SimControl) -> None:
    client = await in_process(IMAGES_QUEUE=unique_queue(), IMAGES_PUBLIC_BASE_URL="https://images.example.com/gateway/")
    response = await client.post(f"{SUBMIT}?api-version={API_VERSION}", json={"prompt": "x"}, headers={"Host": EVIL})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.headers["Operation-Location"] == f"https://images.example.com/gateway/openai/operations/images/{job_id}?api-version={API_VERSION}"


def test_over_real_http_the_base_is_the_servers_own_address(own_api: Callable[..., ServerThread], sim: SimControl) -> None:
    api = own_api()
    with httpx.Client(base_url=api.url, timeout=30) as client:
        response = client.post(f"{SUBMIT}?api-version={API_VERSION}", json={"prompt": "x"}, headers={"Host": EVIL})
        assert response.status_code == 202, response.text
        location = response.headers["Operation-Location"]
        assert location.startswith(f"{api.url}/openai/operations/images/"), location
        assert client.get(location).json()["status"] == "notRunning"


# --- anchors: a trailing newline is not part of a name ----------------------------------------------------


async def test_a_trailing_newline_never_names_an_image_or_a_job(app_client: httpx.AsyncClient, sim: SimControl) -> None:
    made = await app_client.post(f"{DEPLOYMENT}?api-version={API_VERSION}", json={"prompt": "x"})
    assert made.status_code == 200, made.text
    name = urlsplit(made.json()["data"][0]["url"]).path.split("/images/", 1)[1]  # /<account>/images/<name>
    assert (await app_client.get(f"/images/{name}")).status_code == 302
    for suffix in ("%0A", "%0D%0A", "%0A%0A", "%0D"):
        refused = await app_client.get(f"/images/{name}{suffix}")
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "NotFound", (suffix, refused.headers)
    assert_refused(await app_client.get(f"/openai/operations/images/{made.headers['x-request-id']}%0A"), 404, "NotFound", "id")
