"""The Azure entry point: indexed offline, and both functions called directly as the worker would."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage as TriggerMessage
from azure.storage.blob import BlobServiceClient

from local.azurite import Azurite
from local.servers import ServerThread
from tests.conftest import SimControl, base_env

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
    # AsgiFunctionApp.__del__ would asyncio.run() the ASGI shutdown inside whatever loop collects it.
    module.app.startup_task_done = False
    sys.modules.pop("function_app", None)


def functions(module: ModuleType) -> dict[str, Any]:
    return {f.get_function_name(): f for f in module.app.get_functions()}


def test_app_indexes_offline_with_the_bindings_the_host_needs(function_app: ModuleType) -> None:
    found = functions(function_app)
    assert set(found) == {"http_app_func", "image_jobs"}
    http = next(b for b in found["http_app_func"].get_bindings() if b.type == "httpTrigger")
    assert http.route == "/{*route}"
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
        http = next(b for b in functions(module)["http_app_func"].get_bindings() if b.type == "httpTrigger")
        assert str(http.auth_level).endswith("ANONYMOUS")
    finally:
        module.app.startup_task_done = False
        sys.modules.pop("function_app", None)


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


def test_http_function_serves_a_generation_through_the_asgi_middleware(function_app: ModuleType, azurite: Azurite, sim: SimControl) -> None:
    http_function = functions(function_app)["http_app_func"].get_user_function()
    request = func.HttpRequest(
        method="POST",
        url="http://localhost:7071/openai/deployments/gpt-image-1/images/generations?api-version=2025-04-01-preview",
        params={"api-version": "2025-04-01-preview"},
        headers={"Content-Type": "application/json"},
        body=json.dumps({"prompt": "through the worker"}).encode(),
        route_params={"route": "openai/deployments/gpt-image-1/images/generations"},
    )
    context = _Context()  # the worker passes its own Context; the middleware reads a few fields

    async def call() -> func.HttpResponse:
        try:
            response: func.HttpResponse = await http_function(request, context)
            assert function_app.runtime.is_open  # opened by the ASGI startup on this first request
        finally:
            await function_app.runtime.close()
        return response

    response = asyncio.run(call())
    assert response.status_code == 200, response.get_body()
    body = json.loads(response.get_body())
    assert "/images/" in body["data"][0]["url"]
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
    request = func.HttpRequest(
        method="GET", url=f"http://localhost:7071/openai/operations/images/{job_id}", headers={}, body=b"",
        route_params={"route": f"openai/operations/images/{job_id}"},
    )

    async def call() -> tuple[func.HttpResponse, bool]:
        try:
            await queue_function(message)
            clients = function_app.runtime.service.clients
            response: func.HttpResponse = await http_function(request, _Context())
            return response, function_app.runtime.service.clients is clients
        finally:
            await function_app.runtime.close()

    response, same_clients = asyncio.run(call())
    assert same_clients  # the HTTP app's startup found the runtime the queue message had opened
    assert response.status_code == 200, response.get_body()
    assert json.loads(response.get_body())["status"] == "succeeded"
    assert sim.stats()["generations"] == 1


class _Context:
    """The few Context fields AsgiMiddleware reads (the worker builds the real one)."""

    invocation_id = "test-invocation"
    function_name = "http_app_func"
    function_directory = str(ROOT)
    trace_context = None
    retry_context = None
    thread_local_storage = None
