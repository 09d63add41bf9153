"""8. Streamed generations (``"stream": true``): what the service adds to a stream of partial images.

- Time to the first partial image: rounds of one streamed request straight to the simulator and one
  through the service (the API in its own process, served as the Functions worker serves it), order
  alternating, each timed from the request to the end of the first partial image's event; the median
  of the per-round differences (service - direct).
- Memory: ``concurrency`` streams through the service at once, events spread over the simulated
  latency: the API process's peak RSS above idle, per stream, in units of the final image's size.
- Errors: those streams, each of which must end with a completed event carrying the archived url.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.procs import Child, memory, reset_peak

PARTIAL_IMAGES = 2
DEPLOYMENT = "gpt-image-1-mini"
API_VERSION = "2025-04-01-preview"
BODY = {"prompt": "A lighthouse on a cliff at dawn, streamed", "size": "1024x1024", "stream": True, "partial_images": PARTIAL_IMAGES}


@dataclass(frozen=True)
class StreamSize:
    rounds: int = 30
    concurrency: int = 32
    latency: float = 0.6  # the simulator's: the first partial image comes a third of the way in
    burst_latency: float = 2.0  # the concurrent streams' latency: every stream in flight at once


FULL = StreamSize()
SMOKE = StreamSize(rounds=3, concurrency=4, latency=0.3, burst_latency=0.6)


@dataclass
class Streamed:
    first_partial_s: float
    partials: int
    completed: dict[str, Any] | None
    image_bytes: int
    error: str | None


async def stream_once(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> Streamed:
    """One streamed request, read event by event: when the first partial image ended, and how the stream ended."""
    started = time.perf_counter()
    first, partials, completed, image_bytes, error, kind = float("nan"), 0, None, 0, None, ""
    async with client.stream("POST", url, json=BODY, headers=headers) as response:
        if response.status_code != 200:
            return Streamed(first, 0, None, 0, f"{response.status_code}: {(await response.aread())[:200]!r}")
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind.endswith(".partial_image"):
                partials += 1
                if partials == 1:
                    first = time.perf_counter() - started
            elif line.startswith("data: ") and kind.endswith(".completed"):
                data = json.loads(line[6:])
                image_bytes = len(data.pop("b64_json", "")) * 3 // 4
                completed = data
            elif line.startswith("data: ") and kind == "error":
                error = line[6:300]
    if completed is None and error is None:
        error = "the stream ended without a completed event"
    return Streamed(first, partials, completed, image_bytes, error)


async def measure_stream(http: httpx.AsyncClient, service: Child, sim_url: str, sim_key: str, size: StreamSize) -> dict[str, Any]:
    """The three figures of the module docstring, with their details."""
    direct_url = f"{sim_url}/openai/deployments/{DEPLOYMENT}/images/generations?api-version={API_VERSION}"
    service_url = f"{service.url}/openai/deployments/{DEPLOYMENT}/images/generations?api-version={API_VERSION}"
    direct_headers = {"api-key": sim_key}
    (await http.post(f"{sim_url}/_sim/config", json={"latency": size.latency})).raise_for_status()
    await stream_once(http, service_url, {})  # warm: the service's first stream opens its clients
    direct, through, diffs = [], [], []
    for index in range(size.rounds):
        pair = [(direct_url, direct_headers), (service_url, {})]
        if index % 2:
            pair.reverse()
        timed = {url: await stream_once(http, url, headers) for url, headers in pair}
        d, s = timed[direct_url].first_partial_s, timed[service_url].first_partial_s
        direct.append(d)
        through.append(s)
        diffs.append(s - d)
    burst = await _burst(http, service, service_url, sim_url, size)
    ordered = sorted(diffs)
    return {
        "rounds": size.rounds,
        "latency_s": size.latency,
        "partial_images": PARTIAL_IMAGES,
        "first_partial_direct_ms_median": round(_median(direct) * 1000, 1),
        "first_partial_service_ms_median": round(_median(through) * 1000, 1),
        "first_partial_overhead_ms_median": round(_median(diffs) * 1000, 1),
        "first_partial_overhead_ms_p10_p90": [round(ordered[len(ordered) // 10] * 1000, 1), round(ordered[(len(ordered) * 9) // 10] * 1000, 1)],
        **burst,
    }


async def _burst(http: httpx.AsyncClient, service: Child, url: str, sim_url: str, size: StreamSize) -> dict[str, Any]:
    (await http.post(f"{sim_url}/_sim/config", json={"latency": size.burst_latency})).raise_for_status()
    await asyncio.sleep(0.3)
    idle = memory(service.pid)["VmRSS"]
    if not reset_peak(service.pid):
        raise RuntimeError("cannot reset the API process's peak RSS (/proc/<pid>/clear_refs)")
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(stream_once(http, url, {}) for _ in range(size.concurrency)), return_exceptions=True)
    makespan = time.perf_counter() - started
    peak = memory(service.pid)["VmHWM"]
    errors = [repr(o)[:200] if isinstance(o, BaseException) else o.error for o in outcomes if isinstance(o, BaseException) or o.error]
    done = [o for o in outcomes if isinstance(o, Streamed) and o.completed is not None]
    missing_url = sum(1 for o in done if not (o.completed or {}).get("url"))
    image = max((o.image_bytes for o in done), default=0)
    above = max(peak - idle, 0)
    return {
        "concurrency": size.concurrency,
        "burst_latency_s": size.burst_latency,
        "burst_makespan_s": round(makespan, 3),
        "errors": len(errors) + missing_url,
        "first_error": errors[0] if errors else None,
        "image_bytes": image,
        "idle_rss_mib": round(idle / 2**20, 1),
        "peak_above_idle_mib": round(above / 2**20, 1),
        "memory_per_stream_x_image": round(above / size.concurrency / image, 2) if image else None,
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
