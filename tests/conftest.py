"""Session fixtures: real Azurite, the images simulator, and the API in process or over loopback HTTP.

Contract and validation tests drive the app in process (``in_process``: httpx's ASGI
transport, no server); the end-to-end ones (archive, links, the openai SDK) go through a
real uvicorn server (``api``, one per session, served as the Functions worker serves it:
``local.functions_worker.hosted``). Either way the app is built as the entry points build
it, ``create_app(Runtime(settings))``,
against real Azurite and the simulator over HTTP. Tests move the simulator's clock and
wait on its counters (``SimControl``) instead of sleeping.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from local.azurite import Azurite, start_azurite
from local.functions_worker import hosted
from local.servers import ServerThread, serve_in_thread
from local.simulator import SimulatorConfig, create_simulator
from shared.api import create_app
from shared.runtime import Runtime
from shared.settings import Settings

SIM_KEY = "sim-test-key-0123456789"  # the simulator's accepted key; not a real secret

DEPLOYMENTS = "gpt-image-1-mini=gpt-image-1-mini,gpt-image-1=gpt-image-1,gpt-image-1.5=gpt-image-1.5,gpt-image-2=gpt-image-2,dall-e-3=dall-e-3,images-prod=gpt-image-2"


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    instance = start_azurite()
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def simulator() -> Iterator[ServerThread]:
    config = SimulatorConfig(api_keys={SIM_KEY}, deployments={"images-prod": "gpt-image-2"})
    server = serve_in_thread(create_simulator(config))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sim_control(simulator: ServerThread) -> Iterator[SimControl]:
    with SimControl(simulator.url) as control:
        yield control


@pytest.fixture()
def sim(sim_control: SimControl) -> Iterator[SimControl]:
    """The simulator, reset to defaults (and real time) before each test."""
    sim_control.reset()
    yield sim_control
    sim_control.release()  # nothing a test held stays in flight
    sim_control.reset()


class SimControl:
    """Talks to the simulator's control endpoints over HTTP (one kept-alive connection; thread-safe)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, trust_env=False, timeout=30)

    def __enter__(self) -> SimControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def reset(self) -> None:
        """Zero the stats, real time, default faults and limits."""
        self.http.post("/_sim/reset").raise_for_status()
        self.configure(
            latency=0, quota_requests=0, quota_window_seconds=60, fail_next=0, fail_rate=0, fail_status=500,
            hang_next=0, hang_seconds=600, stop_on_disconnect=True, policy_blocked=False, url_ttl_seconds=86400,
        )

    def configure(self, **changes: Any) -> None:
        self.http.post("/_sim/config", json=changes).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = self.http.get("/_sim/stats")
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def clock(self, **changes: Any) -> float:
        """Move the simulator's time (``frozen=True``, ``advance=seconds``, ``real=True``); returns its now."""
        response = self.http.post("/_sim/clock", json=changes)
        response.raise_for_status()
        return float(response.json()["now"])

    def wait(self, at_least: dict[str, int] | None = None, at_most: dict[str, int] | None = None, timeout: float = 30) -> dict[str, Any]:
        """Block until the simulator's counters are within bounds (it answers on the change); the stats then."""
        response = self.http.post("/_sim/wait", json={"at_least": at_least or {}, "at_most": at_most or {}, "timeout": timeout}, timeout=timeout + 10)
        assert response.status_code == 200, f"simulator never reached at_least={at_least} at_most={at_most}: {response.text[:500]}"
        return response.json()  # type: ignore[no-any-return]

    def release(self) -> int:
        """End the latency or hang of every generation in flight; how many there were."""
        response = self.http.post("/_sim/release")
        response.raise_for_status()
        return int(response.json()["released"])


def base_env(azurite: Azurite, sim_url: str) -> dict[str, str]:
    return {
        "AZURE_OPENAI_ENDPOINT": sim_url,
        "AZURE_OPENAI_API_KEY": SIM_KEY,
        "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1-mini",
        "IMAGES_DEPLOYMENTS": DEPLOYMENTS,
        "AzureWebJobsStorage": azurite.connection_string,
        "IMAGES_ALLOW_HTTP_UPSTREAM": "true",
        "IMAGES_RETRY_BUDGET_SECONDS": "5",
    }


def settings_for(azurite: Azurite, sim_url: str, **overrides: str) -> Settings:
    env = {**base_env(azurite, sim_url), **overrides}
    return Settings.from_env({k: v for k, v in env.items() if v is not None})


@pytest.fixture()
def make_settings(azurite: Azurite, simulator: ServerThread) -> Callable[..., Settings]:
    def make(**overrides: str) -> Settings:
        return settings_for(azurite, simulator.url, **overrides)

    return make


@pytest.fixture()
async def in_process(make_settings: Callable[..., Settings], sim: SimControl) -> AsyncIterator[Callable[..., Awaitable[httpx.AsyncClient]]]:
    """Open the app in this process (no server) with settings overrides; runtime and client closed after the test.

    ``storage_options`` reach the storage clients (e.g. a short retry policy). The ASGI
    transport runs no lifespan, so the runtime is opened and closed here.
    """
    opened: list[tuple[httpx.AsyncClient, Runtime]] = []

    async def open_app(storage_options: dict[str, Any] | None = None, **overrides: str) -> httpx.AsyncClient:
        runtime = await Runtime(make_settings(**overrides), storage_options=storage_options).open()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://api.test", timeout=60)
        opened.append((client, runtime))
        return client

    yield open_app
    for client, runtime in reversed(opened):
        await client.aclose()
        await runtime.close()


@pytest.fixture()
async def app_client(in_process: Callable[..., Awaitable[httpx.AsyncClient]]) -> httpx.AsyncClient:
    """The app in process with the default test settings."""
    return await in_process()


@pytest.fixture(scope="session")
def api_server(azurite: Azurite, simulator: ServerThread) -> Iterator[ServerThread]:
    """One API over real HTTP with the default test settings, for the end-to-end tests, served as the Functions
    worker serves it (local/functions_worker.py); stopping it closes its runtime."""
    server = serve_in_thread(hosted(Runtime(settings_for(azurite, simulator.url))))
    yield server
    server.stop()


@pytest.fixture()
def api(api_server: ServerThread, sim: SimControl) -> ServerThread:
    """The API over real HTTP with default test settings, against the reset simulator."""
    return api_server


@pytest.fixture()
def client(api: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=60) as c:
        yield c


def pytest_configure(config: pytest.Config) -> None:
    # The azure SDKs read proxies from the environment; loopback must never go through one.
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
