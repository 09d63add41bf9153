"""The synchronous path end to end: API over HTTP -> simulator over HTTP -> Azurite."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from local.azurite import Azurite, start_azurite
from local.servers import ServerThread
from tests.conftest import SimControl

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


def record_for(azurite: Azurite, image_name: str) -> dict:  # type: ignore[type-arg]
    base = image_name.rsplit("/", 1)[0]
    return json.loads(container(azurite).download_blob(f"{base}/record.json").readall())


def blob_name_from_url(url: str) -> str:
    path = urlsplit(url).path  # /devstoreaccount1/images/<name>
    return path.split("/images/", 1)[1]


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


def test_link_is_read_only_sas_with_configured_lifetime(start_api: Callable[..., ServerThread], sim: SimControl) -> None:
    api = start_api(IMAGES_LINK_TTL_SECONDS="3600")
    response = httpx.post(api.url + DEPLOYMENT_PATH.format("gpt-image-1"), json={"prompt": "x"}, timeout=60)
    assert response.status_code == 200, response.text
    query = parse_qs(urlsplit(response.json()["data"][0]["url"]).query)
    assert query["sp"] == ["r"]
    expiry = dt.datetime.fromisoformat(query["se"][0].replace("Z", "+00:00"))
    remaining = (expiry - dt.datetime.now(dt.UTC)).total_seconds()
    assert 3500 < remaining <= 3600


def test_private_container_refuses_anonymous_reads(client: httpx.Client, azurite: Azurite, sim: SimControl) -> None:
    url = post(client, "gpt-image-1-mini", {"prompt": "x"}).json()["data"][0]["url"]
    unsigned = url.split("?", 1)[0]
    assert httpx.get(unsigned).status_code in (403, 404)
    assert container(azurite).get_container_properties().public_access is None


def test_seed_request_to_gpt_image_is_translated_and_recorded(client: httpx.Client, azurite: Azurite, sim: SimControl) -> None:
    seed = {"prompt": "A multi-colored umbrella on the beach, disposable camera", "size": "1024x1024", "n": 1, "quality": "hd", "style": "vivid"}
    response = post(client, "gpt-image-1", seed)
    assert response.status_code == 200, response.text
    sent = sim.stats()["recent"][-1]["body"]
    assert sent["quality"] == "high"
    assert "style" not in sent and "response_format" not in sent
    record = record_for(azurite, blob_name_from_url(response.json()["data"][0]["url"]))
    assert record["parameters"]["asked"]["quality"] == "hd"
    assert record["parameters"]["sent"]["quality"] == "high"
    assert any("style" in t for t in record["translations"])
    assert any("quality" in t for t in record["translations"])


def test_b64_json_returns_bytes_that_are_also_archived(client: httpx.Client, azurite: Azurite, sim: SimControl) -> None:
    response = post(client, "gpt-image-2", {"prompt": "x", "size": "1024x1024", "response_format": "b64_json", "output_format": "jpeg", "output_compression": 50})
    assert response.status_code == 200, response.text
    item = response.json()["data"][0]
    data = base64.b64decode(item["b64_json"])
    assert data.startswith(b"\xff\xd8\xff")
    archived = httpx.get(item["url"])
    assert archived.content == data
    assert archived.headers["content-type"] == "image/jpeg"
    assert blob_name_from_url(item["url"]).endswith(".jpg")


def test_n_images_each_archived(client: httpx.Client, azurite: Azurite, sim: SimControl) -> None:
    response = post(client, "gpt-image-1-mini", {"prompt": "three cats", "n": 3})
    assert response.status_code == 200, response.text
    urls = [d["url"] for d in response.json()["data"]]
    assert len(set(urls)) == 3
    names = [blob_name_from_url(u) for u in urls]
    record = record_for(azurite, names[0])
    assert [i["name"] for i in record["images"]] == names
    assert sim.stats()["generations"] == 1


def test_dall_e_3_asks_upstream_for_base64_and_returns_revised_prompt(client: httpx.Client, sim: SimControl) -> None:
    response = post(client, "dall-e-3", {"prompt": "a fox", "quality": "hd", "style": "natural"})
    assert response.status_code == 200, response.text
    assert sim.stats()["recent"][-1]["body"]["response_format"] == "b64_json"
    item = response.json()["data"][0]
    assert item["revised_prompt"]
    assert httpx.get(item["url"]).content.startswith(PNG_MAGIC)


def test_v1_path_uses_model_as_deployment(client: httpx.Client, sim: SimControl) -> None:
    response = client.post("/openai/v1/images/generations", json={"model": "images-prod", "prompt": "x", "size": "2048x1152"})
    assert response.status_code == 200, response.text
    assert sim.stats()["recent"][-1]["path"].endswith("/openai/deployments/images-prod/images/generations")


def test_v1_upstream_style_sends_model_in_body(start_api: Callable[..., ServerThread], sim: SimControl) -> None:
    api = start_api(IMAGES_API_STYLE="v1")
    response = httpx.post(api.url + DEPLOYMENT_PATH.format("gpt-image-1"), json={"prompt": "x"}, timeout=60)
    assert response.status_code == 200, response.text
    recent = sim.stats()["recent"][-1]
    assert recent["path"] == "/openai/v1/images/generations"
    assert recent["body"]["model"] == "gpt-image-1"


def test_stable_route_redirects_to_fresh_sas(client: httpx.Client, sim: SimControl) -> None:
    url = post(client, "gpt-image-1-mini", {"prompt": "x"}).json()["data"][0]["url"]
    name = blob_name_from_url(url)
    redirect = client.get(f"/images/{name}", follow_redirects=False)
    assert redirect.status_code == 302
    assert "sig=" in redirect.headers["location"]
    assert httpx.get(redirect.headers["location"]).content == httpx.get(url).content
    missing = client.get("/images/2020-01-01/0123456789abcdef0123456789abcdef/0.png")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NotFound"
    assert client.get("/images/../secrets.txt").status_code == 404


def test_healthz_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert "/openai/deployments/{deployment}/images/generations" in spec["paths"]
    assert "/openai/v1/images/generations" in spec["paths"]
    operation = spec["paths"]["/openai/deployments/{deployment}/images/generations"]["post"]
    assert "prompt" in operation["requestBody"]["content"]["application/json"]["schema"]["properties"]


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
def test_invalid_requests_are_refused_before_upstream(
    client: httpx.Client, azurite: Azurite, sim: SimControl, deployment: str, body: object, status: int, code: str, param: str | None
) -> None:
    before = blob_names(azurite)
    response = post(client, deployment, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error.get("param") == param
    assert error["message"]
    assert sim.stats()["requests"] == 0
    assert blob_names(azurite) == before


def test_raw_body_errors(client: httpx.Client, azurite: Azurite, sim: SimControl) -> None:
    path = DEPLOYMENT_PATH.format("gpt-image-1")
    before = blob_names(azurite)
    cases = [
        (client.post(path, content=b'{"prompt": "x",', headers={"content-type": "application/json"}), 400, "invalid_json"),
        (client.post(path, content=b'{"prompt": "\xff\xfe"}', headers={"content-type": "application/json"}), 400, "invalid_encoding"),
        (client.post(path, content=b'{"prompt": NaN}', headers={"content-type": "application/json"}), 400, "invalid_json"),
        (client.post(path, content=b"prompt=x", headers={"content-type": "application/x-www-form-urlencoded"}), 415, "unsupported_media_type"),
        (client.post(path, content=b'{"prompt": "x"}'), 415, "unsupported_media_type"),
        (client.post(path, content=b'{"prompt": "' + b"x" * 300_000 + b'"}', headers={"content-type": "application/json"}), 413, "request_too_large"),
        (client.post("/openai/deployments/gpt-image-1/images/generations", json={"prompt": "x"}), 400, "missing_required_parameter"),
        (client.post("/openai/v1/images/generations", json={"prompt": "x"}), 400, "missing_required_parameter"),
        (client.post("/openai/v1/images/generations", json={"prompt": "x", "model": "nope"}), 404, "DeploymentNotFound"),
        (client.get("/openai/deployments/gpt-image-1/images/generations?api-version=2025-04-01-preview"), 405, "MethodNotAllowed"),
        (client.get("/no/such/route"), 404, "NotFound"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (code, response.text)
        assert response.json()["error"]["code"] == code
    assert sim.stats()["requests"] == 0
    assert blob_names(azurite) == before


def test_chunked_body_over_limit_is_refused(client: httpx.Client, sim: SimControl) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"y" * 10_000
        yield b'"}'

    response = client.post(DEPLOYMENT_PATH.format("gpt-image-1"), content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert sim.stats()["requests"] == 0


# --- upstream behaviour ---


@pytest.mark.parametrize("marker,side", [("[[filter:prompt]]", "prompt"), ("[[filter:prompt:legacy]]", "prompt"), ("[[filter:image]]", "image"), ("[[filter:image:legacy]]", "image")])
def test_content_filter_becomes_seed_error(client: httpx.Client, azurite: Azurite, sim: SimControl, marker: str, side: str) -> None:
    before = blob_names(azurite)
    response = post(client, "gpt-image-1", {"prompt": f"something {marker}"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "contentFilter"
    expected = "Your task failed as a result of our safety system." if side == "prompt" else "Generated image was filtered as a result of our safety system."
    assert error["message"] == expected
    assert error["filtered"] == side
    if "legacy" not in marker:
        assert error["categories"]
    assert blob_names(azurite) == before


def test_throttling_within_budget_waits_and_succeeds(start_api: Callable[..., ServerThread], sim: SimControl) -> None:
    sim.configure(quota_requests=1, quota_window_seconds=1)
    api = start_api(IMAGES_RETRY_BUDGET_SECONDS="10")
    first = httpx.post(api.url + DEPLOYMENT_PATH.format("gpt-image-1"), json={"prompt": "a"}, timeout=60)
    second = httpx.post(api.url + DEPLOYMENT_PATH.format("gpt-image-1"), json={"prompt": "b"}, timeout=60)
    assert first.status_code == 200 and second.status_code == 200, second.text
    stats = sim.stats()
    assert stats["throttled"] >= 1
    assert stats["generations"] == 2


def test_throttling_beyond_budget_passes_retry_after(start_api: Callable[..., ServerThread], azurite: Azurite, sim: SimControl) -> None:
    sim.configure(quota_requests=1, quota_window_seconds=60)
    api = start_api(IMAGES_RETRY_BUDGET_SECONDS="1")
    assert httpx.post(api.url + DEPLOYMENT_PATH.format("gpt-image-1"), json={"prompt": "a"}, timeout=60).status_code == 200
    before = blob_names(azurite)
    response = httpx.post(api.url + DEPLOYMENT_PATH.format("gpt-image-1"), json={"prompt": "b"}, timeout=60)
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert int(response.headers["retry-after-ms"]) > 0
    assert response.json()["error"]["code"] == "429"
    assert blob_names(azurite) == before


def test_server_errors_are_retried_with_backoff(start_api: Callable[..., ServerThread], sim: SimControl) -> None:
    sim.configure(fail_next=1)
    api = start_api(IMAGES_RETRY_BUDGET_SECONDS="10")
    response = httpx.post(api.url + DEPLOYMENT_PATH.format("gpt-image-1"), json={"prompt": "a"}, timeout=60)
    assert response.status_code == 200, response.text
    assert sim.stats()["failed"] == 1
    assert sim.stats()["generations"] == 1


def test_persistent_server_errors_become_502(start_api: Callable[..., ServerThread], azurite: Azurite, sim: SimControl) -> None:
    sim.configure(fail_next=100)
    api = start_api(IMAGES_RETRY_BUDGET_SECONDS="3", IMAGES_MAX_RETRIES="2")
    before = blob_names(azurite)
    response = httpx.post(api.url + DEPLOYMENT_PATH.format("gpt-image-1"), json={"prompt": "a"}, timeout=60)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "UpstreamError"
    assert 1 <= sim.stats()["failed"] <= 3
    assert blob_names(azurite) == before


def test_timeout_is_504_and_never_repeated(start_api: Callable[..., ServerThread], sim: SimControl) -> None:
    sim.configure(latency=4)
    api = start_api(IMAGES_SYNC_TIMEOUT_SECONDS="1", IMAGES_RETRY_BUDGET_SECONDS="30")
    response = httpx.post(api.url + DEPLOYMENT_PATH.format("gpt-image-1"), json={"prompt": "slow"}, timeout=60)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "UpstreamTimeout"
    time.sleep(0.2)
    assert sim.stats()["requests"] == 1


def test_upstream_unreachable_is_502(start_api: Callable[..., ServerThread]) -> None:
    api = start_api(AZURE_OPENAI_ENDPOINT="http://127.0.0.1:9", IMAGES_RETRY_BUDGET_SECONDS="1")
    response = httpx.post(api.url + DEPLOYMENT_PATH.format("gpt-image-1"), json={"prompt": "x"}, timeout=60)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "UpstreamUnavailable"


def test_storage_down_refuses_before_paying(start_api: Callable[..., ServerThread], sim: SimControl) -> None:
    dead = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    api = start_api(AzureWebJobsStorage=dead)
    response = httpx.post(api.url + DEPLOYMENT_PATH.format("gpt-image-1"), json={"prompt": "x"}, timeout=120)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "StorageUnavailable"
    assert "AccountKey" not in response.text
    assert sim.stats()["requests"] == 0


def test_storage_failure_after_generation_leaves_no_record(start_api: Callable[..., ServerThread], sim: SimControl, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Azurite dies while the model works: 503, and after restart no record points at a missing image."""
    own = start_azurite(location=tmp_path / "azurite")
    api = start_api(AzureWebJobsStorage=own.connection_string)
    # Warm the container so the failure happens on upload, after upstream answered.
    assert httpx.post(api.url + DEPLOYMENT_PATH.format("gpt-image-1"), json={"prompt": "warm"}, timeout=60).status_code == 200
    sim.configure(latency=1.5)
    result: dict[str, httpx.Response] = {}
    worker = threading.Thread(
        target=lambda: result.setdefault("r", httpx.post(api.url + DEPLOYMENT_PATH.format("gpt-image-1"), json={"prompt": "lost?"}, timeout=120))
    )
    worker.start()
    time.sleep(0.5)
    own.stop()
    worker.join()
    assert result["r"].status_code == 503
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


def test_openai_upstream_style_uses_bearer_key_and_v1_path(start_api: Callable[..., ServerThread], sim: SimControl) -> None:
    api = start_api(IMAGES_API_STYLE="openai")
    response = httpx.post(api.url + DEPLOYMENT_PATH.format("gpt-image-1"), json={"prompt": "x"}, timeout=60)
    assert response.status_code == 200, response.text
    recent = sim.stats()["recent"][-1]
    assert recent["path"] == "/v1/images/generations"
    assert recent["body"]["model"] == "gpt-image-1"
    assert recent["headers"].get("authorization", "").lower().startswith("bearer")
    assert "api-key" not in recent["headers"]
