"""The benchmark: ``python3 dev.py bench [--smoke] [--write-md]`` (= ``python -m bench.run``).

Measures in one run, against the local stack (Azurite from node_modules, the
images simulator in its own process, each API in its own process, all on loopback):

1. overhead     a synchronous request through the API (simulator latency 0) against
                the floor: one direct upstream call plus one blob upload of the same
                bytes with the same SDKs and libraries (httpx, the service's streaming
                reader of upstream bodies with pybase64, azure-storage-blob aio) from this
                process. Median of the per-request ratios; floor and API calls interleave.
2. concurrency  N simultaneous synchronous requests (1024x1024 PNG, about 2.3 MB) with
                the simulator's latency at L s and at 0; the makespan difference, and
                the API process's peak RSS above idle per request in flight, as a
                multiple of the image size (VmHWM reset through /proc/<pid>/clear_refs).
3. queue        J jobs through the queue (local/queue_runner.py, host.json settings)
                against a simulator quota of Q requests per W s; completed jobs over
                what the quota allows in the same time (Q + elapsed * Q/W), failures,
                poison messages, upstream generations per job.
4. cold start   importing function_app against importing only its dependencies, each
                in a fresh interpreter; median of several runs.
5. the naive implementation (bench/naive.py) on 1-3, side by side.
6. deployment pools (bench/pool.py).
7. upload       the event loop under a large edit upload (bench/upload.py): how much slower
                a concurrent GET /healthz gets while a 40 MB image is read, checked and stored.
8. views        the gallery page and /usage at 50,000 job records (bench/views.py), against
                the scan the gallery did before the index.

Prints a table, writes bench/results/latest.json; ``--write-md`` also puts the table into
BENCHMARKS.md. ``--smoke`` runs everything at a tiny size (CI; no timing is asserted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient as SyncBlobServiceClient
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue import QueueClient

from bench.naive import NaiveGenerator
from bench.pool import FULL as POOL_FULL
from bench.pool import SMOKE as POOL_SMOKE
from bench.pool import measure_pool
from bench.procs import ROOT, Child, child_env, machine, memory, reset_peak, start_child
from bench.stream import FULL as STREAM_FULL
from bench.stream import SMOKE as STREAM_SMOKE
from bench.stream import measure_stream
from bench.upload import FULL as UPLOAD_FULL
from bench.upload import SMOKE as UPLOAD_SMOKE
from bench.upload import measure_upload
from bench.views import FULL as VIEWS_FULL
from bench.views import SMOKE as VIEWS_SMOKE
from bench.views import measure_views
from local.azurite import Azurite, start_azurite
from local.queue_runner import QueueRunner
from local.servers import free_port
from shared.host import host_queue_settings
from shared.runtime import Runtime, storage_client_options
from shared.settings import Settings
from shared.upstream import ImageBodyReader

log = logging.getLogger("bench")

RESULTS = ROOT / "bench" / "results" / "latest.json"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
MD_START, MD_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"

SERVICE_DEPLOYMENT = "gpt-image-1-mini"  # gpt-image: base64 from upstream, as the service always asks
NAIVE_DEPLOYMENT = "dall-e-3"  # url results: what the naive implementation downloads
API_VERSION = "2025-04-01-preview"
PROMPT = "A lighthouse on a cliff at dawn, disposable camera"
# A url answer: gpt-image deployments answer b64_json by default (as the model does), and the floor
# below returns no bytes to the caller, so the benchmark asks for the answer its floor matches
# (DESIGN.md, "Measuring cost against the floor"). Calls.service refuses an answer with bytes.
UPSTREAM_BODY = {"prompt": PROMPT, "size": "1024x1024"}  # what the floor sends the model itself (gpt-image refuses response_format)
BODY = {**UPSTREAM_BODY, "response_format": "url"}
FLOOR_IMAGE_LIMIT = 50 * 2**20  # the service's default IMAGES_MAX_IMAGE_BYTES

DEPENDENCIES = (
    "azure.functions",
    "fastapi",
    "httpx",
    "aiohttp",
    "azure.storage.blob",
    "azure.storage.blob.aio",
    "azure.storage.queue",
    "azure.storage.queue.aio",
    "azure.identity.aio",
    "azure.keyvault.secrets.aio",
    # requirements.txt's other runtime packages: importing them is the dependencies' cost, not the app's
    "pydantic_settings",
    "tenacity",
    "jinja2",
    "python_multipart",
    "pybase64",
    "opentelemetry.trace",
    "opentelemetry.metrics",
)


@dataclass(frozen=True)
class Size:
    """How big each part of the run is."""

    name: str
    requests: int = 40  # overhead: sequential requests (after warmup)
    warmup: int = 3
    concurrency: int = 32
    latency: float = 1.0
    jobs: int = 60
    quota: int = 10
    window: float = 10.0
    queue_timeout: float = 200.0
    cold_runs: int = 7
    # QueueRunner overrides (None: host.json's visibilityTimeout / maxPollingInterval, as in Azure)
    retry_delay: float | None = None
    max_poll_interval: float | None = None


FULL = Size("full")
SMOKE = Size(
    "smoke", requests=3, warmup=1, concurrency=4, latency=0.3, jobs=6, quota=3, window=2.0, queue_timeout=40.0, cold_runs=1,
    retry_delay=1.0, max_poll_interval=0.5,
)


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    op: str  # "<=", ">=", "=="
    value: float
    unit: str = ""

    def met(self, measured: float | None) -> bool | None:
        if measured is None or (isinstance(measured, float) and math.isnan(measured)):
            return None
        if self.op == "<=":
            return measured <= self.value
        if self.op == ">=":
            return measured >= self.value
        return math.isclose(measured, self.value, rel_tol=1e-9, abs_tol=1e-9)

    @property
    def text(self) -> str:
        return f"{self.op} {self.value:g}{self.unit}"


TARGETS = (
    Target("overhead_ratio", "1. overhead: API / floor, median", "<=", 1.15),
    Target("makespan_diff_s", "2. makespan(latency L) - makespan(0)", "<=", 1.3, " s"),
    Target("memory_per_request_x_image", "2. peak RSS above idle / request in flight / image", "<=", 3.0, "x"),
    Target("makespan_diff_s_at_cap", "2. makespan difference, IMAGES_MAX_CONCURRENT_UPSTREAM = burst", "<=", 1.3, " s"),
    Target("memory_per_request_x_image_at_cap", "2. memory per request, IMAGES_MAX_CONCURRENT_UPSTREAM = burst", "<=", 3.0, "x"),
    Target("queue_throughput_vs_quota", "3. queue: completed / quota allowance", ">=", 0.9),
    Target("queue_failures", "3. queue: failed jobs", "==", 0),
    Target("queue_poisoned", "3. queue: poison messages", "==", 0),
    Target("queue_generations_per_job", "3. queue: upstream generations per job", "==", 1),
    Target("cold_start_ratio", "4. cold start: import function_app / deps", "<=", 1.15),
    Target("pool_queue_vs_allowance", "6. pool queue: completed / summed quota allowance", ">=", 0.9),
    Target("pool_queue_429_per_job", "6. pool queue: upstream 429s per completed job", "<=", 0.5),
    Target("pool_queue_failures", "6. pool queue: failed jobs", "==", 0),
    Target("pool_queue_generations_per_job", "6. pool queue: upstream generations per job", "==", 1),
    Target("pool_one_queue_vs_allowance", "6. pool queue, one instance: completed / summed quota allowance", ">=", 0.9),
    Target("pool_one_queue_429", "6. pool queue, one instance: upstream 429s", "==", 0),
    Target("pool_one_queue_failures", "6. pool queue, one instance: failed jobs", "==", 0),
    Target("pool_sync_errors", "6. pool sync: errors", "==", 0),
    Target("pool_sync_makespan_vs_ideal", "6. pool sync: makespan / what the summed quota allows", "<=", 1.1),
    Target("pool_overhead_deviation", "6. pool overhead: abs(one-backend pool / no pool - 1), median latency", "<=", 0.02),
    Target("pool_overhead_cpu_deviation", "6. pool overhead: abs(one-backend pool / no pool - 1), median CPU per request", "<=", 0.02),
    Target("upload_added_ms", "7. upload: slowest concurrent /healthz during a 40 MB edit upload - at rest (worst kind)", "<=", 50, " ms"),
    Target("views_gallery_ms", "8. views: gallery page of a caller's day at 50,000 job records, median", "<=", 300, " ms"),
    Target("views_usage_ms", "8. views: /usage of a caller's day at 50,000 job records, median", "<=", 300, " ms"),
    Target("stream_first_partial_overhead_ms", "9. stream: first partial image, service - direct, median", "<=", 50, " ms"),
    Target("stream_memory_per_stream_x_image", "9. stream: peak RSS above idle / stream in flight / image", "<=", 2.0, "x"),
    Target("stream_errors", "9. stream: errors in the concurrent streams", "==", 0),
)
METRICS = tuple(t.key for t in TARGETS)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    azurite: Azurite
    simulator: Child
    service: Child
    naive: Child | None
    env: dict[str, str]
    sim_key: str
    children: list[Child] = field(default_factory=list)
    service_cap: Child | None = None  # the service with IMAGES_MAX_CONCURRENT_UPSTREAM raised to the burst size

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.azurite.stop()


def start_stack(workdir: Path, with_naive: bool, upstream_cap: int | None = None) -> Stack:
    """Azurite, then the simulator, the service API and the naive API, each in its own process."""
    azurite = start_azurite(workdir / "azurite")
    children: list[Child] = []
    try:
        sim_key = secrets.token_urlsafe(24)
        sim_url = f"http://127.0.0.1:{free_port()}"
        simulator = start_child(
            "simulator",
            ["local.simulator", "--port", sim_url.rsplit(":", 1)[1], f"--api-key={sim_key}", "--log-level", "warning"],  # a key may begin with "-"
            child_env({}),
            sim_url,
            "/_sim/health",
            workdir,
        )
        children.append(simulator)
        env = {
            "AZURE_OPENAI_ENDPOINT": sim_url,
            "AZURE_OPENAI_API_KEY": sim_key,
            "AZURE_OPENAI_DEPLOYMENT": SERVICE_DEPLOYMENT,
            "IMAGES_DEPLOYMENTS": f"{SERVICE_DEPLOYMENT}={SERVICE_DEPLOYMENT}",
            "IMAGES_ALLOW_HTTP_UPSTREAM": "true",
            "AzureWebJobsStorage": azurite.connection_string,
        }
        api_url = f"http://127.0.0.1:{free_port()}"
        service = start_child("service-api", ["bench.serve_api", "--port", api_url.rsplit(":", 1)[1]], child_env(env), api_url, "/healthz", workdir)
        children.append(service)
        service_cap = None
        if upstream_cap is not None:
            cap_url = f"http://127.0.0.1:{free_port()}"
            cap_env = child_env({**env, "IMAGES_MAX_CONCURRENT_UPSTREAM": str(upstream_cap)})
            service_cap = start_child("service-api-cap", ["bench.serve_api", "--port", cap_url.rsplit(":", 1)[1]], cap_env, cap_url, "/healthz", workdir)
            children.append(service_cap)
        naive = None
        if with_naive:
            naive_url = f"http://127.0.0.1:{free_port()}"
            naive = start_child("naive-api", ["bench.naive", "--port", naive_url.rsplit(":", 1)[1]], child_env(env), naive_url, "/healthz", workdir)
            children.append(naive)
    except BaseException:
        for child in reversed(children):
            child.stop()
        azurite.stop()
        raise
    return Stack(azurite, simulator, service, naive, env, sim_key, children, service_cap)


async def sim_config(http: httpx.AsyncClient, stack: Stack, **changes: Any) -> None:
    (await http.post(f"{stack.simulator.url}/_sim/config", json=changes)).raise_for_status()


async def sim_stats(http: httpx.AsyncClient, stack: Stack, reset: bool = False) -> dict[str, Any]:
    response = await (http.post(f"{stack.simulator.url}/_sim/reset") if reset else http.get(f"{stack.simulator.url}/_sim/stats"))
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


# --------------------------------------------------------------------------- 1 + 2: HTTP


_RECORD_LIKE = json.dumps({"id": "x" * 32, "parameters": {"prompt": PROMPT}, "images": [{"sha256": "0" * 64}]}, indent=2).encode() * 3


class Calls:
    """The three ways of doing one generation, each returning (seconds, image bytes or 0)."""

    def __init__(self, stack: Stack, client: httpx.AsyncClient, upstream: httpx.AsyncClient, blobs: BlobServiceClient) -> None:
        self.stack = stack
        self.client = client  # this process as the caller of the APIs
        self.upstream = upstream  # the floor's model client (keep-alive pool, like the service's)
        self.floor_container = blobs.get_container_client("bench-floor")
        self.payload = json.dumps(BODY).encode()
        self.upstream_payload = json.dumps(UPSTREAM_BODY).encode()
        self.service_url = f"{stack.service.url}/openai/deployments/{SERVICE_DEPLOYMENT}/images/generations?api-version={API_VERSION}"
        self.naive_url = f"{stack.naive.url}/openai/deployments/{NAIVE_DEPLOYMENT}/images/generations" if stack.naive else ""
        self.upstream_url = f"{stack.simulator.url}/openai/deployments/{SERVICE_DEPLOYMENT}/images/generations?api-version={API_VERSION}"

    async def prepare(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self.floor_container.create_container()

    async def floor(self) -> tuple[float, int]:
        """One direct upstream call and one upload of the same bytes: the least any implementation must do.

        With the libraries the service uses, so the margin is the service's and not theirs: the answer is
        read by the service's own parser for upstream bodies (each ``b64_json`` decoded by pybase64 as it streams in)."""
        started = time.perf_counter()
        headers = {"api-key": self.stack.sim_key, "Content-Type": "application/json"}
        async with self.upstream.stream("POST", self.upstream_url, content=self.upstream_payload, headers=headers) as response:
            response.raise_for_status()
            reader = ImageBodyReader(FLOOR_IMAGE_LIMIT, max_images=1)
            async for chunk in response.aiter_bytes():
                reader.feed(chunk)
        data = reader.image(reader.result()["data"][0]["b64_json"])
        assert data is not None
        await self.floor_container.upload_blob(f"{uuid.uuid4().hex}.png", data, overwrite=True)
        return time.perf_counter() - started, len(data)

    async def record_put(self) -> float:
        """One small JSON upload (a record's size): the extra write this service makes per generation
        (on the synchronous path alongside the image's upload, so it costs CPU and storage work, not a round trip)."""
        started = time.perf_counter()
        await self.floor_container.upload_blob(f"{uuid.uuid4().hex}.json", _RECORD_LIKE, overwrite=True)
        return time.perf_counter() - started

    async def hop(self) -> float:
        """One round trip to the API that does nothing (GET /healthz): the extra hop a caller makes."""
        started = time.perf_counter()
        (await self.client.get(f"{self.stack.service.url}/healthz")).raise_for_status()
        return time.perf_counter() - started

    async def service(self, url: str | None = None) -> tuple[float, int]:
        started = time.perf_counter()
        response = await self.client.post(url or self.service_url, content=self.payload, headers={"Content-Type": "application/json"})
        elapsed = time.perf_counter() - started
        if response.status_code != 200 or not response.json()["data"][0].get("url"):
            log = self.stack.service.log.read_text(errors="replace")[-3000:]  # the API's own account of it
            raise RuntimeError(f"service answered {response.status_code}: {response.text[:300]}\n--- {self.stack.service.log}:\n{log}")
        if "b64_json" in response.json()["data"][0]:
            raise RuntimeError("the service answered with the image's bytes; the floor returns none, so the comparison would not be fair")
        return elapsed, 0

    async def naive(self) -> tuple[float, int]:
        started = time.perf_counter()
        response = await self.client.post(self.naive_url, content=self.payload, headers={"Content-Type": "application/json"})
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"naive answered {response.status_code}: {response.text[:300]}")
        return elapsed, 0


async def measure_overhead(calls: Calls, size: Size, with_naive: bool) -> dict[str, Any]:
    """Interleaved floor / service / naive calls, one at a time; median of per-request ratios."""
    for _ in range(size.warmup):
        await calls.floor()
        await calls.service()
        if with_naive:
            await calls.naive()
    floor, service, naive, image_sizes, record_puts, hops = [], [], [], [], [], []
    for _ in range(size.requests):
        seconds, image_bytes = await calls.floor()
        floor.append(seconds)
        image_sizes.append(image_bytes)
        service.append((await calls.service())[0])
        if with_naive:
            naive.append((await calls.naive())[0])
        record_puts.append(await calls.record_put())
        hops.append(await calls.hop())
    # What this design adds by necessity: the caller's hop to the API. (The record is written while the image uploads.)
    design = [f + h for f, h in zip(floor, hops, strict=True)]
    result: dict[str, Any] = {
        "requests": size.requests,
        "image_bytes_mean": round(statistics.mean(image_sizes)),
        "floor_ms_median": _ms(_median(floor)),
        "service_ms_median": _ms(_median(service)),
        "service_ratio_median": round(_median([s / f for s, f in zip(service, floor, strict=True)]), 3),
        "service_ratio_of_medians": round(_median(service) / _median(floor), 3),
        "record_put_ms_median": _ms(_median(record_puts)),
        "api_hop_ms_median": _ms(_median(hops)),
        "service_vs_floor_plus_hop": round(_median([s / d for s, d in zip(service, design, strict=True)]), 3),
    }
    if with_naive:
        result |= {
            "naive_ms_median": _ms(_median(naive)),
            "naive_ratio_median": round(_median([n / f for n, f in zip(naive, floor, strict=True)]), 3),
        }
    return result


class PeakSampler:
    """Fallback when /proc/<pid>/clear_refs is refused: sample VmRSS every 2 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, memory(self.pid)["VmRSS"])
            time.sleep(0.002)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def burst(call: Callable[[], Awaitable[tuple[float, int]]], n: int) -> dict[str, Any]:
    """n calls at once; makespan from the first send to the last answer."""
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(call() for _ in range(n)), return_exceptions=True)
    makespan = time.perf_counter() - started
    errors = [repr(o)[:200] for o in outcomes if isinstance(o, BaseException)]
    latencies = [o[0] for o in outcomes if not isinstance(o, BaseException)]
    return {
        "makespan_s": round(makespan, 3),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "latency_ms_median": _ms(_median(latencies)),
        "latency_ms_max": _ms(max(latencies)) if latencies else None,
    }


async def measure_concurrency(http: httpx.AsyncClient, stack: Stack, child: Child, call: Callable[[], Awaitable[tuple[float, int]]], size: Size, image_bytes: int) -> dict[str, Any]:
    """Burst at latency L then at 0; peak RSS above the idle RSS measured before the first burst."""
    await asyncio.sleep(0.3)
    idle = memory(child.pid)["VmRSS"]
    exact = reset_peak(child.pid)
    runs: dict[str, Any] = {}
    peaks: list[int] = []
    for latency in (size.latency, 0.0):
        await sim_config(http, stack, latency=latency)
        sampler = None if exact else PeakSampler(child.pid)
        with sampler or contextlib.nullcontext():
            run = await burst(call, size.concurrency)
        peak = sampler.peak if sampler is not None else memory(child.pid)["VmHWM"]
        peaks.append(peak)
        run["peak_rss_mib"] = round(peak / 2**20, 1)
        runs[f"latency_{latency:g}s"] = run
    slow, fast = runs[f"latency_{size.latency:g}s"], runs["latency_0s"]
    # The first burst has every request in flight at once: its peak is the memory figure.
    above = max(peaks[0] - idle, 0)
    return {
        "concurrency": size.concurrency,
        "latency_s": size.latency,
        "runs": runs,
        "makespan_diff_s": round(slow["makespan_s"] - fast["makespan_s"], 3),
        "errors": slow["errors"] + fast["errors"],
        "idle_rss_mib": round(idle / 2**20, 1),
        "peak_above_idle_mib": round(above / 2**20, 1),
        "peak_above_idle_both_bursts_mib": round(max(max(peaks) - idle, 0) / 2**20, 1),
        "memory_per_request_x_image": round(above / size.concurrency / image_bytes, 2),
        "peak_method": "VmHWM after clear_refs" if exact else "VmRSS sampled every 2 ms",
    }


# --------------------------------------------------------------------------- 3: queue


@dataclass
class QueueRun:
    """One implementation's queue run: its runner and when each job ended."""

    name: str
    runner: QueueRunner
    deployment: str
    done: dict[str, tuple[str, float]] = field(default_factory=dict)  # message id -> (outcome, time)
    events: list[tuple[float, str]] = field(default_factory=list)  # (time, what a delivery ended with)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, key: str, outcome: str) -> None:
        with self.lock:
            self.done[key] = (outcome, time.monotonic())

    def event(self, what: str) -> None:
        with self.lock:
            self.events.append((time.monotonic(), what))

    def finished(self, jobs: int) -> bool:
        return len(self.done) + self.runner.stats.poisoned >= jobs


def _queue_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _fill_queue(connection: str, name: str, messages: list[dict[str, Any]]) -> None:
    queue = QueueClient.from_connection_string(connection, name)
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
    for message in messages:
        queue.send_message(json.dumps(message))  # raw JSON: host.json says messageEncoding none
    queue.close()


def measure_queue(stack: Stack, size: Size, with_naive: bool) -> dict[str, Any]:
    """Both implementations' queues at once, on separate deployments (the simulator's quota is per deployment)."""
    host = host_queue_settings()
    overrides: dict[str, Any] = {}
    if size.retry_delay is not None:
        overrides["retry_delay"] = size.retry_delay
    if size.max_poll_interval is not None:
        overrides["max_poll_interval"] = size.max_poll_interval
    with httpx.Client(timeout=30) as http:
        http.post(f"{stack.simulator.url}/_sim/config", json={"latency": 0, "quota_requests": size.quota, "quota_window_seconds": size.window}).raise_for_status()
        http.post(f"{stack.simulator.url}/_sim/reset").raise_for_status()

    tag = uuid.uuid4().hex[:6]
    service_run, runtime, job_ids = _service_queue_run(stack, size, tag, host, overrides)
    runs = [service_run] + ([_naive_queue_run(stack, size, host, overrides)] if with_naive else [])
    started, ended, deadline = _drive(runs, size, {"service": runtime.close})

    with httpx.Client(timeout=30) as http:
        stats = http.get(f"{stack.simulator.url}/_sim/stats").json()
        http.post(f"{stack.simulator.url}/_sim/config", json={"quota_requests": 0}).raise_for_status()

    results: dict[str, Any] = {"jobs": size.jobs, "quota": size.quota, "window_s": size.window, "throttled_total": stats.get("throttled"),
                               "runner": {k: host.get(k) for k in ("batchSize", "newBatchThreshold", "visibilityTimeout", "maxPollingInterval", "maxDequeueCount")} | overrides}
    for run in runs:
        end = ended.get(run.name, deadline)
        results[run.name] = _queue_result(run, size, started, end, ended.get(run.name), int(stats.get("deployments", {}).get(run.deployment, 0)))
    results["service"]["job_records"] = _job_record_summary(stack.azurite.connection_string, runtime.settings.jobs_container, job_ids)
    return results


def _service_queue_run(stack: Stack, size: Size, tag: str, host: dict[str, Any], overrides: dict[str, Any]) -> tuple[QueueRun, Runtime, list[str]]:
    """The service: the real handler, with the service's own settings and clients, on a queue of its own."""
    connection = stack.azurite.connection_string
    service_queue = _queue_name("bench-jobs")
    runtime = Runtime(Settings.from_env({**stack.env, "IMAGES_QUEUE": service_queue}))  # opened by the first message, in the runner's loop
    job_ids = [f"bench-{tag}-{i}" for i in range(size.jobs)]
    _fill_queue(connection, service_queue, [{"id": j, "deployment": SERVICE_DEPLOYMENT, **BODY} for j in job_ids])

    async def handler(msg: Any) -> Any:
        outcome = await runtime.handle_queue_message(msg)
        run.event(outcome.action)
        if outcome.action in ("succeeded", "failed") and outcome.job_id:
            run.record(outcome.job_id, outcome.action)
        return outcome

    run = QueueRun("service", QueueRunner(connection, service_queue, handler, host_queues=host, **overrides), SERVICE_DEPLOYMENT)
    return run, runtime, job_ids


def _naive_queue_run(stack: Stack, size: Size, host: dict[str, Any], overrides: dict[str, Any]) -> QueueRun:
    """The naive implementation's queue handler, run as the Functions worker runs a sync function."""
    connection = stack.azurite.connection_string
    naive_queue = _queue_name("bench-naive")
    generator = NaiveGenerator(stack.env)
    _fill_queue(connection, naive_queue, [{"deployment": NAIVE_DEPLOYMENT, **BODY} for _ in range(size.jobs)])

    async def handler(msg: Any) -> Any:
        # The Functions Python worker runs a sync function in its thread pool; so does this.
        try:
            result = await asyncio.to_thread(generator.handle_message, msg.get_body())
        except Exception:
            run.event("failed")
            raise
        run.event("succeeded")
        run.record(msg.id, "succeeded")
        return result

    run = QueueRun("naive", QueueRunner(connection, naive_queue, handler, host_queues=host, **overrides), NAIVE_DEPLOYMENT)
    return run


def _drive(runs: list[QueueRun], size: Size, closers: dict[str, Callable[[], Awaitable[None]]]) -> tuple[float, dict[str, float], float]:
    """Run every runner until each has finished its jobs or the time is up; (started, when each finished, deadline)."""
    started = time.monotonic()  # before the runners start, as the jobs are already waiting
    threads = [_start_runner(run.runner, closers.get(run.name)) for run in runs]
    deadline = started + size.queue_timeout
    ended: dict[str, float] = {}
    while time.monotonic() < deadline and len(ended) < len(runs):
        for run in runs:
            if run.name not in ended and run.finished(size.jobs):
                ended[run.name] = time.monotonic()
        time.sleep(0.1)
    for run in runs:
        run.runner.stop(timeout=30)
    for thread in threads:
        thread.join(40)
    return started, ended, deadline


def _queue_result(run: QueueRun, size: Size, started: float, end: float, finished: float | None, generations: int) -> dict[str, Any]:
    """One implementation's queue figures: outcomes, throughput against the quota's allowance, generations per job."""
    with run.lock:
        done = dict(run.done)
    completed = sum(1 for outcome, _ in done.values() if outcome == "succeeded")
    failed = sum(1 for outcome, _ in done.values() if outcome == "failed")
    poisoned = run.runner.stats.poisoned
    if done and finished is not None:
        end = max(max(t for _, t in done.values()), min(end, finished))
    elapsed = end - started
    allowance = size.quota + elapsed * size.quota / size.window
    return {
        "completed": completed,
        "failed": failed,
        "poisoned": poisoned,
        "unfinished": max(size.jobs - completed - failed - poisoned, 0),
        "elapsed_s": round(elapsed, 2),
        "jobs_per_s": round(completed / elapsed, 3) if elapsed > 0 else None,
        "quota_per_s": round(size.quota / size.window, 3),
        "throughput_vs_quota": round(completed / allowance, 3),
        "throughput_raw_vs_quota": round(completed / elapsed / (size.quota / size.window), 3) if elapsed > 0 else None,
        "generations": generations,
        "generations_per_job": round(generations / completed, 3) if completed else None,
        "runner_received": run.runner.stats.received,
        "runner_retried": run.runner.stats.retried,
        "timeline": _timeline(run.events, started, size.window),
    }


def _timeline(events: list[tuple[float, str]], started: float, window: float) -> dict[str, Any]:
    """Deliveries by outcome per quota window, and when in each window the successes came (seconds from the window's start)."""
    windows: dict[int, dict[str, Any]] = {}
    for moment, what in events:
        elapsed = moment - started
        slot = windows.setdefault(int(elapsed // window), {"counts": {}, "first_success_s": None, "last_success_s": None})
        slot["counts"][what] = slot["counts"].get(what, 0) + 1
        if what == "succeeded":
            offset = round(elapsed % window, 2)
            slot["first_success_s"] = offset if slot["first_success_s"] is None else min(slot["first_success_s"], offset)
            slot["last_success_s"] = offset if slot["last_success_s"] is None else max(slot["last_success_s"], offset)
    return {str(k): windows[k] for k in sorted(windows)}


def _start_runner(runner: QueueRunner, close: Callable[[], Awaitable[None]] | None) -> threading.Thread:
    """The runner in its own thread and event loop (as the host's worker has); ``close`` runs in that loop at the end."""

    async def main() -> None:
        try:
            await runner.run()
        finally:
            if close is not None:
                await close()

    thread = threading.Thread(target=lambda: asyncio.run(main()), name=f"runner-{runner.queue_name}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while getattr(runner, "_loop", None) is None and time.monotonic() < deadline:  # stop() needs the loop run() records
        time.sleep(0.01)
    return thread


def _job_record_summary(connection: str, container: str, job_ids: list[str]) -> dict[str, Any]:
    """What the job records say: statuses, and deliveries that took the lease (attempts)."""
    client = SyncBlobServiceClient.from_connection_string(connection).get_container_client(container)
    statuses: dict[str, int] = {}
    attempts: list[int] = []
    throttled_events = 0
    for job_id in job_ids:
        try:
            job = json.loads(client.download_blob(f"{job_id}.json").readall())
        except Exception:  # a missing record is what this counts
            statuses["missing"] = statuses.get("missing", 0) + 1
            continue
        statuses[job["status"]] = statuses.get(job["status"], 0) + 1
        attempts.append(int(job.get("attempts", 0)))
        throttled_events += sum(1 for e in job.get("events", []) if e.get("event") == "throttled")
    client.close()
    return {"statuses": statuses, "attempts_max": max(attempts) if attempts else None, "throttled_events": throttled_events}


# --------------------------------------------------------------------------- 4: cold start


def _import_seconds(modules: list[str], env: dict[str, str]) -> float:
    code = (
        "import time, sys\n"
        "t = time.perf_counter()\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"importing {modules} failed: {out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def measure_cold_start(runs: int) -> dict[str, Any]:
    """Fresh interpreters, alternating; bytecode caches warmed by one discarded run of each first."""
    env = child_env(
        {
            "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9",
            "AZURE_OPENAI_API_KEY": "cold-start-key",
            "AZURE_OPENAI_DEPLOYMENT": SERVICE_DEPLOYMENT,
            "IMAGES_ALLOW_HTTP_UPSTREAM": "true",
            "AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;",
        }
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # dev.py sets it; Azure's deployed packages carry their .pyc
    deps, app = list(DEPENDENCIES), ["function_app"]
    _import_seconds(deps, env)
    _import_seconds(app, env)
    dep_times, app_times = [], []
    for _ in range(runs):
        dep_times.append(_import_seconds(deps, env))
        app_times.append(_import_seconds(app, env))
    return {
        "runs": runs,
        "dependencies": deps,
        "deps_ms_median": _ms(_median(dep_times)),
        "function_app_ms_median": _ms(_median(app_times)),
        "cold_start_ratio": round(_median(app_times) / _median(dep_times), 3),
    }


# --------------------------------------------------------------------------- the run


async def run_http(stack: Stack, size: Size, with_naive: bool, items: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=size.concurrency * 2 + 8, max_keepalive_connections=size.concurrency * 2 + 8)
    async with (
        httpx.AsyncClient(timeout=300, limits=limits) as client,
        httpx.AsyncClient(timeout=300, limits=limits) as upstream,
        BlobServiceClient.from_connection_string(stack.azurite.connection_string, **storage_client_options()) as blobs,  # the floor's: as the service's
    ):
        await sim_config(client, stack, latency=0, quota_requests=0)
        calls = Calls(stack, client, upstream, blobs)
        await calls.prepare()
        image_bytes = (await calls.floor())[1]
        if "overhead" in items:
            print("· 1. overhead ...", flush=True)
            out["overhead"] = await measure_overhead(calls, size, with_naive)
            image_bytes = out["overhead"]["image_bytes_mean"]
        if "concurrency" in items:
            print("· 2. concurrency ...", flush=True)
            out["concurrency"] = {"image_bytes": image_bytes}
            out["concurrency"]["service"] = await measure_concurrency(client, stack, stack.service, calls.service, size, image_bytes)
            if stack.service_cap is not None:
                cap_url = calls.service_url.replace(stack.service.url, stack.service_cap.url)
                await calls.service(cap_url)  # warm: its pools and first allocations, as the default one had in 1.
                out["concurrency"]["service_cap"] = await measure_concurrency(
                    client, stack, stack.service_cap, lambda: calls.service(cap_url), size, image_bytes
                ) | {"upstream_cap": size.concurrency}
            if with_naive and stack.naive is not None:
                out["concurrency"]["naive"] = await measure_concurrency(client, stack, stack.naive, calls.naive, size, image_bytes)
            await sim_config(client, stack, latency=0)
        if "stream" in items:
            print("· 9. streams ...", flush=True)
            stream_size = STREAM_SMOKE if size.name == "smoke" else replace(STREAM_FULL, concurrency=size.concurrency)
            out["stream"] = await measure_stream(client, stack.service, stack.simulator.url, stack.sim_key, stream_size)
            await sim_config(client, stack, latency=0)
    return out


def summarize(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every target metric for both implementations (None where not measured or not applicable)."""
    overhead = results.get("overhead", {})
    concurrency = results.get("concurrency", {})
    queue = results.get("queue", {})
    cold = results.get("cold_start", {})
    pool = results.get("pool", {})
    pq, ps, po, p1 = pool.get("queue", {}), pool.get("sync", {}), pool.get("overhead", {}), pool.get("queue_one_instance", {})
    streamed = results.get("stream", {})
    pooled = {
        "stream_first_partial_overhead_ms": streamed.get("first_partial_overhead_ms_median"),
        "stream_memory_per_stream_x_image": streamed.get("memory_per_stream_x_image"),
        "stream_errors": streamed.get("errors"),
        "pool_queue_vs_allowance": pq.get("completed_over_allowance"),
        "pool_queue_429_per_job": pq.get("upstream_429_per_job"),
        "pool_queue_failures": pq.get("failed"),
        "pool_queue_generations_per_job": pq.get("generations_per_job"),
        "pool_one_queue_vs_allowance": p1.get("completed_over_allowance"),
        "pool_one_queue_429": sum(b["throttled"] for b in p1["per_backend"]) if "per_backend" in p1 else None,
        "pool_one_queue_failures": p1.get("failed"),
        "pool_sync_errors": ps.get("errors"),
        "pool_sync_makespan_vs_ideal": ps.get("makespan_over_ideal"),
        "pool_overhead_deviation": round(abs(po["pool_over_plain_median"] - 1), 4) if "pool_over_plain_median" in po else None,
        "pool_overhead_cpu_deviation": round(abs(po["pool_over_plain_cpu_median"] - 1), 4) if "pool_over_plain_cpu_median" in po else None,
        "upload_added_ms": results.get("upload", {}).get("added_ms_worst_kind"),
        "views_gallery_ms": results.get("views", {}).get("gallery", {}).get("ms_median"),
        "views_usage_ms": results.get("views", {}).get("usage", {}).get("ms_median"),
    }

    def pick(impl: str) -> dict[str, Any]:
        conc = concurrency.get(impl, {})
        at_cap = concurrency.get(f"{impl}_cap", {})
        q = queue.get(impl, {})
        return {
            "overhead_ratio": overhead.get(f"{impl}_ratio_median"),
            "makespan_diff_s": conc.get("makespan_diff_s"),
            "memory_per_request_x_image": conc.get("memory_per_request_x_image"),
            "makespan_diff_s_at_cap": at_cap.get("makespan_diff_s"),
            "memory_per_request_x_image_at_cap": at_cap.get("memory_per_request_x_image"),
            "queue_throughput_vs_quota": q.get("throughput_vs_quota"),
            "queue_failures": q.get("failed"),
            "queue_poisoned": q.get("poisoned"),
            "queue_generations_per_job": q.get("generations_per_job"),
            "cold_start_ratio": cold.get("cold_start_ratio") if impl == "service" else None,
        } | {key: value if impl == "service" else None for key, value in pooled.items()}

    service, naive = pick("service"), pick("naive")
    return {
        t.key: {"label": t.label, "target": t.text, "service": service[t.key], "naive": naive[t.key], "met": t.met(service[t.key])}
        for t in TARGETS
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def table(summary: dict[str, dict[str, Any]], results: dict[str, Any]) -> str:
    """The results as a Markdown table (also readable in a terminal)."""
    rows = ["| metric | target | service | naive | met |", "|---|---|---|---|---|"]
    for key in METRICS:
        m = summary[key]
        met = {True: "yes", False: "**no**", None: "-"}[m["met"]]
        rows.append(f"| {m['label']} | {m['target']} | {_fmt(m['service'])} | {_fmt(m['naive'])} | {met} |")
    details = []
    o = results.get("overhead")
    if o:
        naive = f", naive {o['naive_ms_median']} ms" if "naive_ms_median" in o else ""
        details.append(
            f"1. median of {o['requests']} sequential requests: floor {o['floor_ms_median']} ms, service {o['service_ms_median']} ms{naive}; "
            f"image {o['image_bytes_mean'] / 1e6:.2f} MB. The caller's hop to the API ({o['api_hop_ms_median']} ms) is part of the "
            f"design; against floor + hop, the service is {o['service_vs_floor_plus_hop']}. The record ({o['record_put_ms_median']} ms "
            f"for a small blob alone) is written while the image uploads"
        )
    c = results.get("concurrency")
    if c:
        for impl in ("service", "service_cap", "naive"):
            if impl in c:
                r = c[impl]
                slow, fast = r["runs"][f"latency_{r['latency_s']:g}s"], r["runs"]["latency_0s"]
                name = f"service with IMAGES_MAX_CONCURRENT_UPSTREAM={r['upstream_cap']}" if impl == "service_cap" else impl
                details.append(
                    f"2. {name}: {r['concurrency']} at once, makespan {slow['makespan_s']} s at {r['latency_s']:g} s latency, "
                    f"{fast['makespan_s']} s at 0; peak {r['peak_above_idle_mib']} MiB above idle {r['idle_rss_mib']} MiB; errors {r['errors']}"
                )
    q = results.get("queue")
    if q:
        for impl in ("service", "naive"):
            if impl in q:
                r = q[impl]
                details.append(
                    f"3. {impl}: {r['completed']}/{q['jobs']} completed in {r['elapsed_s']} s ({r['jobs_per_s']} jobs/s; quota {r['quota_per_s']}/s), "
                    f"failed {r['failed']}, poisoned {r['poisoned']}, unfinished {r['unfinished']}, generations {r['generations']}"
                )
    cs = results.get("cold_start")
    if cs:
        details.append(f"4. import function_app {cs['function_app_ms_median']} ms vs dependencies {cs['deps_ms_median']} ms (median of {cs['runs']})")
    details.extend(_pool_details(results.get("pool")))
    u = results.get("upload")
    if u:
        kinds = "; ".join(f"{kind} {u[kind]['added_ms']} ms" for kind in ("png", "jpeg_fill", "png_chunks"))
        details.append(f"7. upload of {u['upload_bytes'] / 2**20:.0f} MiB, {u['rounds']} rounds each; /healthz at rest {u['rest_ms_median']} ms; slowed by: {kinds}")
    details.extend(_views_details(results.get("views")))
    return "\n".join(rows) + ("\n\n" + "\n".join(f"- {d}" for d in details) if details else "")


def _pool_details(pool: dict[str, Any] | None) -> list[str]:
    """The deployment-pool figures behind the 6. rows."""
    if not pool:
        return []
    q, sy, o, one = pool["queue"], pool["sync"], pool["overhead"], pool["queue_one_instance"]
    return [
        f"6. pool queue: {q['jobs']} jobs, two queue runners, quotas {q['quotas']} per {q['window_s']:g} s: {q['outcomes']} in {q['elapsed_s']} s; "
        f"per backend {q['per_backend']}",
        f"6. pool queue, one instance: {one['jobs']} jobs, one queue runner, quotas {one['quotas']} per {one['window_s']:g} s: {one['outcomes']} "
        f"in {one['elapsed_s']} s; per backend {one['per_backend']}",
        f"6. pool sync: {sy['requests']} at once, makespan {sy['makespan_s']} s against {sy['ideal_s']} s (one window, then a round as long as "
        f"the first, {sy['first_round_s']} s); against the window plus the model's latency alone {sy['makespan_over_windows_plus_latency']}; "
        f"upstream 429s {sy['upstream_429']}",
        f"6. pool overhead: median latency of {o['requests']} rounds, one-backend pool {o['pool_ms_median']} ms, two runtimes without a "
        f"pool {o['plain_ms_median']} ms: {o['pool_over_plain_median']}; one runtime without a pool / the other, the machine's noise: "
        f"{o['control_plain_over_plain_median']}. CPU of this process per request (medians): pool / no pool "
        f"{o['pool_over_plain_cpu_median']}, control {o['control_plain_over_plain_cpu_median']}",
    ]


def _views_details(views: dict[str, Any] | None) -> list[str]:
    """The figures behind the 8. rows: the distribution, every view measured, and today's scan."""
    if not views:
        return []
    v = views

    def spread(key: str) -> str:
        return f"{v[key]['ms_median']} ms ({v[key]['ms_min']}-{v[key]['ms_max']})"

    return [
        f"8. views: {v['records']:,} job records over {v['days']} days and {v['callers']} callers (about {v['per_caller_day']:,} per caller and day), "
        f"seeded in {v['seed_s']} s; medians of {v['gallery']['rounds']} (min-max): a caller's gallery page {spread('gallery')}, an operator's "
        f"page of every caller {spread('gallery_operator')}; /usage from its checkpoint {spread('usage')}, its first call of the day (lists "
        f"the day, {v['usage_first_call']['requests']:,} requests) {v['usage_first_call']['ms_median']} ms, every caller {spread('usage_all_callers')}; "
        f"today's scan for one page ({v['scan_candidates']:,} job names listed) {spread('scan_gallery_page')}"
    ]


def write_markdown(text: str, data: dict[str, Any]) -> None:
    m = data["machine"]
    block = (
        f"{MD_START}\n"
        f"Measured {data['finished_at']} with `python3 dev.py bench{' --smoke' if data['size']['name'] == 'smoke' else ''}` "
        f"({data['elapsed_s']:.0f} s) on {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_total_gib']} GiB RAM, Python {m['python']}.\n\n"
        f"{text}\n{MD_END}"
    )
    current = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else f"# Benchmarks\n\n{MD_START}\n{MD_END}\n"
    if MD_START in current and MD_END in current:
        current = re.sub(re.escape(MD_START) + r".*?" + re.escape(MD_END), lambda _: block, current, flags=re.S)
    else:
        current += f"\n{block}\n"
    BENCHMARKS_MD.write_text(current)


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, Size, set[str]]:
    """The command line: the arguments, the sizes they choose, and which parts to run."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI: checks that everything runs (seconds, not minutes)")
    parser.add_argument("--only", default="overhead,concurrency,queue,coldstart,pool,upload,views,stream", help="comma list of overhead,concurrency,queue,coldstart,pool,upload,views,stream")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("--requests", type=int, help="overhead: sequential requests")
    parser.add_argument("--concurrency", type=int, help="concurrency: simultaneous requests")
    parser.add_argument("--jobs", type=int, help="queue: jobs")
    parser.add_argument("--cold-runs", type=int, help="cold start: runs of each import")
    parser.add_argument("--max-poll-interval", type=float, help="queue: the runner's longest poll interval (default: host.json maxPollingInterval)")
    parser.add_argument("--json", default=str(RESULTS), help=f"where to write the results (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--write-md", action="store_true", help="put the table into BENCHMARKS.md")
    args = parser.parse_args(argv)
    size = SMOKE if args.smoke else FULL
    for name in ("requests", "concurrency", "jobs", "cold_runs", "max_poll_interval"):
        if getattr(args, name) is not None:
            size = replace(size, **{name: getattr(args, name)})
    items = {i.strip() for i in args.only.split(",") if i.strip()}
    unknown = items - {"overhead", "concurrency", "queue", "coldstart", "pool", "upload", "views", "stream"}
    if unknown:
        parser.error(f"unknown --only items: {', '.join(sorted(unknown))}")
    return args, size, items


def main(argv: list[str] | None = None) -> int:
    args, size, items = _parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.ERROR)
    logging.getLogger("local.queue_runner").setLevel(logging.ERROR)  # the naive run's poison moves are counted, not logged
    with_naive = not args.no_naive

    started = time.monotonic()
    results: dict[str, Any] = {}
    if "coldstart" in items:
        print("· 4. cold start ...", flush=True)  # first, while nothing else runs
        results["cold_start"] = measure_cold_start(size.cold_runs)
    if items & {"overhead", "concurrency", "queue", "pool", "upload", "views", "stream"}:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            print("· starting Azurite, the simulator and the APIs ...", flush=True)
            stack = start_stack(Path(tmp), with_naive, size.concurrency if "concurrency" in items else None)
            try:
                results |= asyncio.run(run_http(stack, size, with_naive, items))
                if "queue" in items:
                    print("· 3. queue under quota ...", flush=True)
                    results["queue"] = measure_queue(stack, size, with_naive)
                if "pool" in items:
                    print("· 6. deployment pools (bench/pool.py) ...", flush=True)
                    results["pool"] = measure_pool(stack.azurite, POOL_SMOKE if args.smoke else POOL_FULL)
                    print(json.dumps(results["pool"]), flush=True)
                if "upload" in items:
                    print("· 7. the event loop under a large upload (bench/upload.py) ...", flush=True)
                    results["upload"] = measure_upload(stack.azurite, UPLOAD_SMOKE if args.smoke else UPLOAD_FULL)
                if "views" in items:
                    print("· 8. views at many job records (bench/views.py) ...", flush=True)
                    results["views"] = measure_views(stack.azurite, VIEWS_SMOKE if args.smoke else VIEWS_FULL)
            finally:
                stack.stop()
    summary = summarize(results)
    data = {
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": machine(),
        "size": asdict(size),
        "metrics": summary,
        "results": results,
    }
    text = table(summary, results)
    print()
    print(text)
    print(f"\n({data['elapsed_s']:.0f} s)")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out}")
    if args.write_md:
        write_markdown(text, data)
        print(f"wrote {BENCHMARKS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
