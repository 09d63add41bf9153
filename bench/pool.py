"""Deployment pools under load: ``python -m bench.pool [--smoke]`` (also ``python -m bench.run --only pool``).

Three simulators are three backends of one pool (each in a thread of this process, its own port
and quota); Azurite holds the archive, the queue and the shared throttle state.

1. queue     J jobs, two queue runners (two instances: a Runtime each, one storage), backend quotas
             Q1, Q2, Q3 per W s: completed / the summed quota's allowance in the time taken
             (target >= 0.9), upstream 429s per completed job (<= 0.5), failed jobs (0),
             generations per job (exactly 1). The same from ONE instance (one runner: at most 3 jobs
             at once, as host.json allows), 40 jobs against two backends at 5 per 10 s each
             (target >= 0.9, no 429, none failed): what one instance makes of a pool.
2. sync      N simultaneous requests to the app in process: errors (0) and the makespan against
             what the summed quota allows (within 10%): one window per later round, plus what
             the first round (all sent at once, nothing throttled) took.
3. overhead  sequential requests (latency 0): a one-backend pool against the same deployment
             without a pool; median of the interleaved ratios (within 2%), beside a second
             runtime without a pool as the control (the machine's noise floor).

The machine is shared and noisy: figures vary between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from local.azurite import Azurite, start_azurite
from local.queue_runner import QueueRunner
from local.sim_pool import POOL_NAME, BackendSpec, pool_setting, serve_backends
from shared.api import create_app
from shared.host import host_queue_settings
from shared.runtime import Runtime
from shared.settings import Settings

KEY = "bench-pool-key-0123456789"
BODY = {"prompt": "a lighthouse in fog", "size": "1024x1024", "quality": "low"}
API = "?api-version=2025-04-01-preview"


@dataclass(frozen=True)
class PoolSize:
    jobs: int = 150
    quotas: tuple[int, ...] = (10, 5, 10)
    window: float = 10.0
    latency: float = 0.5
    sync_requests: int = 48
    overhead_requests: int = 200
    timeout: float = 240.0
    one_instance_jobs: int = 40
    one_instance_quotas: tuple[int, ...] = (5, 5)


FULL = PoolSize()
SMOKE = PoolSize(
    jobs=8, quotas=(2, 1, 2), window=2.0, latency=0.1, sync_requests=8, overhead_requests=3, timeout=60.0, one_instance_jobs=6, one_instance_quotas=(1, 1)
)


def _env(azurite: Azurite, url: str, **extra: str) -> dict[str, str]:
    return {
        "AZURE_OPENAI_ENDPOINT": url, "AZURE_OPENAI_API_KEY": KEY, "AZURE_OPENAI_DEPLOYMENT": POOL_NAME,
        "AzureWebJobsStorage": azurite.connection_string, "IMAGES_ALLOW_HTTP_UPSTREAM": "true",
        "IMAGES_JOBS_CONTAINER": f"bench-pool-{uuid.uuid4().hex[:8]}", "IMAGES_QUEUE": f"bench-pool-{uuid.uuid4().hex[:8]}", **extra,
    }


def _stats(urls: list[str], reset: bool = False) -> list[dict[str, Any]]:
    with httpx.Client(timeout=30) as http:
        if reset:
            for url in urls:
                http.post(f"{url}/_sim/reset").raise_for_status()
        return [http.get(f"{url}/_sim/stats").json() for url in urls]


def measure_queue(azurite: Azurite, size: PoolSize, *, instances: int = 2, jobs: int | None = None, quotas: tuple[int, ...] | None = None) -> dict[str, Any]:
    """``instances`` runners (a Runtime each) drain ``jobs`` jobs through a pool of backends with ``quotas`` per window."""
    jobs, quotas = jobs or size.jobs, quotas or size.quotas
    specs = [BackendSpec(q, size.window, size.latency) for q in quotas]
    servers = serve_backends(specs, KEY, prewarm=False)
    urls = [s.url for s in servers]
    try:
        settings = Settings.from_env(_env(azurite, urls[0], IMAGES_BACKENDS=pool_setting(servers, specs)))
        queue = QueueClient.from_connection_string(azurite.connection_string, settings.queue_name)
        with contextlib.suppress(ResourceExistsError):
            queue.create_queue()
        tag = uuid.uuid4().hex[:6]  # the archive is shared between runs: a job id names its images there
        for i in range(jobs):
            queue.send_message(json.dumps({"id": f"pool-{tag}-{i}", "deployment": POOL_NAME, **BODY}))
        queue.close()
        outcomes, started, done = _drain(azurite, settings, size, instances, jobs)
        elapsed = (done or time.monotonic()) - started
    finally:
        stats = _stats(urls)
        for server in servers:
            server.stop()
    completed = outcomes.get("succeeded", 0)
    allowance = sum(q + elapsed * q / size.window for q in quotas)
    generations = sum(s["generations"] for s in stats)
    throttled = sum(s["throttled"] for s in stats)
    return {
        "jobs": jobs, "instances": instances, "quotas": list(quotas), "window_s": size.window, "elapsed_s": round(elapsed, 1), "outcomes": dict(outcomes),
        "completed_over_allowance": round(completed / allowance, 3), "upstream_429_per_job": round(throttled / max(1, completed), 3),
        "failed": outcomes.get("failed", 0), "generations_per_job": round(generations / max(1, completed), 3),
        "per_backend": [{"generations": s["generations"], "throttled": s["throttled"]} for s in stats],
    }


def _drain(azurite: Azurite, settings: Settings, size: PoolSize, instances: int, jobs: int) -> tuple[dict[str, int], float, float | None]:
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    finished = threading.Event()
    runners: list[QueueRunner] = []
    for _ in range(instances):
        runtime = Runtime(settings)

        async def handler(msg: Any, runtime: Runtime = runtime) -> Any:
            outcome = await runtime.handle_queue_message(msg)
            with lock:
                outcomes[outcome.action] = outcomes.get(outcome.action, 0) + 1
                if outcomes.get("succeeded", 0) + outcomes.get("failed", 0) >= jobs:
                    finished.set()
            return outcome

        # The host's own settings (host.json: batch, polling, visibility), as one instance in Azure runs them.
        runners.append(QueueRunner(azurite.connection_string, settings.queue_name, handler, host_queues=host_queue_settings(), on_stop=runtime.close))
    started = time.monotonic()
    threads = [r.start_in_thread() for r in runners]
    done = time.monotonic() if finished.wait(size.timeout) else None
    for thread in threads:
        thread.stop()
    return outcomes, started, done


async def measure_sync(azurite: Azurite, size: PoolSize) -> dict[str, Any]:
    """N requests at once through the app in process; the makespan against the summed quota's schedule."""
    specs = [BackendSpec(q, size.window, size.latency) for q in size.quotas]
    servers = serve_backends(specs, KEY, prewarm=False)
    try:
        settings = Settings.from_env(_env(azurite, servers[0].url, IMAGES_BACKENDS=pool_setting(servers, specs), IMAGES_RETRY_BUDGET_SECONDS="120"))
        async with Runtime(settings) as runtime, httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://api", timeout=300) as client:
            url = f"/openai/deployments/{POOL_NAME}/images/generations{API}"
            done: list[float] = []

            async def post() -> httpx.Response:
                answer = await client.post(url, json=BODY)
                done.append(time.monotonic())
                return answer

            started = time.monotonic()
            answers = await asyncio.gather(*(post() for _ in range(size.sync_requests)))
            makespan = time.monotonic() - started
        stats = _stats([s.url for s in servers])
    finally:
        for server in servers:
            server.stop()
    per_window = sum(size.quotas)
    # The quota lets each later round start one window after the one before; a round itself takes
    # what the first round (which nothing throttled) took on this machine: the model's latency and
    # the service's own work for that many images at once (decoding, archiving: CPU on 2 cores).
    first_round = sorted(done)[min(per_window, len(done)) - 1] - started
    ideal = (math.ceil(size.sync_requests / per_window) - 1) * size.window + first_round
    errors = [a.status_code for a in answers if a.status_code != 200]
    return {
        "requests": size.sync_requests, "errors": len(errors), "error_statuses": sorted(set(errors)), "makespan_s": round(makespan, 2),
        "first_round_s": round(first_round, 2), "ideal_s": round(ideal, 2), "makespan_over_ideal": round(makespan / ideal, 3),
        "makespan_over_windows_plus_latency": round(makespan / ((math.ceil(size.sync_requests / per_window) - 1) * size.window + size.latency), 3),
        "upstream_429": sum(s["throttled"] for s in stats),
    }


async def measure_overhead(azurite: Azurite, size: PoolSize) -> dict[str, Any]:
    """A one-backend pool against no pool, same simulator and storage, requests interleaved.

    Two runtimes without a pool run in the same rounds: the pool's median latency is measured against
    the median of both, and the ratio of one's median to the other's is the noise floor of this
    machine, which a difference between pool and no pool must exceed to mean anything. Each round
    sends one request through each runtime, in an order that rotates."""
    servers = serve_backends([BackendSpec()], KEY, prewarm=False)
    try:
        env = _env(azurite, servers[0].url)
        plain = Settings.from_env(env)
        pooled = Settings.from_env({**env, "IMAGES_BACKENDS": pool_setting(servers, [BackendSpec()])})
        url = f"/openai/deployments/{POOL_NAME}/images/generations{API}"
        async with Runtime(plain) as a, Runtime(plain) as control, Runtime(pooled) as b:
            clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(r)), base_url="http://api", timeout=60) for r in (a, control, b)]
            latencies: list[list[float]] = [[], [], []]
            cpu: list[list[float]] = [[], [], []]  # this process's CPU per request (the app, and the simulator's thread)
            for i in range(size.overhead_requests + 3):
                for k in range(3):
                    which = (i + k) % 3
                    t, c = time.perf_counter(), time.process_time()
                    (await clients[which].post(url, json=BODY)).raise_for_status()
                    if i >= 3:  # warmup
                        latencies[which].append(time.perf_counter() - t)
                        cpu[which].append(time.process_time() - c)
            for client in clients:
                await client.aclose()
    finally:
        servers[0].stop()
    plain_ms = statistics.median(latencies[0] + latencies[1])
    return {
        "requests": size.overhead_requests,
        "plain_ms_median": round(plain_ms * 1000, 2),
        "pool_ms_median": round(statistics.median(latencies[2]) * 1000, 2),
        "pool_over_plain_median": round(statistics.median(latencies[2]) / plain_ms, 4),
        "control_plain_over_plain_median": round(statistics.median(latencies[1]) / statistics.median(latencies[0]), 4),
        "pool_over_plain_cpu_median": round(statistics.median(cpu[2]) / statistics.median(cpu[0] + cpu[1]), 4),
        "control_plain_over_plain_cpu_median": round(statistics.median(cpu[1]) / statistics.median(cpu[0]), 4),
    }


def measure_pool(azurite: Azurite, size: PoolSize = FULL) -> dict[str, Any]:
    """All three parts against one Azurite."""
    results: dict[str, Any] = {"overhead": asyncio.run(measure_overhead(azurite, size)), "sync": asyncio.run(measure_sync(azurite, size))}
    results["queue"] = measure_queue(azurite, size)
    results["queue_one_instance"] = measure_queue(azurite, size, instances=1, jobs=size.one_instance_jobs, quotas=size.one_instance_quotas)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pool", description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--queue-only", choices=["one", "two", "both"], help="only the queue part: one instance, two, or both")
    args = parser.parse_args(argv)
    size = SMOKE if args.smoke else FULL
    azurite = start_azurite()
    try:
        if args.queue_only:
            results: dict[str, Any] = {}
            if args.queue_only in ("two", "both"):
                results["queue"] = measure_queue(azurite, size)
            if args.queue_only in ("one", "both"):
                results["queue_one_instance"] = measure_queue(azurite, size, instances=1, jobs=size.one_instance_jobs, quotas=size.one_instance_quotas)
            print(json.dumps(results, indent=2))
        else:
            print(json.dumps(measure_pool(azurite, size), indent=2))
    finally:
        azurite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
