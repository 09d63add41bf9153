"""A crash of the app process, storage alive: every accepted job still ends, and none is generated twice.

The API and the queue runner run as a separate process (``python -m local.app_process``)
against the session's Azurite and a simulator of this test, which both outlive it. Jobs are
submitted, the process is killed with SIGKILL while generations are in flight, and a new
process is started on the same storage. The simulator records every request's body, so the
generations of each prompt can be counted.

Slow (two process starts and a lease to run out): CI runs it, ``dev.py test`` leaves it out.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from local.azurite import Azurite, start_azurite
from local.servers import ServerThread, free_port, serve_in_thread
from local.simulator import SimulatorConfig, create_simulator
from tests.conftest import SIM_KEY, SimControl, base_env

ROOT = Path(__file__).resolve().parent.parent
API_VERSION = "2025-04-01-preview"
JOBS = 10
LATENCY = 0.8  # seconds per generation: long enough to kill the process while some are in flight


@pytest.fixture()
def own_simulator() -> Iterator[tuple[ServerThread, SimControl]]:
    """A simulator that keeps every request it saw (the shared one keeps the last 100)."""
    server = serve_in_thread(create_simulator(SimulatorConfig(api_keys={SIM_KEY}, latency=LATENCY, recent_limit=10_000)))
    with SimControl(server.url) as control:
        yield server, control
    server.stop()


class AppProcess:
    """``python -m local.app_process`` with the given settings; started, killed, started again."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 60) -> str:
        port = free_port()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "local.app_process", "--port", str(port), "--lease-seconds", "2"],
                # Unbuffered: ended() waits with select() on the pipe, and a buffered reader would take several lines
                # off the pipe at once and keep the later ones where select() cannot see them (a wait to the timeout).
                cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=log, bufsize=0,
            )
        self.url = self._ready(timeout)
        return self.url

    def _ready(self, timeout: float) -> str:
        """The URL the process prints once it serves (a readable stdout is the event; EOF means it died)."""
        assert self.process is not None and self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise AssertionError(f"app process not ready within {timeout} s; see {self.log}")
        line = self.process.stdout.readline().decode().strip()
        assert line.startswith("ready "), f"app process said {line!r}; see {self.log}"
        return line.removeprefix("ready ")

    def ended(self, ids: set[str], count: int, timeout: float = 120) -> set[str]:
        """Wait for the process to say it ended ``count`` of ``ids`` (lines ``job <id> succeeded|failed|duplicate``)."""
        assert self.process is not None and self.process.stdout is not None
        done: set[str] = set()
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while len(done) < count:
                if not selector.select(timeout):
                    raise AssertionError(f"only {len(done)} of {count} jobs ended within {timeout} s; see {self.log}")
                line = self.process.stdout.readline().decode()
                assert line, f"the app process ended its output; see {self.log}"
                _, job_id, action = [*line.split(), "", "", ""][:3]
                if job_id in ids and action in ("succeeded", "failed", "duplicate"):
                    done.add(job_id)
        return done

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        assert self.process.wait(30) == -signal.SIGKILL

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def child_env(azurite: Azurite, sim_url: str, queue: str) -> dict[str, str]:
    """The test process's environment without any app setting of its own, plus this run's settings."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IMAGES_", "AzureWebJobsStorage", "WEBSITE_"))}
    return {**inherited, **base_env(azurite, sim_url), "IMAGES_QUEUE": queue, "IMAGES_UPSTREAM_TIMEOUT_SECONDS": "30", "NO_PROXY": "127.0.0.1,localhost"}


def job_records(azurite: Azurite, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The job records as stored right now (read from storage: the app is not there to ask)."""
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("image-jobs")
    return {job_id: json.loads(container.download_blob(f"{job_id}.json").readall()) for job_id in ids}


def generations_by_prompt(control: SimControl) -> Counter[str]:
    """How many times the simulator was asked to generate each prompt (every request that reached it is billed here)."""
    recent = control.stats()["recent"]
    return Counter(entry["body"]["prompt"] for entry in recent if isinstance(entry.get("body"), dict) and "prompt" in entry["body"])


def final_views(url: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each job as the API shows it now."""
    with httpx.Client(base_url=url, timeout=30) as client:
        return {job_id: client.get(f"/openai/operations/images/{job_id}").json() for job_id in ids}


@pytest.mark.slow
def test_killing_the_app_mid_run_loses_no_accepted_job(azurite: Azurite, own_simulator: tuple[ServerThread, SimControl], tmp_path: Path) -> None:
    simulator, control = own_simulator
    app = AppProcess(child_env(azurite, simulator.url, f"crash-{uuid.uuid4().hex[:12]}"), tmp_path / "app.log")
    try:
        url = app.start()
        prompts = {f"crash test job {i} {uuid.uuid4().hex[:8]}": "" for i in range(JOBS)}
        with httpx.Client(base_url=url, timeout=30) as client:
            for prompt in prompts:
                accepted = client.post(f"/openai/deployments/gpt-image-1-mini/images/generations:submit?api-version={API_VERSION}", json={"prompt": prompt})
                assert accepted.status_code == 202, accepted.text
                prompts[prompt] = accepted.json()["id"]
        ids = list(prompts.values())

        # Mid-run: a job finished, and a generation in flight.
        app.ended(set(ids), count=1)
        control.wait(at_least={"in_flight": 1}, timeout=60)
        app.kill()
        at_kill = job_records(azurite, ids)
        generated_at_kill = generations_by_prompt(control)
        finished_at_kill = {job_id for job_id, record in at_kill.items() if record["status"] in ("succeeded", "failed")}
        assert finished_at_kill and len(finished_at_kill) < JOBS, "the kill was not mid-run"

        url = app.start()
        unfinished = set(ids) - finished_at_kill
        app.ended(unfinished, count=len(unfinished))  # the new process ends every job the killed one had not
        views = final_views(url, ids)
    finally:
        app.stop()

    generated = generations_by_prompt(control)
    for prompt, job_id in prompts.items():
        view = views[job_id]
        # A job the killed process had claimed may have reached upstream: it is never sent again. It
        # ends from what was archived, or failed with the reason; every other job succeeds.
        assert generated[prompt] <= 1, (prompt, generated[prompt], at_kill[job_id]["status"])
        if view["status"] == "failed":
            assert at_kill[job_id]["attempts"] >= 1, (view, at_kill[job_id])  # a delivery had claimed it
            assert view["error"]["code"] == "JobAbandoned" and "not repeated" in view["error"]["message"], view
        else:
            assert view["status"] == "succeeded" and view["result"]["data"], view
            assert generated[prompt] == 1
    assert any(generated_at_kill[p] and at_kill[j]["status"] == "running" for p, j in prompts.items()), "nothing was in flight at the kill"


@pytest.mark.slow
def test_azurite_keeps_what_was_written_just_before_a_clean_stop(tmp_path: Path) -> None:
    """What README's local-stack section promises for .azurite/: a clean stop (SIGTERM, Ctrl-C) saves
    everything, even what was written a moment before; only a kill can lose the last seconds."""
    location = tmp_path / "azurite"
    first = start_azurite(location=location)
    try:
        blobs = BlobServiceClient.from_connection_string(first.connection_string)
        blobs.create_container("kept")
        blobs.get_blob_client("kept", "job.json").upload_blob(b'{"status": "notRunning"}')
        queue = QueueClient.from_connection_string(first.connection_string, "kept")
        queue.create_queue()
        queue.send_message("accepted job")
    finally:
        first.stop()  # SIGTERM: Azurite saves its state as it shuts down
    second = start_azurite(location=location)
    try:
        blobs = BlobServiceClient.from_connection_string(second.connection_string)
        assert blobs.get_blob_client("kept", "job.json").download_blob().readall() == b'{"status": "notRunning"}'
        [message] = QueueClient.from_connection_string(second.connection_string, "kept").receive_messages()
        assert message.content == "accepted job"
    finally:
        second.stop()
