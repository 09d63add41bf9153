"""Child processes of the benchmark (simulator, APIs) and their memory, read from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from local.servers import stop_process

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Child:
    """A server started by the benchmark: its process, URL and log file."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """Terminate this child (only this one), then kill it if it does not go."""
        stop_process(self.process)


def start_child(name: str, module_args: list[str], env: dict[str, str], url: str, health_path: str, log_dir: Path, timeout: float = 60) -> Child:
    """``python -m <module_args>`` in the project root with ``env``; wait until ``url + health_path`` answers 200."""
    health_url = url + health_path
    log_path = log_dir / f"{name}.log"
    log_file = open(log_path, "wb")  # kept open for the child's lifetime
    process = subprocess.Popen([sys.executable, "-m", *module_args], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    child = Child(name, process, url, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(health_url, timeout=1).status_code == 200:
                return child
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            child.stop()
            raise RuntimeError(f"{name} did not answer {health_url} within {timeout:g} s; see {log_path}")
        time.sleep(0.05)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment (PATH, proxies...) without the app's settings, plus ``extra``; loopback never proxied."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IMAGES_", "AzureWebJobsStorage"))}
    base["NO_PROXY"] = base["no_proxy"] = "127.0.0.1,localhost"
    base["PYTHONUNBUFFERED"] = "1"
    return {**base, **extra}


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process in bytes, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/<pid>/clear_refs``); False if the kernel refuses."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0),
        "cpu_model": cpu,
        "memory_total_gib": round(mem_total / 2**30, 1) if mem_total else 0,
        "python": sys.version.split()[0],
        "platform": sys.platform,
    }
