"""Views that stay fast: ``python -m bench.views [--smoke]`` (also ``python -m bench.run --only views``).

``records`` job records (50,000), spread over ``days`` days (the last one today) and ``callers``
Entra callers: each is a copy, under a new id, caller and time, of a job the service really ran
against the images simulator, and each is written by the service's own job store (the index
entries first, then the record: shared/jobs/store.py). The API runs in its own process in entra
mode; each request carries the principal headers App Service authentication would set.

Measured ``rounds`` times each, median and spread, through HTTP:

- ``GET /gallery``: one caller's page of today (its own entries); an operator's page of today (every caller's);
- ``GET /usage``: one caller's today, the first call (which lists its day and checkpoints it) and the
  ones after (from the checkpoint); an operator's ``caller=all``;
- today's scan, for comparison: what the gallery did before the index for one page of a day (every
  job name of the jobs container listed, 5000 a call, those of the day sorted, the page's records
  read), measured in this process (no HTTP hop).

Target: the gallery page and ``/usage`` median <= 300 ms at 50,000 job records.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from azure.storage.blob.aio import BlobServiceClient, ContainerClient
from azure.storage.queue.aio import QueueClient

from bench.procs import Child, child_env, start_child
from local.azurite import Azurite, start_azurite
from local.easyauth import principal_headers
from local.servers import free_port
from shared.callers import CALLER_ROLE, OPERATOR_ROLE, Caller
from shared.jobs import JobRecord, Jobs
from shared.runtime import Runtime
from shared.settings import Settings

DEPLOYMENT = "gpt-image-1-mini"


@dataclass(frozen=True)
class ViewsSize:
    records: int = 50_000
    days: int = 10
    callers: int = 5
    real_jobs: int = 4
    rounds: int = 15
    scan_rounds: int = 3
    per_page: int = 24
    concurrency: int = 96  # writes in flight while seeding


FULL = ViewsSize()
SMOKE = ViewsSize(records=300, days=3, callers=3, real_jobs=2, rounds=3, scan_rounds=1)


def principal(oid: str, role: str = CALLER_ROLE) -> dict[str, str]:
    """The headers App Service authentication sets for an Entra principal (mapped as the local front maps a token)."""
    return {key.decode(): value.decode() for key, value in principal_headers({"oid": oid, "roles": [role]})}


def _callers(count: int) -> list[Caller]:
    return [Caller("entra", f"bench-caller-{i}", f"caller {i}", "aad", frozenset({CALLER_ROLE})) for i in range(count)]


async def _real_jobs(runtime: Runtime, size: ViewsSize, caller: Caller) -> list[JobRecord]:
    """Jobs the service runs against the simulator, start to end (the templates of every seeded record)."""
    jobs: Jobs = runtime.jobs
    made = []
    queue = QueueClient.from_connection_string(runtime.settings.storage.connection_string, runtime.settings.queue_name)
    async with queue:
        for i in range(size.real_jobs):
            body = {"prompt": f"A lighthouse on a cliff, study {i}", "size": "1024x1024", "quality": "low"}
            record, _ = await jobs.submit(uuid.uuid4().hex, DEPLOYMENT, body, caller=caller)
            message = await queue.receive_message()
            assert message is not None
            outcome = await jobs.handle(message.content, message.id, 1)
            await queue.delete_message(message)
            stored = await jobs.store.get(record.id)
            assert outcome.action == "succeeded" and stored is not None, outcome
            made.append(stored.record)
    return made


async def _seed(runtime: Runtime, size: ViewsSize, templates: list[JobRecord], callers: list[Caller], today: dt.date) -> float:
    """``size.records`` job records written by the service's job store, spread over days and callers; seconds taken."""
    gate = asyncio.Semaphore(size.concurrency)
    now = dt.datetime.now(dt.UTC)
    per_day = -(-size.records // size.days)

    async def one(i: int) -> None:
        day = today - dt.timedelta(days=i % size.days)
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        end = min(start + dt.timedelta(days=1), now - dt.timedelta(minutes=20))  # today's: settled, as /usage checkpoints them
        at = start + (end - start) * ((i // size.days) / per_day)  # the callers take turns through the day
        template = templates[i % len(templates)]
        record = template.model_copy(
            update={"id": uuid.uuid4().hex, "caller": callers[(i // size.days) % len(callers)].record(), "created": int(at.timestamp()), "created_at": at, "updated": at}
        )
        async with gate:
            assert await runtime.jobs.store.create(record) is not None

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(size.records)))
    return time.monotonic() - started


async def scan_page(jobs: ContainerClient, day: str, per_page: int) -> int:
    """Today's scan (the gallery before the index): every job name of the container, the day's sorted, the page's records read.

    Job ids here are hex: listing the prefixes 0-f lists exactly the job records, as the container held before
    the index entries (``_index/``) joined them, so the scan is not charged for names it never had to list."""
    candidates = []
    for prefix in "0123456789abcdef":
        async for blob in jobs.list_blobs(name_starts_with=prefix, results_per_page=5000):
            if blob.name.endswith(".json") and blob.last_modified.strftime("%Y-%m-%d") == day:
                candidates.append((blob.last_modified, blob.name))
    page = sorted(candidates, reverse=True)[:per_page]
    gate = asyncio.Semaphore(8)

    async def read(name: str) -> bytes:
        async with gate:
            return await (await jobs.download_blob(name)).readall()

    await asyncio.gather(*(read(name) for _, name in page))
    return len(candidates)


async def _timed(call: Callable[[], Awaitable[Any]], rounds: int) -> dict[str, Any]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return {"ms_median": round(statistics.median(times), 1), "ms_min": round(min(times), 1), "ms_max": round(max(times), 1), "rounds": rounds}


async def _measure(api: str, azurite: Azurite, settings: Settings, size: ViewsSize, callers: list[Caller], today: str) -> dict[str, Any]:
    caller, boss = principal(callers[0].principal), principal("bench-operator", OPERATOR_ROLE)
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=api, timeout=120) as http:

        async def get(path: str, headers: dict[str, str], **params: Any) -> httpx.Response:
            answer = await http.get(path, params=params, headers=headers)
            answer.raise_for_status()
            return answer

        first = await _timed(lambda: get("/usage", caller, day=today), 1)
        out["usage_first_call"] = first | {"requests": (await get("/usage", caller, day=today)).json()["total"]["requests"]}
        out["usage"] = await _timed(lambda: get("/usage", caller, day=today), size.rounds)
        out["usage_all_callers"] = await _timed(lambda: get("/usage", boss, day=today, caller="all"), size.rounds)
        tiles = (await get("/gallery", caller, day=today, per_page=size.per_page)).text.count('class="tile"')
        out["gallery"] = await _timed(lambda: get("/gallery", caller, day=today, per_page=size.per_page), size.rounds) | {"tiles": tiles}
        out["gallery_operator"] = await _timed(lambda: get("/gallery", boss, day=today, per_page=size.per_page), size.rounds)
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as blobs:
        jobs = blobs.get_container_client(settings.jobs_container)
        seeded_today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")  # the scan filters by when the blobs were written
        out["scan_candidates"] = await scan_page(jobs, seeded_today, size.per_page)
        out["scan_gallery_page"] = await _timed(lambda: scan_page(jobs, seeded_today, size.per_page), size.scan_rounds)
    return out


def _env(azurite: Azurite, sim_url: str, key: str, tag: str) -> dict[str, str]:
    return {
        "AZURE_OPENAI_ENDPOINT": sim_url, "AZURE_OPENAI_API_KEY": key, "AZURE_OPENAI_DEPLOYMENT": DEPLOYMENT,
        "IMAGES_DEPLOYMENTS": f"{DEPLOYMENT}={DEPLOYMENT}", "IMAGES_ALLOW_HTTP_UPSTREAM": "true", "AzureWebJobsStorage": azurite.connection_string,
        "IMAGES_CONTAINER": f"views-{tag}", "IMAGES_JOBS_CONTAINER": f"views-jobs-{tag}", "IMAGES_QUEUE": f"views-{tag}",
        "IMAGES_CALLER_AUTH": "entra", "WEBSITE_AUTH_ENABLED": "true",
    }  # fmt: skip


def measure_views(azurite: Azurite, size: ViewsSize = FULL, seeded: dict[str, Any] | None = None) -> dict[str, Any]:
    """Seed ``size.records`` job records (unless ``seeded`` says which are there already), start the API, measure the
    views and today's scan."""
    with tempfile.TemporaryDirectory(prefix="bench-views-") as tmp:
        workdir, key = Path(tmp), uuid.uuid4().hex
        sim_url = f"http://127.0.0.1:{free_port()}"
        simulator = ["local.simulator", "--port", sim_url.rsplit(":", 1)[1], "--api-key", key, "--log-level", "warning"]
        children: list[Child] = [start_child("views-simulator", simulator, child_env({}), sim_url, "/_sim/health", workdir)]
        try:
            found = dict(seeded or {"tag": uuid.uuid4().hex[:8], "today": dt.datetime.now(dt.UTC).date().isoformat()})
            env = _env(azurite, sim_url, key, found["tag"])
            settings, callers = Settings.from_env(env), _callers(size.callers)

            async def seed() -> float:
                async with Runtime(settings, warn_retired_models=False) as runtime:
                    templates = await _real_jobs(runtime, size, callers[0])
                    return await _seed(runtime, size, templates, callers, dt.date.fromisoformat(found["today"]))

            if seeded is None:
                found["seed_s"] = round(asyncio.run(seed()), 1)
            api_url = f"http://127.0.0.1:{free_port()}"
            children.append(start_child("views-api", ["bench.serve_api", "--port", api_url.rsplit(":", 1)[1]], child_env(env), api_url, "/healthz", workdir))
            found |= asyncio.run(_measure(api_url, azurite, settings, size, callers, found["today"]))
        finally:
            for child in reversed(children):
                child.stop()
    per_caller_day = size.records // (size.days * size.callers)
    return {"records": size.records, "days": size.days, "callers": size.callers, "per_caller_day": per_caller_day} | found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.views", description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--records", type=int, help="job records to seed")
    parser.add_argument("--data", type=Path, help="keep Azurite's data here; a second run over it measures again without seeding")
    args = parser.parse_args(argv)
    size = SMOKE if args.smoke else FULL
    if args.records:
        size = ViewsSize(**{**size.__dict__, "records": args.records})
    state = args.data / "views.json" if args.data else None
    seeded = json.loads(state.read_text()) if state and state.exists() else None
    azurite = start_azurite(args.data)
    try:
        result = measure_views(azurite, size, seeded)
    finally:
        azurite.stop()
    if state and seeded is None:
        state.write_text(json.dumps({k: result[k] for k in ("tag", "today", "seed_s")}))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
