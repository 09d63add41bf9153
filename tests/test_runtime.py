"""The composition root: one set of clients per runtime, opened in its event loop, every one closed."""

from __future__ import annotations

import asyncio
import gc
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from local.identity import IdentityEndpoint, start_identity_endpoint
from shared.runtime import Runtime
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
APP_ID = "11111111-1111-1111-1111-111111111111"
STORAGE_ID = "22222222-2222-2222-2222-222222222222"
STORAGE_SCOPE = "https://storage.azure.com/.default"


async def test_the_service_has_clients_only_while_its_runtime_is_open(make_settings: Callable[..., Settings]) -> None:
    seen: list[str] = []
    runtime = Runtime(make_settings(), storage_options={"raw_request_hook": lambda request: seen.append(request.http_request.url)})
    with pytest.raises(RuntimeError, match="not open"):
        _ = runtime.service.blobs
    opened = await asyncio.gather(runtime.open(), runtime.open())
    assert opened == [runtime, runtime]
    clients = runtime.service.clients
    assert await runtime.open() is runtime and runtime.service.clients is clients  # opening again changes nothing
    assert await runtime.service.archive.owner("no/such/0.png") == (False, None)
    assert seen and all("/no/such/0.png" in url for url in seen)  # the injected options reach the storage clients
    await runtime.close()
    assert not runtime.is_open
    with pytest.raises(RuntimeError, match="not open"):
        _ = runtime.service.archive
    await runtime.close()  # closing twice is harmless
    async with runtime:  # and it opens again, with new clients
        assert runtime.service.clients is not clients
    assert not runtime.is_open


def test_a_runtime_serves_only_the_event_loop_that_opened_it(make_settings: Callable[..., Settings]) -> None:
    runtime = Runtime(make_settings())
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(runtime.open())

        async def from_another_loop() -> None:
            await runtime.open()

        with pytest.raises(RuntimeError, match="another event loop"):
            asyncio.run(from_another_loop())
        first.run_until_complete(runtime.close())
    finally:
        first.close()


def test_max_dequeue_count_is_the_hosts(make_settings: Callable[..., Settings]) -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert Runtime(make_settings()).jobs.max_dequeue_count == host["extensions"]["queues"]["maxDequeueCount"]


@pytest.fixture()
def identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[IdentityEndpoint]:
    """The App Service identity endpoint stand-in, knowing two user-assigned identities; this process set up as App Service does."""
    endpoint = start_identity_endpoint(user_assigned=[APP_ID, STORAGE_ID])
    for name, value in endpoint.env().items():
        monkeypatch.setenv(name, value)
    for name in ("MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "WEBSITE_INSTANCE_ID"):
        monkeypatch.delenv(name, raising=False)
    yield endpoint
    endpoint.stop()


@pytest.mark.parametrize("storage_identity", [STORAGE_ID, None], ids=["own-storage-identity", "shared-identity"])
def test_close_closes_every_client_and_both_identities(identity: IdentityEndpoint, storage_identity: str | None) -> None:
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com",
        "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1-mini",
        "AZURE_OPENAI_AUTH": "entra",
        "AZURE_CLIENT_ID": APP_ID,
        "AzureWebJobsStorage__blobServiceUri": "https://account.blob.core.windows.net",
        "AzureWebJobsStorage__queueServiceUri": "https://account.queue.core.windows.net",
        "AzureWebJobsStorage__credential": "managedidentity",
        **({"AzureWebJobsStorage__clientId": storage_identity} if storage_identity else {}),
    }
    settings = Settings.from_env(env)

    async def use_both_identities() -> None:
        async with Runtime(settings) as runtime:
            assert (await runtime.service.upstream.auth.headers())["Authorization"].startswith("Bearer ")
            assert (await runtime.service.blobs.credential.get_token(STORAGE_SCOPE)).token

    gc.collect()  # what earlier tests left for the collector warns now, not inside this test's record
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(use_both_identities())
        gc.collect()  # a client or credential left open warns when collected ("Unclosed client session")
    expected = {APP_ID: 1, STORAGE_ID: 1} if storage_identity else {APP_ID: 2}  # the model's token, then storage's
    assert identity.client_ids == expected
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
