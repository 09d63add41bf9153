"""Every upstream fault mode (local/faults.py) through both entries: the synchronous route and the queue.

For each one: the status the caller hears, the state the job ends in, and how many times the
simulator was called (a call that may be billed is never repeated). The simulator runs over
real HTTP (streaming, dripping and dropped connections are transport behaviour); the app runs in
process over httpx's ASGI transport; jobs run through the queue runner against Azurite.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from local import faults
from local.azurite import Azurite
from local.servers import ServerThread, serve_in_thread
from local.simulator import SimulatorConfig, create_simulator
from shared.api import create_app
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import SIM_KEY, SimControl
from tests.test_jobs import JobStack, drop

# Every fault mode through both entries (about 12 s): CI runs it (`.ci/run`: `dev.py test -m slow`).
pytestmark = pytest.mark.slow

GENERATE = "/openai/deployments/gpt-image-1-mini/images/generations?api-version=2025-04-01-preview"
DEADLINE = "4"  # seconds: the total deadline of one upstream call, sync and job
IMAGE_PATH = "/_sim/faults/image.png"
SECRETS = (SIM_KEY, faults.ECHOED_SIG, faults.ECHOED_ACCOUNT_KEY, faults.ECHOED_JWT)


@dataclass(frozen=True)
class Seen:
    """What one entry produced: the sync answer or the job record, and what else the test needs."""

    body: dict[str, Any]
    headers: httpx.Headers | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Expect:
    sync_status: int
    job_status: str
    check: Callable[[Seen, str], None] | None = None  # (what was seen, "sync" | "job")


def sane_created(seen: Seen, entry: str) -> None:
    created = seen.body["created"] if entry == "sync" else seen.body["result"]["created"]
    assert 1_700_000_000 < created < 2**34, created


def one_image(seen: Seen, entry: str) -> None:
    images = seen.body["data"] if entry == "sync" else seen.body["result"]["images"]
    assert len(images) == 1  # n = 1 was asked; the two extra images are dropped


def short_revised_prompt(seen: Seen, entry: str) -> None:
    image = seen.body["data"][0] if entry == "sync" else seen.body["result"]["images"][0]
    assert 0 < len(image["revised_prompt"]) <= 4000


def webp_served(seen: Seen, entry: str) -> None:
    name = seen.extra["name"]
    assert name.endswith("/0.webp"), name
    assert seen.extra["link_status"] == 302  # the stable link serves every format the archive writes


def nothing_leaked(seen: Seen, entry: str) -> None:
    error = seen.body["error"]
    text = str(error)
    assert not [s for s in SECRETS if s in text], text
    assert "***" in error["message"] and len(error["message"]) <= 1000


def default_retry_after(seen: Seen, entry: str) -> None:
    if entry == "sync":
        assert seen.headers is not None and seen.headers["Retry-After"] == "10"
    else:
        assert seen.body["events"][-1]["event"] == "throttled"


def bounded_error_read(seen: Seen, entry: str) -> None:
    # The one call stopped reading after a few KB: the server got rid of little more than the sockets' buffers.
    assert faults.STREAMED["huge-error"] < faults.HUGE_ERROR_BYTES // 4, faults.STREAMED


def other_port_untouched(seen: Seen, entry: str) -> None:
    assert seen.extra["other_port_hits"] == 0


FAULTS: dict[str, Expect] = {
    "[[nan-created]]": Expect(502, "failed"),
    "[[huge-created]]": Expect(200, "succeeded", check=sane_created),
    "[[deep-json]]": Expect(502, "failed"),
    "[[huge-revised-prompt]]": Expect(200, "succeeded", check=short_revised_prompt),
    "[[extra-images]]": Expect(200, "succeeded", check=one_image),
    "[[webp]]": Expect(200, "succeeded", check=webp_served),
    "[[drip]]": Expect(504, "failed"),
    "[[truncated]]": Expect(502, "failed"),
    "[[url]]": Expect(200, "succeeded"),
    "[[foreign-url:{other}]]": Expect(502, "failed", check=other_port_untouched),
    "[[redirect-port:{other}]]": Expect(502, "failed", check=other_port_untouched),
    # A 500 once the request was sent: upstream may have worked, so it is one call, never delivered again.
    "[[huge-error]]": Expect(502, "failed", check=bounded_error_read),
    "[[deep-error]]": Expect(400, "failed"),
    "[[echo-key]]": Expect(400, "failed", check=nothing_leaked),
    "[[bad-retry-after]]": Expect(429, "notRunning", check=default_retry_after),
}


def test_every_fault_mode_is_in_the_table() -> None:
    assert {re.sub(r":\{other\}", "", m) for m in FAULTS} == set(faults.MARKERS)


@pytest.fixture(scope="module")
def other_port() -> Iterator[ServerThread]:
    """A second server on another port of the same host: what a foreign image URL points at."""
    server = serve_in_thread(create_simulator(SimulatorConfig(prewarm=False)))
    yield server
    server.stop()


def hits(server: ServerThread) -> int:
    port = int(server.url.rsplit(":", 1)[1])
    return sum(count for (p, _), count in faults.HITS.items() if p == port)


def fault_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        IMAGES_QUEUE=f"faults-{uuid.uuid4().hex[:12]}",
        IMAGES_MAX_RETRIES="0",
        IMAGES_SYNC_TIMEOUT_SECONDS=DEADLINE,
        IMAGES_UPSTREAM_TIMEOUT_SECONDS=DEADLINE,
    )


@contextlib.asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process over a Runtime (ASGITransport runs no lifespan: the runtime is opened here)."""
    async with Runtime(settings) as runtime:
        app = create_app(runtime, owns_runtime=False)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test", timeout=60) as client:
            yield client


@pytest.mark.parametrize("marker", list(FAULTS))
async def test_fault_through_the_sync_route(
    marker: str, make_settings: Callable[..., Settings], sim: SimControl, other_port: ServerThread
) -> None:
    expect = FAULTS[marker]
    faults.STREAMED.clear()
    before, other_before = sim.stats()["requests"], hits(other_port)
    async with app_client(fault_settings(make_settings)) as client:
        response = await client.post(GENERATE, json={"prompt": "fault " + marker.format(other=other_port.url.rsplit(":", 1)[1])})
        body = response.json()
        extra: dict[str, Any] = {"other_port_hits": hits(other_port) - other_before}
        if response.status_code == 200:
            name = body["data"][0]["url"].split("/images/", 1)[1].split("?", 1)[0]
            extra |= {"name": name, "link_status": (await client.get(f"/images/{name}")).status_code}
    assert response.status_code == expect.sync_status, response.text
    assert set(body) == ({"created", "data", "usage"} if expect.sync_status == 200 else {"error"}), body
    assert sim.stats()["requests"] - before == 1
    if expect.check:
        expect.check(Seen(body, response.headers, extra), "sync")


@pytest.mark.parametrize("marker", list(FAULTS))
def test_fault_through_the_queue(
    marker: str, make_settings: Callable[..., Settings], azurite: Azurite, sim: SimControl, other_port: ServerThread
) -> None:
    expect = FAULTS[marker]
    faults.STREAMED.clear()
    stack = JobStack(fault_settings(make_settings), azurite)
    job_id = f"fault-{uuid.uuid4().hex[:8]}"
    drop(stack.queue(), {"id": job_id, "prompt": "fault " + marker.format(other=other_port.url.rsplit(":", 1)[1])})
    before, other_before = sim.stats()["requests"], hits(other_port)
    stack.start_runner()
    try:
        ended = ("succeeded", "failed", "deferred")
        stats = stack.runner.wait_for(lambda s: s.poisoned > 0 or any(o.job_id == job_id and o.action in ended for o in s.outcomes))
        job = stack.job(job_id)
    finally:
        stack.stop()
    assert job["status"] == expect.job_status, job
    assert sim.stats()["requests"] - before == 1  # every fault here is one call: none is handed back to the queue
    assert job["lease"] is None  # never left running
    if expect.job_status == "failed":
        assert job["error"]["code"] and job["error"]["message"]
        assert stats.retried == 0 and stats.poisoned == 0  # may be billed, or refused: never delivered again
        assert stack.queue().peek_messages() == []
    if expect.check:
        name = (job.get("result") or {"images": [{"name": ""}]})["images"][0]["name"]
        extra = {"other_port_hits": hits(other_port) - other_before, "name": name}
        if expect.job_status == "succeeded":
            extra["link_status"] = link_status(stack.settings, name)
        expect.check(Seen(job, None, extra), "job")


def link_status(settings: Settings, name: str) -> int:
    """The stable link route's answer for an archived name (in process)."""

    async def get() -> int:
        async with app_client(settings) as client:
            return (await client.get(f"/images/{name}")).status_code

    return asyncio.run(get())
