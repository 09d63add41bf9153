"""The event loop under a large upload: ``python -m bench.upload [--smoke]`` (also ``python -m bench.run --only upload``).

The API runs in its own process (bench.serve_api), against Azurite and the images simulator
(its own process too). A thread of this process asks ``GET /healthz`` back to back; meanwhile
the main thread sends one edit with a large image (multipart, as the openai SDK sends it),
and the probes that overlap the upload are compared with the probes at rest. Three uploads:

- ``png``: a valid PNG of ``upload_bytes`` (noise, stored uncompressed): read, checked,
  stored, edited upstream and archived (200);
- ``jpeg_fill``: a JPEG whose header is ``upload_bytes`` of fill bytes (0xFF), the upload
  that froze the instance for 5 s when its header walk ran on the event loop (400);
- ``png_chunks``: a PNG whose IHDR is followed by millions of empty chunks (400).

Target: for each, the slowest probe during the upload is at most 50 ms slower than the median
probe at rest (median over the rounds). The machine's other load shows in both.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.procs import Child, child_env, start_child
from local.azurite import Azurite, start_azurite
from local.servers import free_port

DEPLOYMENT = "gpt-image-1"
EDIT_URL = f"/openai/deployments/{DEPLOYMENT}/images/edits?api-version=2025-04-01-preview"


@dataclass(frozen=True)
class UploadSize:
    upload_bytes: int = 40 * 1024 * 1024
    rounds: int = 5
    rest_probes: int = 200


FULL = UploadSize()
SMOKE = UploadSize(upload_bytes=2 * 1024 * 1024, rounds=1, rest_probes=20)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def noise_png(size: int) -> bytes:
    """A valid RGB PNG of about ``size`` bytes: noise, stored without compression (zlib level 0)."""
    edge = int((size / 3) ** 0.5)
    rows = b"".join(b"\x00" + os.urandom(edge * 3) for _ in range(edge))  # filter byte 0, then the row
    header = struct.pack(">IIBBBBB", edge, edge, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 0)) + _chunk(b"IEND", b"")


def jpeg_fill(size: int) -> bytes:
    """A JPEG start, then nothing but fill bytes: a header walk that steps byte by byte takes seconds."""
    return b"\xff\xd8\xff" + b"\xff" * (size - 3)


def png_chunks(size: int) -> bytes:
    """A PNG header, then empty ancillary chunks up to ``size``: a chunk walk without a bound takes a second."""
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
    empty = _chunk(b"teXt", b"")
    return head + empty * ((size - len(head)) // len(empty))


def multipart(image: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = secrets.token_hex(16)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na brighter shelf\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="size"\r\n\r\n1024x1024\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()
    return head + image + f"\r\n--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


class Prober:
    """GET /healthz back to back in a thread of its own: (start, seconds) of each probe."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.probes: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                started = time.perf_counter()
                http.get(self.url).raise_for_status()
                self.probes.append((started, time.perf_counter() - started))

    @contextmanager
    def running(self) -> Iterator[Prober]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()

    def during(self, start: float, end: float) -> list[float]:
        """Probes that overlap [start, end]."""
        return [seconds for began, seconds in self.probes if began <= end and began + seconds >= start]


def _rest(url: str, count: int) -> list[float]:
    with httpx.Client(timeout=60) as http:
        http.get(url).raise_for_status()
        out = []
        for _ in range(count):
            started = time.perf_counter()
            http.get(url).raise_for_status()
            out.append(time.perf_counter() - started)
    return out


def _upload(api: str, prober: Prober, body: bytes, headers: dict[str, str], expect: int) -> float:
    """One upload while the prober runs; the slowest probe that overlapped it (seconds)."""
    with httpx.Client(timeout=300) as http:
        started = time.perf_counter()
        answer = http.post(api + EDIT_URL, content=body, headers=headers)
        ended = time.perf_counter()
    if answer.status_code != expect:
        raise RuntimeError(f"the upload answered {answer.status_code}, not {expect}: {answer.text[:300]}")
    while not any(began > ended for began, _ in prober.probes[-3:]):  # the probe in flight at the end has finished
        time.sleep(0.005)
    overlapping = prober.during(started, ended)
    if not overlapping:
        raise RuntimeError("no probe overlapped the upload")
    return max(overlapping)


def _servers(azurite: Azurite, workdir: Path) -> list[Child]:
    key = secrets.token_urlsafe(24)
    sim_url = f"http://127.0.0.1:{free_port()}"
    simulator = start_child("upload-simulator", ["local.simulator", "--port", sim_url.rsplit(":", 1)[1], "--api-key", key, "--log-level", "warning"],
                            child_env({}), sim_url, "/_sim/health", workdir)  # fmt: skip
    env = {
        "AZURE_OPENAI_ENDPOINT": sim_url, "AZURE_OPENAI_API_KEY": key, "AZURE_OPENAI_DEPLOYMENT": DEPLOYMENT,
        "IMAGES_DEPLOYMENTS": f"{DEPLOYMENT}={DEPLOYMENT}", "IMAGES_ALLOW_HTTP_UPSTREAM": "true",
        "AzureWebJobsStorage": azurite.connection_string, "IMAGES_CONTAINER": f"bench-upload-{secrets.token_hex(4)}",
    }  # fmt: skip
    api_url = f"http://127.0.0.1:{free_port()}"
    try:
        api = start_child("upload-api", ["bench.serve_api", "--port", api_url.rsplit(":", 1)[1]], child_env(env), api_url, "/healthz", workdir)
    except BaseException:
        simulator.stop()
        raise
    return [simulator, api]


def measure_upload(azurite: Azurite, size: UploadSize = FULL) -> dict[str, Any]:
    """Probes at rest, then each kind of upload ``size.rounds`` times under probes; the figures."""
    kinds = {"png": (noise_png, 200), "jpeg_fill": (jpeg_fill, 400), "png_chunks": (png_chunks, 400)}
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        children = _servers(azurite, Path(tmp))
        try:
            api = children[1].url
            rest = statistics.median(_rest(api + "/healthz", size.rest_probes))
            results: dict[str, Any] = {"upload_bytes": size.upload_bytes, "rounds": size.rounds, "rest_ms_median": round(rest * 1000, 2)}
            with Prober(api + "/healthz").running() as prober:
                for kind, (make, expect) in kinds.items():
                    body, headers = multipart(make(size.upload_bytes))
                    worst = [_upload(api, prober, body, headers, expect) for _ in range(size.rounds)]
                    added = [round((w - rest) * 1000, 1) for w in worst]
                    results[kind] = {"added_ms": added, "added_ms_median": statistics.median(added), "status": expect}
            results["probes"] = len(prober.probes)
        finally:
            for child in reversed(children):
                child.stop()
    results["added_ms_worst_kind"] = max(results[kind]["added_ms_median"] for kind in kinds)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upload", description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    args = parser.parse_args(argv)
    azurite = start_azurite()
    try:
        print(json.dumps(measure_upload(azurite, SMOKE if args.smoke else FULL), indent=2))
    finally:
        azurite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
