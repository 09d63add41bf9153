"""Issue 15, findings 1 and 10: answers shaped as the deployment's model answers, translations said out loud,
idempotency keys scoped, and job results that name their blobs.

In process (httpx's ASGI transport) against real Azurite and the simulator: the answer's shape is
what is tested, not the transport.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from azure.storage.queue import QueueClient

from local.azurite import Azurite
from shared.api import create_app
from shared.runtime import Runtime
from shared.settings import Settings
from tests import scoping
from tests.conftest import SimControl
from tests.test_api import DEPLOYMENT_PATH, PNG_MAGIC, apost, blob_name_from_url, record_for

InProcess = Callable[..., Awaitable[httpx.AsyncClient]]
SUBMIT_PATH = "/openai/deployments/{}/images/generations:submit?api-version=2025-04-01-preview"


async def test_gpt_image_answers_b64_json_by_default_plus_a_link_to_the_archived_copy(
    app_client: httpx.AsyncClient, azurite: Azurite, sim: SimControl
) -> None:
    """Finding 1: code written for gpt-image reads data[0].b64_json; the answer had only url."""
    response = await apost(app_client, "gpt-image-1-mini", {"prompt": "a lighthouse"})
    assert response.status_code == 200, response.text
    item = response.json()["data"][0]
    data = base64.b64decode(item["b64_json"])
    assert data.startswith(PNG_MAGIC)
    assert httpx.get(item["url"]).content == data  # the same bytes, archived
    assert record_for(azurite, blob_name_from_url(item["url"]))["response_format"] == "b64_json"


async def test_dall_e_3_answers_url_by_default_and_response_format_decides_when_given(app_client: httpx.AsyncClient, sim: SimControl) -> None:
    seed = (await apost(app_client, "dall-e-3", {"prompt": "a fox"})).json()["data"][0]
    assert seed["url"] and "b64_json" not in seed
    asked_url = (await apost(app_client, "gpt-image-2", {"prompt": "a fox", "response_format": "url"})).json()["data"][0]
    assert asked_url["url"] and "b64_json" not in asked_url
    asked_b64 = (await apost(app_client, "dall-e-3", {"prompt": "a fox", "response_format": "b64_json"})).json()["data"][0]
    assert base64.b64decode(asked_b64["b64_json"]).startswith(PNG_MAGIC) and asked_b64["url"]


async def test_every_translation_is_reported_in_a_response_header(app_client: httpx.AsyncClient, azurite: Azurite, sim: SimControl) -> None:
    """Finding 1: size 1792x1024 on gpt-image-1 gave a 1536x1024 image and only record.json said so."""
    seed = {"prompt": "a wide beach", "size": "1792x1024", "quality": "hd", "style": "vivid"}
    response = await apost(app_client, "gpt-image-1", seed)
    assert response.status_code == 200, response.text
    told = json.loads(response.headers["x-images-translations"])
    record = record_for(azurite, blob_name_from_url(response.json()["data"][0]["url"]))
    assert told == record["translations"] and len(told) == 3
    assert any("'1792x1024' -> '1536x1024'" in t for t in told) and any("'hd' -> 'high'" in t for t in told)
    assert (record["images"][0]["width"], record["images"][0]["height"]) == (1536, 1024)  # what came back, read from the bytes
    plain = await apost(app_client, "gpt-image-2", {"prompt": "x", "size": "1024x1024"})
    assert json.loads(plain.headers["x-images-translations"]) == []


@contextlib.asynccontextmanager
async def app_with_own_queue(settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """The app in process and its runtime (to run a queued job by hand); give it a queue of its own."""
    runtime = await Runtime(settings).open()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://api.test", timeout=60)
    try:
        yield runtime, client
    finally:
        await client.aclose()
        await runtime.close()


@pytest.fixture()
async def runtime_client(make_settings: Callable[..., Settings], sim: SimControl) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with app_with_own_queue(make_settings(IMAGES_QUEUE=f"answers-{uuid.uuid4().hex[:12]}")) as opened:
        yield opened


async def run_queued_job(runtime: Runtime, azurite: Azurite) -> None:
    queue = QueueClient.from_connection_string(azurite.connection_string, runtime.settings.queue_name)
    message = queue.receive_message()
    assert message is not None
    await runtime.jobs.handle(message.content, message.id, message.dequeue_count or 1)
    queue.delete_message(message)


async def test_the_job_result_names_its_blobs_and_reports_translations(
    runtime_client: tuple[Runtime, httpx.AsyncClient], azurite: Azurite, sim: SimControl
) -> None:
    """Finding 10: the README promised blob names in the job result; the HTTP view had links only."""
    runtime, client = runtime_client
    accepted = await client.post(SUBMIT_PATH.format("gpt-image-1"), json={"prompt": "a kite", "quality": "hd"})
    assert accepted.status_code == 202, accepted.text
    assert json.loads(accepted.headers["x-images-translations"]) == ["quality: 'hd' -> 'high'"]
    await run_queued_job(runtime, azurite)
    view = (await client.get(accepted.headers["Operation-Location"])).json()
    assert view["status"] == "succeeded", view
    item = view["result"]["data"][0]
    assert item["name"] == f"jobs/{view['id']}/0.png" == blob_name_from_url(item["url"])
    assert (await client.get(f"/images/{item['name']}")).status_code == 302
    assert view["result"]["translations"] == ["quality: 'hd' -> 'high'"]


async def test_idempotency_keys_are_scoped_by_deployment_and_caller(
    runtime_client: tuple[Runtime, httpx.AsyncClient], azurite: Azurite, sim: SimControl
) -> None:
    """Finding 10: the same key from another service, or for another deployment, was a 409. Issue 21: in key
    mode every key holder is one caller, so a principal header a client sends changes nothing (another
    caller's scope is tested in entra mode, tests/test_callers_http.py)."""
    _, client = runtime_client
    key = f"order-{uuid.uuid4().hex[:8]}"
    body = {"prompt": "a red kite"}

    async def submit(deployment: str, payload: dict[str, Any], **headers: str) -> httpx.Response:
        return await client.post(SUBMIT_PATH.format(deployment), json=payload, headers={"Idempotency-Key": key, **headers})

    first = await submit("gpt-image-1-mini", body)
    again = await submit("gpt-image-1-mini", body)
    other_deployment = await submit("gpt-image-2", body)
    forged = await submit("gpt-image-1-mini", body, **{"X-MS-CLIENT-PRINCIPAL-ID": "11111111-2222-3333-4444-555555555555"})
    assert [r.status_code for r in (first, again, other_deployment, forged)] == [202] * 4
    ids = [r.json()["id"] for r in (first, again, other_deployment, forged)]
    assert ids[0] == ids[1] == ids[3] and ids[2] != ids[0]
    assert ids[0] == scoping.job_id(azurite, "gpt-image-1-mini", key)
    conflict = await submit("gpt-image-1-mini", {"prompt": "another kite"})
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "IdempotencyKeyReused"
    async_route = await client.post(
        DEPLOYMENT_PATH.format("gpt-image-1-mini"), json=body, headers={"Idempotency-Key": key, "Prefer": "respond-async"}
    )
    assert async_route.status_code == 202 and async_route.json()["id"] == ids[0]  # the same scope on both ways in
