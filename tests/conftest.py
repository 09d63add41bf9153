"""Session fixtures: real Azurite, the images simulator and the API, all over loopback HTTP."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from local.azurite import Azurite, start_azurite
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


@pytest.fixture()
def sim(simulator: ServerThread) -> Iterator[SimControl]:
    """The simulator, reset to defaults before each test."""
    control = SimControl(simulator.url)
    control.reset()
    yield control
    control.reset()


class SimControl:
    """Talks to the simulator's control endpoints over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url

    def reset(self) -> None:
        httpx.post(f"{self.url}/_sim/reset").raise_for_status()
        self.configure(
            latency=0, quota_requests=0, quota_window_seconds=60, fail_next=0, fail_rate=0, fail_status=500,
            hang_next=0, policy_blocked=False, url_ttl_seconds=86400,
        )

    def configure(self, **changes: Any) -> None:
        httpx.post(f"{self.url}/_sim/config", json=changes).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_sim/stats")
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]


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


@pytest.fixture()
def make_settings(azurite: Azurite, simulator: ServerThread) -> Callable[..., Settings]:
    def make(**overrides: str) -> Settings:
        env = {**base_env(azurite, simulator.url), **overrides}
        return Settings.from_env({k: v for k, v in env.items() if v is not None})

    return make


@pytest.fixture()
def start_api(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., ServerThread]]:
    """Start the API (FastAPI app over uvicorn, real HTTP) with settings overrides."""
    started: list[ServerThread] = []

    def start(**overrides: str) -> ServerThread:
        settings = make_settings(**overrides)
        server = serve_in_thread(create_app(Runtime(settings)))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture()
def api(start_api: Callable[..., ServerThread], sim: SimControl) -> ServerThread:
    """The API with default test settings, against the reset simulator."""
    return start_api()


@pytest.fixture()
def client(api: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=60) as c:
        yield c


def pytest_configure(config: pytest.Config) -> None:
    # The azure SDKs read proxies from the environment; loopback must never go through one.
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
