"""The synchronous path: API -> simulator over HTTP -> Azurite.

End to end over real HTTP (a uvicorn server: ``client``) where the archive and its links
are what is proved; in process (``app_client`` / ``in_process``: httpx's ASGI transport)
for the contract, the validation and upstream behaviour. Storage is real Azurite in both.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from local.azurite import Azurite, start_azurite
from shared import models
from shared.api import create_app
from shared.api.schema import generation_schema
from shared.errors import ServiceError
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import SimControl

InProcess = Callable[..., Awaitable[httpx.AsyncClient]]

DEPLOYMENT_PATH = "/openai/deployments/{}/images/generations?api-version=2025-04-01-preview"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def container(azurite: Azurite, name: str = "images"):  # type: ignore[no-untyped-def]
    return BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(name)


def blob_names(azurite: Azurite) -> set[str]:
    c = container(azurite)
    if not c.exists():
        return set()
    return {b.name for b in c.list_blobs()}


def post(client: httpx.Client, deployment: str, body: object, **kwargs: object) -> httpx.Response:
    return client.post(DEPLOYMENT_PATH.format(deployment), json=body, **kwargs)  # type: ignore[arg-type]


async def apost(client: httpx.AsyncClient, deployment: str, body: object, **kwargs: object) -> httpx.Response:
    return await client.post(DEPLOYMENT_PATH.format(deployment), json=body, **kwargs)  # type: ignore[arg-type]


def record_for(azurite: Azurite, image_name: str) -> dict:  # type: ignore[type-arg]
    base = image_name.rsplit("/", 1)[0]
    return json.loads(container(azurite).download_blob(f"{base}/record.json").readall())


def failure_records_since(azurite: Azurite, before: set[str], response: httpx.Response) -> list[dict]:  # type: ignore[type-arg]
    """What a failed call that reached upstream leaves: failure records only (no image, no record.json), under its x-request-id."""
    written = blob_names(azurite) - before
    assert written, "a call that reached upstream leaves a failure record"
    assert all(n.rsplit("/", 1)[1].startswith("failed-") and n.endswith(".json") for n in written), written
    assert {n.split("/")[1] for n in written} == {response.headers["x-request-id"]}
    return [json.loads(container(azurite).download_blob(n).readall()) for n in sorted(written)]


def blob_name_from_url(url: str) -> str:
    path = urlsplit(url).path  # /devstoreaccount1/images/<name>
    return path.split("/images/", 1)[1]


# --- end to end over real HTTP: the archive and its links ---


def test_gpt_image_generation_is_archived_with_record_and_link(client: httpx.Client, azurite: Azurite, sim: SimControl) -> None:
    response = post(client, "gpt-image-1-mini", {"prompt": "a lighthouse at dawn", "size": "1024x1024", "quality": "low"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["created"], int)
    assert len(body["data"]) == 1
    assert body["usage"]["total_tokens"] > 0
    url = body["data"][0]["url"]
    image = httpx.get(url)
    assert image.status_code == 200
    assert image.content.startswith(PNG_MAGIC)
    assert image.headers["content-type"] == "image/png"
    name = blob_name_from_url(url)
    record = record_for(azurite, name)
    assert record["prompt"] == "a lighthouse at dawn"
    assert record["deployment"] == "gpt-image-1-mini"
    assert record["model"] == "gpt-image-1-mini"
    assert record["parameters"]["asked"]["quality"] == "low"
    assert record["usage"] == body["usage"]
    assert record["images"][0]["name"] == name
    assert record["images"][0]["bytes"] == len(image.content)
    assert record["images"][0]["sha256"] == hashlib.sha256(image.content).hexdigest()
    assert record["images"][0]["content_type"] == "image/png"
    assert "lighthouse" not in name  # names come from ids, never from the prompt
    assert sim.stats()["generations"] == 1


def test_stable_route_redirects_to_fresh_sas(client: httpx.Client, sim: SimControl) -> None:
    url = post(client, "gpt-image-1-mini", {"prompt": "x"}).json()["data"][0]["url"]
    name = blob_name_from_url(url)
    redirect = client.get(f"/images/{name}", follow_redirects=False)
    assert redirect.status_code == 302
    assert "sig=" in redirect.headers["location"]
    assert redirect.headers["cache-control"] == "no-store"
    assert httpx.get(redirect.headers["location"]).content == httpx.get(url).content
    missing = client.get("/images/2020-01-01/0123456789abcdef0123456789abcdef/0.png")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NotFound"
    assert client.get("/images/../secrets.txt").status_code == 404


def test_chunked_body_over_limit_is_refused(client: httpx.Client, sim: SimControl) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"y" * 10_000
        yield b'"}'

    response = client.post(DEPLOYMENT_PATH.format("gpt-image-1"), content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert sim.stats()["requests"] == 0


# --- in process: what the API answers ---


async def test_link_is_read_only_sas_with_configured_lifetime(in_process: InProcess, sim: SimControl) -> None:
    client = await in_process(IMAGES_LINK_TTL_SECONDS="3600")
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    response = await apost(client, "gpt-image-1", {"prompt": "x"})
    after = dt.datetime.now(dt.UTC)
    assert response.status_code == 200, response.text
    query = parse_qs(urlsplit(response.json()["data"][0]["url"]).query)
    assert query["sp"] == ["r"]
    expiry = dt.datetime.fromisoformat(query["se"][0].replace("Z", "+00:00"))
    # Signed while the request ran: its expiry is the signing time plus the configured hour.
    assert before + dt.timedelta(seconds=3600) <= expiry <= after + dt.timedelta(seconds=3600)


async def test_private_container_refuses_anonymous_reads(app_client: httpx.AsyncClient, azurite: Azurite, sim: SimControl) -> None:
    url = (await apost(app_client, "gpt-image-1-mini", {"prompt": "x"})).json()["data"][0]["url"]
    unsigned = url.split("?", 1)[0]
    assert httpx.get(unsigned).status_code in (403, 404)
    assert container(azurite).get_container_properties().public_access is None


async def test_seed_request_to_gpt_image_is_translated_and_recorded(app_client: httpx.AsyncClient, azurite: Azurite, sim: SimControl) -> None:
    seed = {"prompt": "A multi-colored umbrella on the beach, disposable camera", "size": "1024x1024", "n": 1, "quality": "hd", "style": "vivid"}
    response = await apost(app_client, "gpt-image-1", seed)
    assert response.status_code == 200, response.text
    sent = sim.stats()["recent"][-1]["body"]
    assert sent["quality"] == "high"
    assert "style" not in sent and "response_format" not in sent
    record = record_for(azurite, blob_name_from_url(response.json()["data"][0]["url"]))
    assert record["parameters"]["asked"]["quality"] == "hd"
    assert record["parameters"]["sent"]["quality"] == "high"
    assert any("style" in t for t in record["translations"])
    assert any("quality" in t for t in record["translations"])


async def test_b64_json_returns_bytes_that_are_also_archived(app_client: httpx.AsyncClient, azurite: Azurite, sim: SimControl) -> None:
    body = {"prompt": "x", "size": "1024x1024", "response_format": "b64_json", "output_format": "jpeg", "output_compression": 50}
    response = await apost(app_client, "gpt-image-2", body)
    assert response.status_code == 200, response.text
    item = response.json()["data"][0]
    data = base64.b64decode(item["b64_json"])
    assert data.startswith(b"\xff\xd8\xff")
    archived = httpx.get(item["url"])
    assert archived.content == data
    assert archived.headers["content-type"] == "image/jpeg"
    assert blob_name_from_url(item["url"]).endswith(".jpg")


async def test_n_images_each_archived(app_client: httpx.AsyncClient, azurite: Azurite, sim: SimControl) -> None:
    response = await apost(app_client, "gpt-image-1-mini", {"prompt": "three cats", "n": 3})
    assert response.status_code == 200, response.text
    urls = [d["url"] for d in response.json()["data"]]
    assert len(set(urls)) == 3
    names = [blob_name_from_url(u) for u in urls]
    record = record_for(azurite, names[0])
    assert [i["name"] for i in record["images"]] == names
    assert sim.stats()["generations"] == 1


async def test_dall_e_3_asks_upstream_for_base64_and_returns_revised_prompt(app_client: httpx.AsyncClient, sim: SimControl) -> None:
    response = await apost(app_client, "dall-e-3", {"prompt": "a fox", "quality": "hd", "style": "natural"})
    assert response.status_code == 200, response.text
    assert sim.stats()["recent"][-1]["body"]["response_format"] == "b64_json"
    item = response.json()["data"][0]
    assert item["revised_prompt"]
    assert httpx.get(item["url"]).content.startswith(PNG_MAGIC)


async def test_v1_path_uses_model_as_deployment(app_client: httpx.AsyncClient, sim: SimControl) -> None:
    response = await app_client.post("/openai/v1/images/generations", json={"model": "images-prod", "prompt": "x", "size": "2048x1152"})
    assert response.status_code == 200, response.text
    assert sim.stats()["recent"][-1]["path"].endswith("/openai/deployments/images-prod/images/generations")


async def test_v1_upstream_style_sends_model_in_body(in_process: InProcess, sim: SimControl) -> None:
    client = await in_process(IMAGES_API_STYLE="v1")
    response = await apost(client, "gpt-image-1", {"prompt": "x"})
    assert response.status_code == 200, response.text
    recent = sim.stats()["recent"][-1]
    assert recent["path"] == "/openai/v1/images/generations"
    assert recent["body"]["model"] == "gpt-image-1"


async def test_healthz_and_openapi(app_client: httpx.AsyncClient) -> None:
    health = (await app_client.get("/healthz")).json()
    assert health["status"] == "ok"
    assert "images-prod" in health["deployments"] and health["api_style"]
    spec = (await app_client.get("/openapi.json")).json()
    assert "/openai/deployments/{deployment}/images/generations" in spec["paths"]
    assert "/openai/v1/images/generations" in spec["paths"]
    operation = spec["paths"]["/openai/deployments/{deployment}/images/generations"]["post"]
    assert "prompt" in operation["requestBody"]["content"]["application/json"]["schema"]["properties"]
    for path in ("/openai/deployments/{deployment}/images/generations", "/openai/deployments/{deployment}/images/generations:submit", "/openai/v1/images/generations"):
        assert spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"] == generation_schema()
    assert "/openai/operations/images/{job_id}" in spec["paths"] and "/images/{name}" in spec["paths"]


async def test_healthz_shows_each_deployments_lifecycle_on_the_runtimes_day(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    day = dt.date(2026, 11, 25)
    with caplog.at_level(logging.WARNING, logger="shared.runtime"):
        Runtime(make_settings(AZURE_OPENAI_ENDPOINT="https://example.openai.azure.com/"), today=lambda: day)
        Runtime(make_settings(AZURE_OPENAI_ENDPOINT="https://example.openai.azure.com/"), today=lambda: day, warn_retired_models=False)
    warned = [r.getMessage() for r in caplog.records if r.name == "shared.runtime"]
    # Retired by that day: dall-e-3 (2026-03-04) and gpt-image-1 (2026-10-23); each warning names the successor,
    # once per start (the second runtime of a start, the queue runner's, does not repeat them).
    assert len(warned) == 2, warned
    assert any("'dall-e-3'" in w and "retired on 2026-03-04" in w for w in warned), warned
    assert any("'gpt-image-1' runs gpt-image-1," in w and "gpt-image-2" in w for w in warned), warned
    assert not any("'gpt-image-2'" in w or "'images-prod'" in w for w in warned), warned
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shared.runtime"):
        runtime = Runtime(make_settings(), today=lambda: day)  # the simulator: plain http, not Azure's models
    assert not [r for r in caplog.records if r.name == "shared.runtime"], "no warning for the simulator's deployments"
    async with runtime:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            models = {m["deployment"]: m for m in (await client.get("/healthz")).json()["models"]}
    assert set(models) == set(runtime.settings.deployments)
    assert models["gpt-image-1"]["status"] == "retired" and models["gpt-image-1"]["retires"] == "2026-10-23"
    assert models["gpt-image-1-mini"]["status"] == "no-new-customers" and models["gpt-image-1-mini"]["successor"]
    assert models["images-prod"] == {**models["gpt-image-2"], "deployment": "images-prod"}
    assert models["gpt-image-2"]["status"] == "ga"


# --- the published request schema is the model rules, not a copy of them ---


def accepted(family: str, **body: object) -> bool:
    try:
        models.parse_request({"prompt": "x", **body}, family, family)
    except ServiceError:
        return False
    return True


def test_openapi_schema_bounds_are_the_model_rules() -> None:
    schema = generation_schema()
    props = schema["properties"]
    families = sorted(models.FAMILIES)
    assert set(props) == models.KNOWN_FIELDS and schema["required"] == ["prompt"] and schema["additionalProperties"] is False
    assert not any(accepted(f, colour="red") for f in families)
    for name, extra in (("n", {}), ("output_compression", {"output_format": "jpeg"})):
        low, high = props[name]["minimum"], props[name]["maximum"]
        assert any(accepted(f, **{name: high}, **extra) for f in families), name
        assert any(accepted(f, **{name: low}, **extra) for f in families), name
        assert not any(accepted(f, **{name: high + 1}, **extra) or accepted(f, **{name: low - 1}, **extra) for f in families), name
    for name, key in (("prompt", "prompt"), ("user", "user")):
        longest = props[name]["maxLength"]
        assert any(accepted(f, **{key: "p" * longest}) for f in families), name
        assert not any(accepted(f, **{key: "p" * (longest + 1)}) for f in families), name
    assert not any(accepted(f, prompt="") for f in families) and props["prompt"]["minLength"] == 1
    for family, limit in models.PROMPT_LIMITS.items():
        assert f"{family}" in props["prompt"]["description"] and f"1-{limit}" in props["prompt"]["description"]
    extras = {"background": {"output_format": "png"}}
    for name, prop in props.items():
        for value in prop.get("enum", ()):
            assert any(accepted(f, **{name: value}, **extras.get(name, {})) for f in families), (name, value)
        if "enum" in prop:
            assert not any(accepted(f, **{name: "ultra"}) for f in families), name
    for size in props["size"]["examples"]:
        assert any(accepted(f, size=size) for f in families), size


# --- refusals: clear error, right status, named parameter, nothing upstream, nothing stored ---


@pytest.mark.parametrize(
    ("deployment", "body", "status", "code", "param"),
    [
        ("gpt-image-1", {"prompt": "x", "n": "2"}, 400, "invalid_type", "n"),
        ("gpt-image-1", {"prompt": "x", "size": "512x512"}, 400, "invalid_value", "size"),
        ("gpt-image-1", {"prompt": "x", "colour": "red"}, 400, "unknown_parameter", "colour"),
        ("gpt-image-1", {"size": "1024x1024"}, 400, "missing_required_parameter", "prompt"),
        ("gpt-image-1", {"prompt": "x" * 32001}, 400, "string_above_max_length", "prompt"),
        ("dall-e-3", {"prompt": "x" * 4001}, 400, "string_above_max_length", "prompt"),
        ("dall-e-3", {"prompt": "x", "n": 2}, 400, "invalid_value", "n"),
        ("dall-e-3", {"prompt": "x", "output_format": "jpeg"}, 400, "unknown_parameter", "output_format"),
        ("gpt-image-2", {"prompt": "x", "size": "1000x1000"}, 400, "invalid_value", "size"),
        ("gpt-image-1", {"prompt": "x", "background": "transparent", "output_format": "jpeg"}, 400, "invalid_value", "background"),
        ("gpt-image-1", ["prompt"], 400, "invalid_type", None),
        ("unknown-deployment", {"prompt": "x"}, 404, "DeploymentNotFound", None),
    ],
)
async def test_invalid_requests_are_refused_before_upstream(
    app_client: httpx.AsyncClient, azurite: Azurite, sim: SimControl, deployment: str, body: object, status: int, code: str, param: str | None
) -> None:
    before = blob_names(azurite)
    response = await apost(app_client, deployment, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error.get("param") == param
    assert error["message"]
    assert sim.stats()["requests"] == 0
    assert blob_names(azurite) == before


async def test_raw_body_errors(app_client: httpx.AsyncClient, azurite: Azurite, sim: SimControl) -> None:
    client = app_client
    path = DEPLOYMENT_PATH.format("gpt-image-1")
    json_type = {"content-type": "application/json"}
    before = blob_names(azurite)
    cases = [
        (await client.post(path, content=b'{"prompt": "x",', headers=json_type), 400, "invalid_json"),
        (await client.post(path, content=b'{"prompt": "\xff\xfe"}', headers=json_type), 400, "invalid_encoding"),
        (await client.post(path, content=b'{"prompt": NaN}', headers=json_type), 400, "invalid_json"),
        (await client.post(path, content=b"prompt=x", headers={"content-type": "application/x-www-form-urlencoded"}), 415, "unsupported_media_type"),
        (await client.post(path, content=b'{"prompt": "x"}'), 415, "unsupported_media_type"),
        (await client.post(path, content=b'{"prompt": "' + b"x" * 300_000 + b'"}', headers=json_type), 413, "request_too_large"),
        (await client.post("/openai/deployments/gpt-image-1/images/generations", json={"prompt": "x"}), 400, "missing_required_parameter"),
        (await client.post("/openai/v1/images/generations", json={"prompt": "x"}), 400, "missing_required_parameter"),
        (await client.post("/openai/v1/images/generations", json={"prompt": "x", "model": "nope"}), 404, "DeploymentNotFound"),
        (await client.get("/openai/deployments/gpt-image-1/images/generations?api-version=2025-04-01-preview"), 405, "MethodNotAllowed"),
        (await client.get("/no/such/route"), 404, "NotFound"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (code, response.text)
        assert response.json()["error"]["code"] == code
    assert sim.stats()["requests"] == 0
    assert blob_names(azurite) == before


# --- upstream behaviour ---


@pytest.mark.parametrize("marker,side", [("[[filter:prompt]]", "prompt"), ("[[filter:prompt:legacy]]", "prompt"), ("[[filter:image]]", "image"), ("[[filter:image:legacy]]", "image")])
async def test_content_filter_becomes_seed_error(app_client: httpx.AsyncClient, azurite: Azurite, sim: SimControl, marker: str, side: str) -> None:
    before = blob_names(azurite)
    response = await apost(app_client, "gpt-image-1", {"prompt": f"something {marker}"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "contentFilter"
    expected = "Your task failed as a result of our safety system." if side == "prompt" else "Generated image was filtered as a result of our safety system."
    assert error["message"] == expected
    assert error["filtered"] == side
    if "legacy" not in marker:
        assert error["categories"]
    [record] = failure_records_since(azurite, before, response)
    assert (record["outcome"], record["filtered"], record["categories"]) == ("filtered", side, error.get("categories", []))
    assert record["prompt"] == f"something {marker}" and record["error"] == error


async def test_throttling_within_budget_waits_and_succeeds(in_process: InProcess, sim: SimControl) -> None:
    sim.configure(quota_requests=1, quota_window_seconds=0.25)
    sim.clock(frozen=True)  # the window ends when the test moves the clock, not by itself
    client = await in_process(IMAGES_RETRY_BUDGET_SECONDS="10", IMAGES_MAX_RETRIES="20")
    first = await apost(client, "gpt-image-1", {"prompt": "a"})
    second_call = asyncio.ensure_future(apost(client, "gpt-image-1", {"prompt": "b"}))
    await asyncio.to_thread(sim.wait, at_least={"throttled": 1})  # told to wait 250 ms, and waiting
    await asyncio.to_thread(sim.clock, advance=0.25)
    second = await second_call
    assert first.status_code == 200 and second.status_code == 200, second.text
    stats = sim.stats()
    assert stats["throttled"] >= 1
    assert stats["generations"] == 2


async def test_throttling_beyond_budget_passes_retry_after(in_process: InProcess, azurite: Azurite, sim: SimControl) -> None:
    sim.configure(quota_requests=1, quota_window_seconds=60)
    sim.clock(frozen=True)
    client = await in_process(IMAGES_RETRY_BUDGET_SECONDS="1")
    assert (await apost(client, "gpt-image-1", {"prompt": "a"})).status_code == 200
    before = blob_names(azurite)
    response = await apost(client, "gpt-image-1", {"prompt": "b"})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "60"  # the whole window: the clock stood still
    assert int(response.headers["retry-after-ms"]) == 60_000
    assert response.json()["error"]["code"] == "429"
    [record] = failure_records_since(azurite, before, response)
    assert (record["outcome"], record["upstream"]["status"], record["error"]["code"]) == ("failed", 429, "429")


async def test_an_unavailable_upstream_is_retried_with_backoff(in_process: InProcess, sim: SimControl) -> None:
    sim.configure(fail_next=1, fail_status=503)  # unable to handle the request: it did no work
    client = await in_process(IMAGES_RETRY_BUDGET_SECONDS="10")
    response = await apost(client, "gpt-image-1", {"prompt": "a"})
    assert response.status_code == 200, response.text
    assert sim.stats()["failed"] == 1
    assert sim.stats()["generations"] == 1


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_a_server_error_after_the_request_was_sent_is_answered_once_and_the_sdk_told_not_to_retry(
    in_process: InProcess, sim: SimControl, status: int
) -> None:
    sim.configure(fail_next=1, fail_status=status)  # "an error while processing your request", or a gateway's: may be billed
    client = await in_process(IMAGES_RETRY_BUDGET_SECONDS="10")
    response = await apost(client, "gpt-image-1", {"prompt": "a"})
    assert (response.status_code, response.json()["error"]["code"]) == (502, "UpstreamError"), response.text
    assert "not repeated" in response.json()["error"]["message"].lower()
    assert response.headers["x-should-retry"] == "false"  # what the openai SDKs read before retrying a 5xx themselves
    assert sim.stats()["requests"] == 1


async def test_persistent_server_errors_become_502(in_process: InProcess, azurite: Azurite, sim: SimControl) -> None:
    sim.configure(fail_next=100, fail_status=503)
    client = await in_process(IMAGES_RETRY_BUDGET_SECONDS="3", IMAGES_MAX_RETRIES="2")
    before = blob_names(azurite)
    response = await apost(client, "gpt-image-1", {"prompt": "a"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "UpstreamError"
    assert 1 <= sim.stats()["failed"] <= 3
    [record] = failure_records_since(azurite, before, response)
    assert (record["outcome"], record["upstream"]["status"]) == ("failed", 502)


async def test_timeout_is_504_and_never_repeated(in_process: InProcess, sim: SimControl) -> None:
    sim.configure(hang_next=1)  # the first generation outlasts any timeout; a second would answer at once
    client = await in_process(IMAGES_SYNC_TIMEOUT_SECONDS="1", IMAGES_RETRY_BUDGET_SECONDS="30")
    response = await apost(client, "gpt-image-1", {"prompt": "slow"})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "UpstreamTimeout"
    # The service hung up on the generation it gave up on (the simulator sees the disconnect) ...
    stats = await asyncio.to_thread(sim.wait, at_most={"in_flight": 0})
    assert stats["abandoned"] == 1
    assert stats["requests"] == 1  # ... and never sent it again


async def test_upstream_unreachable_is_502(in_process: InProcess) -> None:
    client = await in_process(AZURE_OPENAI_ENDPOINT="http://127.0.0.1:9", IMAGES_RETRY_BUDGET_SECONDS="1")
    response = await apost(client, "gpt-image-1", {"prompt": "x"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "UpstreamUnavailable"


# Storage outages: one quick retry instead of the service's few patient ones, so the 503 comes at once.
SHORT_STORAGE_RETRY = {"retry_total": 1, "initial_backoff": 0, "increment_base": 0, "random_jitter_range": 0, "connection_timeout": 2}


async def test_storage_down_refuses_before_paying(in_process: InProcess, sim: SimControl) -> None:
    dead = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    client = await in_process(storage_options=SHORT_STORAGE_RETRY, AzureWebJobsStorage=dead)
    response = await apost(client, "gpt-image-1", {"prompt": "x"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "StorageUnavailable"
    assert "AccountKey" not in response.text
    assert sim.stats()["requests"] == 0


async def test_storage_failure_after_generation_leaves_no_record(in_process: InProcess, sim: SimControl, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Azurite dies while the model works: 503, and after restart no record points at a missing image."""
    own = start_azurite(location=tmp_path / "azurite")
    try:
        client = await in_process(storage_options=SHORT_STORAGE_RETRY, AzureWebJobsStorage=own.connection_string)
        # Warm the container so the failure happens on upload, after upstream answered.
        assert (await apost(client, "gpt-image-1", {"prompt": "warm"})).status_code == 200
        sim.configure(hang_next=1)  # the next generation waits for the test's release
        call = asyncio.ensure_future(apost(client, "gpt-image-1", {"prompt": "lost?"}))
        await asyncio.to_thread(sim.wait, at_least={"in_flight": 1})
        await asyncio.to_thread(own.stop)
        assert await asyncio.to_thread(sim.release) == 1  # the image is made (and billed) with storage gone
        response = await call
    finally:
        own.stop()
    assert response.status_code == 503
    assert sim.stats()["succeeded"] == 2
    restarted = start_azurite(location=tmp_path / "azurite")
    try:
        images = BlobServiceClient.from_connection_string(restarted.connection_string).get_container_client("images")
        names = {b.name for b in images.list_blobs()}
        for name in [n for n in names if n.endswith("record.json")]:
            record = json.loads(images.download_blob(name).readall())
            for image in record["images"]:
                assert image["name"] in names
        assert sum(1 for n in names if n.endswith("record.json")) == 1  # only the warm-up
    finally:
        restarted.stop()


async def test_openai_upstream_style_uses_bearer_key_and_v1_path(in_process: InProcess, sim: SimControl) -> None:
    client = await in_process(IMAGES_API_STYLE="openai")
    response = await apost(client, "gpt-image-1", {"prompt": "x"})
    assert response.status_code == 200, response.text
    recent = sim.stats()["recent"][-1]
    assert recent["path"] == "/v1/images/generations"
    assert recent["body"]["model"] == "gpt-image-1"
    assert recent["headers"].get("authorization", "").lower().startswith("bearer")
    assert "api-key" not in recent["headers"]
