"""The Azure entry point: indexed offline, and both functions called directly as the worker would."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
import azurefunctions.extensions.base as ext_base
import httpx
import pytest
from azure.functions.queue import QueueMessage as TriggerMessage
from azure.storage.blob import BlobServiceClient

from local.azurite import Azurite
from local.functions_worker import worker_app
from local.servers import ServerThread
from tests.conftest import SimControl, base_env
from tests.test_api import blob_name_from_url, record_for
from tests.test_callers import platform_headers

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def function_app(monkeypatch: pytest.MonkeyPatch, azurite: Azurite, simulator: ServerThread) -> Iterator[ModuleType]:
    for key, value in base_env(azurite, simulator.url).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("IMAGES_QUEUE", f"entry-{uuid.uuid4().hex[:8]}")
    sys.modules.pop("function_app", None)
    module = importlib.import_module("function_app")
    yield module
    # Each test closes the runtime inside the event loop that opened it (the clients belong to that loop).
    assert not module.runtime.is_open
    sys.modules.pop("function_app", None)


def functions(module: ModuleType) -> dict[str, Any]:
    return {f.get_function_name(): f for f in module.app.get_functions()}


def test_app_indexes_offline_with_the_bindings_the_host_needs(function_app: ModuleType) -> None:
    found = functions(function_app)
    assert set(found) == {"http_app_func", "image_jobs"}
    http = next(b for b in found["http_app_func"].get_bindings() if b.type == "httpTrigger")
    assert http.route == "{*route}"  # one function, every path (routePrefix "")
    assert {str(m).rsplit(".", 1)[-1] for m in http.methods} == {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}
    assert str(http.auth_level).endswith("FUNCTION")
    queue = next(b for b in found["image_jobs"].get_bindings() if b.type == "queueTrigger")
    assert queue.queue_name == "%IMAGES_QUEUE%"  # the setting, never a literal
    assert queue.connection == "AzureWebJobsStorage"
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == ""
    assert host["extensions"]["queues"]["maxDequeueCount"] == 5
    assert host["extensions"]["queues"]["messageEncoding"] == "none"


def test_entra_mode_leaves_the_gate_to_app_service_authentication(monkeypatch: pytest.MonkeyPatch, azurite: Azurite, simulator: ServerThread) -> None:
    """Issue 21: with IMAGES_CALLER_AUTH=entra the platform's authentication is the one gate; a function key on
    top would make every caller hold one too. Without the platform's word that it is on, the app does not start."""
    for key, value in base_env(azurite, simulator.url).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("IMAGES_CALLER_AUTH", "entra")
    sys.modules.pop("function_app", None)
    with pytest.raises(ValueError, match="WEBSITE_AUTH_ENABLED"):
        importlib.import_module("function_app")
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")  # as the platform sets it
    sys.modules.pop("function_app", None)
    module = importlib.import_module("function_app")
    try:
        function = functions(module)["http_app_func"]  # indexed once: a second indexing finds every name twice
        http = next(b for b in function.get_bindings() if b.type == "httpTrigger")
        assert str(http.auth_level).endswith("ANONYMOUS")
        nobody, caller = asyncio.run(_as_the_worker_calls(module, function.get_user_function(), platform_headers(oid=CALLER)))
    finally:
        sys.modules.pop("function_app", None)
    # Behind the platform's gate the app reads who called from its headers, through the extension's types as elsewhere.
    assert nobody.status_code == 401 and nobody.json()["error"]["code"] == "Unauthorized"
    assert caller.status_code == 200, caller.text
    record = record_for(azurite, blob_name_from_url(caller.json()["data"][0]["url"]))
    assert record["caller"]["id"] == f"entra:{CALLER}"


CALLER = str(uuid.UUID(int=0xC0FFEE))


async def _as_the_worker_calls(module: ModuleType, function: Any, headers: dict[str, str]) -> tuple[httpx.Response, httpx.Response]:
    """A generation without a principal, then one with ``headers``, through the HTTP function as the worker calls it."""
    transport = httpx.ASGITransport(app=worker_app(function))
    url = "/openai/deployments/gpt-image-1/images/generations?api-version=2025-04-01-preview"
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:7071") as client:
            return await client.post(url, json={"prompt": "nobody"}), await client.post(url, json={"prompt": "an entra caller"}, headers=headers)
    finally:
        await module.runtime.close()


def test_the_http_streams_extension_is_on_and_the_http_function_has_the_types_the_worker_accepts(function_app: ModuleType) -> None:
    """What the worker checks at load (azure_functions_worker/bindings/meta.py): with the extension imported,
    HTTP v2 is on, the trigger parameter must be the extension's request type and the return one of its responses."""
    assert ext_base.HttpV2FeatureChecker.http_v2_enabled()
    hints = typing.get_type_hints(functions(function_app)["http_app_func"].get_user_function())
    assert ext_base.RequestTrackerMeta.check_type(hints["req"])
    assert ext_base.ResponseTrackerMeta.check_type(hints["return"])
    assert not ext_base.RequestTrackerMeta.check_type(func.HttpRequest)  # the classic type would fail indexing


def test_import_needs_no_network_and_reports_a_bad_setting_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com")
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT", "gpt-image-1-mini")
    monkeypatch.setenv("AzureWebJobsStorage__blobServiceUri", "https://nowhere.invalid")
    monkeypatch.setenv("AzureWebJobsStorage__queueServiceUri", "https://nowhere.invalid")
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    sys.modules.pop("function_app", None)
    importlib.import_module("function_app")  # endpoints that cannot resolve: import still succeeds
    monkeypatch.setenv("IMAGES_LINK_TTL_SECONDS", "forever")
    sys.modules.pop("function_app", None)
    with pytest.raises(ValueError, match="IMAGES_LINK_TTL_SECONDS"):
        importlib.import_module("function_app")
    sys.modules.pop("function_app", None)


def test_http_function_serves_a_generation_as_the_worker_calls_it(function_app: ModuleType, azurite: Azurite, sim: SimControl) -> None:
    http_function = functions(function_app)["http_app_func"].get_user_function()

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=worker_app(http_function))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost:7071") as client:
                response = await client.post(
                    "/openai/deployments/gpt-image-1/images/generations",
                    params={"api-version": "2025-04-01-preview"},
                    json={"prompt": "through the worker"},
                )
            assert function_app.runtime.is_open  # opened by the function on this first request
        finally:
            await function_app.runtime.close()
        return response

    response = asyncio.run(call())
    assert response.status_code == 200, response.text
    assert "/images/" in response.json()["data"][0]["url"]
    assert sim.stats()["generations"] == 1


def test_queue_function_runs_a_job_from_a_real_queue_message(function_app: ModuleType, azurite: Azurite, sim: SimControl) -> None:
    queue_function = functions(function_app)["image_jobs"].get_user_function()
    job_id = f"entry-{uuid.uuid4().hex[:8]}"
    message = TriggerMessage(id=str(uuid.uuid4()), body=json.dumps({"id": job_id, "prompt": "from the queue"}).encode(), dequeue_count=1)

    async def call() -> None:
        assert not function_app.runtime.is_open
        try:
            await queue_function(message)  # before any HTTP request: the trigger opens the runtime itself
            await queue_function(message)  # redelivered: consumed without a second generation
        finally:
            await function_app.runtime.close()

    asyncio.run(call())
    blob = BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client("image-jobs", f"{job_id}.json")
    job = json.loads(blob.download_blob().readall())
    assert job["status"] == "succeeded"
    assert sim.stats()["generations"] == 1


def test_both_functions_share_one_runtime_opened_once_in_the_workers_loop(function_app: ModuleType, sim: SimControl) -> None:
    found = functions(function_app)
    queue_function = found["image_jobs"].get_user_function()
    http_function = found["http_app_func"].get_user_function()
    job_id = f"shared-{uuid.uuid4().hex[:8]}"
    message = TriggerMessage(id=str(uuid.uuid4()), body=json.dumps({"id": job_id, "prompt": "queue first"}).encode(), dequeue_count=1)

    async def call() -> tuple[httpx.Response, bool]:
        try:
            await queue_function(message)
            clients = function_app.runtime.service.clients
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=worker_app(http_function)), base_url="http://localhost:7071") as client:
                response = await client.get(f"/openai/operations/images/{job_id}")
            return response, function_app.runtime.service.clients is clients
        finally:
            await function_app.runtime.close()

    response, same_clients = asyncio.run(call())
    assert same_clients  # the HTTP function found the runtime the queue message had opened
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert sim.stats()["generations"] == 1
