"""Issue 15, findings 2, 3, 7 and 8: `dev.py run` and `dev.py serve` as a newcomer (and a supervisor) meet them.

- stopping `dev.py serve` the way a supervisor does (SIGTERM to its pid only) stops everything it started;
- one Azurite per data folder: a second stack on the folder reuses the first one's Azurite, or refuses
  naming the stack that holds it;
- a configuration error is one line naming the setting (no traceback), and a real endpoint is announced
  loudly as billed; `run` says its links die with it;
- `dev.py --help` lists every command and the options of serve.

The end-to-end tests run `python3 dev.py ...` in a session of their own, with a data folder and free
ports of their own, and wait on events (a line printed, a process gone), never on the clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.storage.queue import QueueServiceClient

from client import wait
from local.azurite import FolderLock
from local.servers import free_port
from local.stack import SIMULATED_DEPLOYMENTS, StackError, billing_warning, running_stack
from shared.settings import Settings, setting_names

ROOT = Path(__file__).resolve().parent.parent
READY = "Ctrl-C or SIGTERM stops everything."


def stack_environ(**extra: str) -> dict[str, str]:
    """This process's environment without any Azure or app setting (the stack then uses its stand-ins), and no setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IMAGES_", "AzureWebJobsStorage"))}
    return {**env, "DEV_PY_SKIP_SETUP": "1", "PYTHONUNBUFFERED": "1", **extra}


def session_processes(session: int) -> set[int]:
    """Every live process in the session ``session`` (the test starts dev.py as a session leader)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, session, ...
        if int(fields[3]) == session and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait for process ``pid`` to end (its pidfd becomes readable); True if it did within ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def read_until(process: subprocess.Popen[str], marker: str, timeout: float = 90) -> str:
    """The output up to and including the line holding ``marker`` (fails if the process ends or goes quiet first)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # a thread: the pipe is read line by line, and the end of output said with None
        for line in process.stdout or ():
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {marker!r} within {timeout} s:\n" + "".join(seen)) from None
        assert line is not None, f"the process ended ({process.wait()}) before {marker!r}:\n" + "".join(seen)
        seen.append(line)
        if marker in line:
            return "".join(seen)


@pytest.fixture()
def dev_py(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started with `python3 dev.py ...` (each a session leader); whatever a failed test leaves is killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        for pid in session_processes(process.pid):
            os.kill(pid, signal.SIGKILL)
        process.wait(10)


def start_dev_py(started: list[subprocess.Popen[str]], *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "dev.py", *args], cwd=ROOT, env=env or stack_environ(), start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    started.append(process)
    return process


def test_help_lists_every_command_and_the_options_of_serve() -> None:
    """Finding 8: `dev.py --help` left out lint, and serve's --port and --latency were nowhere."""
    shown = subprocess.run([sys.executable, "dev.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for command in ("run", "serve", "token", "test", "lint", "bench"):
        assert f"python3 dev.py {command}" in shown, command
    for option in ("--port", "--latency", "--data", "DEV_PY_SKIP_SETUP", "SIGTERM"):
        assert option in shown, option


@pytest.mark.slow  # a whole `dev.py serve` in a subprocess (about 3 s): CI runs it
def test_sigterm_to_dev_py_alone_stops_the_whole_serve_stack(dev_py: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    """Finding 2: SIGTERM to `python3 dev.py serve` left the stack and Azurite running, re-parented to init."""
    port = free_port()
    process = start_dev_py(dev_py, "serve", "--port", str(port), "--data", str(tmp_path / "data"), "--azurite-ports", "free", "--latency", "0")
    banner = read_until(process, READY)
    assert f"Gallery    http://127.0.0.1:{port}/gallery" in banner
    running = session_processes(process.pid)
    assert len(running) >= 3, "dev.py, the stack and Azurite"  # the simulator and the API are threads of the stack
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"

    os.kill(process.pid, signal.SIGTERM)  # dev.py only, as a supervisor does
    assert process.wait(60) == 0
    left = {pid for pid in running if not wait_gone(pid, 30)}
    assert not left and not session_processes(process.pid), f"still running: {left}"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")
    assert not (tmp_path / "data" / "stack.lock").read_text(), "the folder is free again"


@pytest.mark.slow  # two stacks and an Azurite (about 2 s): CI runs it
def test_two_stacks_on_one_folder_share_one_azurite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 3: a second stack on .azurite/ started a second Azurite; what one wrote was 404 to the other."""
    for name in ("AZURE_OPENAI_ENDPOINT", "AzureWebJobsStorage", "AzureWebJobsStorage__blobServiceUri"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    with running_stack(latency=0, location=data, azurite_ports="free") as first:
        assert first.azurite is not None and first.owns_azurite
        with running_stack(latency=0, location=data, azurite_ports="free") as second:
            assert second.azurite is not None and not second.owns_azurite
            assert (second.azurite.blob_port, second.azurite.queue_port) == (first.azurite.blob_port, first.azurite.queue_port)
            url = f"{first.url}/openai/deployments/gpt-image-1-mini/images/generations?api-version=2025-04-01-preview"
            made = httpx.post(url, json={"prompt": "x", "response_format": "url"}, headers=first.headers(), timeout=60)
            name = httpx.URL(made.json()["data"][0]["url"]).path.split("/images/", 1)[1]
            # The same local principal in both (a name maps to one object id), each with its own stack's token.
            seen_by_second = httpx.get(f"{second.url}/images/{name}", headers=second.headers(), follow_redirects=True, timeout=60)
            assert seen_by_second.status_code == 200 and seen_by_second.content.startswith(b"\x89PNG")
        # The second stack leaves the Azurite it reused running for the first.
        assert httpx.get(f"{first.url}/images/{name}", headers=first.headers(), follow_redirects=True, timeout=60).status_code == 200
        assert first.azurite.process is not None
        azurite_process = first.azurite.process
    assert azurite_process.poll() is not None, "the stack that started Azurite stops it"


@pytest.mark.slow  # two stacks, a job through each (about 3 s): CI runs it
def test_two_stacks_on_one_folder_never_run_each_others_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19, finding 17: the first stack's queue runner took the second's jobs and ran them on its own model service."""
    for name in ("AZURE_OPENAI_ENDPOINT", "AzureWebJobsStorage", "AzureWebJobsStorage__blobServiceUri", "IMAGES_QUEUE"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    with running_stack(latency=0, location=data, azurite_ports="free") as first:
        with running_stack(latency=0, location=data, azurite_ports="free") as second:
            assert second.own_queue and not first.own_queue
            assert first.settings.queue_name == "image-jobs" and second.settings.queue_name.startswith("image-jobs-s")
            for stack in (second, first, second):
                path = "/openai/deployments/gpt-image-1-mini/images/generations:submit?api-version=2025-04-01-preview"
                accepted = httpx.post(stack.url + path, json={"prompt": "whose job"}, headers=stack.headers(), timeout=60)
                assert accepted.status_code == 202, accepted.text
                asyncio.run(_finished(stack.url, accepted.json()["id"], stack.headers()))
            assert first.simulator is not None and second.simulator is not None
            generations = [httpx.get(f"{s.simulator.url}/_sim/stats").json()["generations"] for s in (first, second)]  # type: ignore[union-attr]
            assert generations == [1, 2]  # each job on the model service of the stack it was sent to
            own = second.settings
        names = {q.name for q in QueueServiceClient.from_connection_string(first.settings.storage.connection_string).list_queues()}
        assert first.settings.queue_name in names and own.queue_name not in names and own.poison_queue_name not in names


async def _finished(url: str, job_id: str, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        operation = await wait(http, job_id, poll_interval=0.05, timeout=60)
    assert operation.status == "succeeded"


def test_a_folder_held_by_a_stack_whose_azurite_is_gone_is_refused_naming_the_holder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_OPENAI_ENDPOINT", "AzureWebJobsStorage", "AzureWebJobsStorage__blobServiceUri"):
        monkeypatch.delenv(name, raising=False)
    held = FolderLock.acquire(tmp_path)
    held.describe(pid=4242, command="dev.py serve", blob_port=free_port(), queue_port=free_port(), api="http://127.0.0.1:7071")
    try:
        with pytest.raises(StackError) as refused, running_stack(latency=0, location=tmp_path, azurite_ports="free"):
            pytest.fail("the stack started on a folder another stack holds")
    finally:
        held.release()
    message = str(refused.value)
    assert "pid 4242 (dev.py serve)" in message and "API http://127.0.0.1:7071" in message and "--data" in message


def test_a_configuration_error_is_one_line_naming_the_setting_after_the_billing_warning(tmp_path: Path) -> None:
    """Finding 7: an endpoint without a deployment ended in a traceback, and a real endpoint was used without a word."""
    env = stack_environ(AZURE_OPENAI_ENDPOINT="https://contoso.openai.azure.com")
    done = subprocess.run(
        [sys.executable, "-m", "local.stack", "run", "--data", str(tmp_path / "data")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    warning, error = done.stderr.strip().rsplit("\n", 1)
    assert "https://contoso.openai.azure.com" in warning and "BILLED" in warning
    assert error.startswith("dev.py run: configuration error: ") and "AZURE_OPENAI_DEPLOYMENT" in error
    assert not (tmp_path / "data").exists(), "nothing was started"


def test_the_billing_warning_is_only_for_a_real_endpoint() -> None:
    assert billing_warning({}) is None and billing_warning({"AZURE_OPENAI_ENDPOINT": " "}) is None
    warning = billing_warning({"AZURE_OPENAI_ENDPOINT": "https://contoso.openai.azure.com"})
    assert warning is not None and "unset AZURE_OPENAI_ENDPOINT" in warning


@pytest.mark.slow  # a whole `dev.py run` (about 5 s): CI runs it
def test_dev_py_run_end_to_end_says_its_links_die_with_it(dev_py: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    """The README's first command, as a newcomer runs it: an image archived and saved, a job done, everything stopped."""
    process = start_dev_py(dev_py, "run", "--data", str(tmp_path / "data"), "--azurite-ports", "free", "--out", str(tmp_path / "out"), "--latency", "0")
    assert process.stdout is not None
    output = process.stdout.read()
    assert process.wait(120) == 0, output
    assert "archived image" in output and "job record" in output
    assert "Azure retired" not in output, "no retirement warning for the simulator's own deployments"
    assert "These links answer only while this stack runs" in output and "python3 dev.py serve" in output
    assert "/gallery" in output and "http://127.0.0.1:7071/gallery" in output  # where to look at what was generated
    saved = sorted(f.name for f in (tmp_path / "out").iterdir())
    assert len(saved) == 2 and saved[0].endswith("-edit.png") != saved[1].endswith("-edit.png"), saved  # the image and its edit
    assert "an edit of the image above, read from the archive by name" in output
    assert not session_processes(process.pid)


# --------------------------------------------------------------------------- Core Tools' local.settings.json


# Read by the Functions host and the Python worker, not the app (PYTHON_ENABLE_INIT_INDEXING: the HTTP streams extension).
HOST_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsFeatureFlags", "PYTHON_ENABLE_INIT_INDEXING"}


@pytest.mark.parametrize("name", ["local.settings.example.json", "local.settings.simulator.example.json"])
def test_each_local_settings_example_is_a_valid_set_for_func_start(name: str) -> None:
    """Finding 8: there was no variant for the simulator, and nothing said to start Azurite for `func start`."""
    values = json.loads((ROOT / name).read_text(encoding="utf-8"))["Values"]
    assert set(values) - HOST_SETTINGS <= set(setting_names())
    settings = Settings.from_env(values)
    assert values["PYTHON_ENABLE_INIT_INDEXING"] == "1"  # without it the worker ignores the extension (Python <= 3.12)
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"  # Azurite on its usual ports: python -m local.azurite
    readme = (ROOT / "docs" / "local-stack.md").read_text(encoding="utf-8")
    assert name in readme and "python -m local.azurite" in readme
    if "simulator" in name:
        assert settings.endpoint == "http://127.0.0.1:8089" and settings.auth_mode == "key"
        assert values["IMAGES_DEPLOYMENTS"] == SIMULATED_DEPLOYMENTS
        assert f"-m local.simulator --port 8089 --api-key {values['AZURE_OPENAI_API_KEY']}" in readme
    else:
        assert settings.endpoint.startswith("https://") and settings.auth_mode == "entra"


def test_the_local_stack_page_names_the_simulators_deployments() -> None:
    page = (ROOT / "docs" / "local-stack.md").read_text(encoding="utf-8")
    for pair in SIMULATED_DEPLOYMENTS.split(","):
        assert f"`{pair.split('=')[0]}`" in page


def test_the_local_default_and_the_examples_use_the_model_new_customers_can_deploy(monkeypatch: pytest.MonkeyPatch) -> None:
    """gpt-image-1-mini takes no new customers since 2026-10-06: the stack, the settings examples and the README show gpt-image-2."""
    from local.stack import stack_env
    from shared.models import BY_NAME, IAC_DEFAULT_MODEL

    monkeypatch.delenv("AZURE_OPENAI_DEPLOYMENT", raising=False)
    assert stack_env(None, "http://127.0.0.1:1", "key")["AZURE_OPENAI_DEPLOYMENT"] == IAC_DEFAULT_MODEL
    assert BY_NAME[IAC_DEFAULT_MODEL].no_new_customers is None and not BY_NAME[IAC_DEFAULT_MODEL].registration
    for name in ("local.settings.example.json", "local.settings.simulator.example.json"):
        values = json.loads((ROOT / name).read_text(encoding="utf-8"))["Values"]
        assert values["AZURE_OPENAI_DEPLOYMENT"] == IAC_DEFAULT_MODEL, name
    readme, api = ((ROOT / page).read_text(encoding="utf-8") for page in ("README.md", "docs/http-api.md"))
    assert "/openai/deployments/gpt-image-1-mini/" not in readme + api and f"/openai/deployments/{IAC_DEFAULT_MODEL}/images/generations" in api
    assert f'model="{IAC_DEFAULT_MODEL}"' in readme
