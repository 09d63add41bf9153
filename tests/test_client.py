"""The batch client against the local stack: Azurite, the simulator, the API over uvicorn and the queue runner.

The runner drives the same handler as the Functions trigger, so what the client sees
here is what it sees in Azure. The client's own polling (a tiny interval) is the only waiting.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from rich.console import Console

from client import BatchConfig, BatchRequest, InvalidLine, derive_id, download, parse_line, run_batch, status, submit, wait
from client.auth import FunctionKeyAuth, entra_auth
from client.batch import RESULTS, failed, load_results
from client.cli import main
from client.progress import Tally
from client.queue import QueueSubmitter, host_message_encoding
from client.service import stable_link
from local.azurite import ROOT, Azurite
from local.identity import IdentityEndpoint, TokenIssuer
from local.queue_runner import QueueRunner
from local.servers import ServerThread, serve_in_thread
from shared.api import create_app
from shared.jobs import decode_message, handle_queue_message
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import SimControl, base_env

PNG = b"\x89PNG\r\n\x1a\n"
POLL = 0.05


def api_app(runtime: Runtime) -> FastAPI:
    """The API over a runtime."""
    return create_app(runtime)


def host_queues() -> dict[str, Any]:
    queues: dict[str, Any] = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    return queues


@dataclass
class Stack:
    settings: Settings
    api: ServerThread
    runner: QueueRunner
    azurite: Azurite


@pytest.fixture(scope="module")
def stack(azurite: Azurite, simulator: ServerThread) -> Iterator[Stack]:
    """The API and a queue runner on fresh containers and a fresh queue."""
    suffix = uuid.uuid4().hex[:10]
    env = base_env(azurite, simulator.url) | {
        "IMAGES_QUEUE": f"client-{suffix}",
        "IMAGES_CONTAINER": f"client-images-{suffix}",
        "IMAGES_JOBS_CONTAINER": f"client-jobs-{suffix}",
        "IMAGES_UPSTREAM_TIMEOUT_SECONDS": "30",
    }
    settings = Settings.from_env(env)
    api = serve_in_thread(api_app(Runtime(settings)))
    worker = Runtime(settings)  # the runner's loop gets a runtime of its own

    async def handler(msg: Any) -> Any:
        await worker.open()
        return await handle_queue_message(worker.jobs, msg)

    runner = QueueRunner(
        azurite.connection_string, settings.queue_name, handler, host_queues=host_queues(),
        retry_delay=0.2, lease_seconds=5, max_poll_interval=0.2, on_stop=worker.close,
    ).start_in_thread()
    yield Stack(settings, api, runner, azurite)
    runner.stop()
    api.stop()


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def results_by_line(out: Path) -> dict[int, dict[str, Any]]:
    entries = [json.loads(text) for text in (out / RESULTS).read_text().splitlines()]
    by_line = {e["line"]: e for e in entries}
    assert len(by_line) == len(entries), "one entry per line"
    return by_line


class CancelAfter:
    """A reporter that interrupts the run once ``count`` lines have succeeded, as Ctrl-C would."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.task: asyncio.Task[Any] | None = None

    def changed(self, tally: Tally) -> None:
        pass

    def finished(self, result: Any, tally: Tally) -> None:
        if tally.counts()["succeeded"] >= self.count and self.task is not None:
            self.task.cancel()

    def close(self, tally: Tally) -> None:
        pass


def thirty_lines(token: str) -> tuple[list[Any], dict[str, list[int]]]:
    """25 valid lines (two with n=2, some naming a deployment or an id), 4 invalid, 1 filtered; by kind, their line numbers."""
    lines: list[Any] = []
    kinds: dict[str, list[int]] = {"valid": [], "invalid": [], "filtered": []}
    for i in range(25):
        line: dict[str, Any] = {"prompt": f"product shot {i} {token}", "size": "1024x1024"}
        if i % 5 == 1:
            line["deployment"] = "gpt-image-1"
        if i % 7 == 3:
            line["id"] = f"shot-{i}-{token}"
        if i in (4, 17):
            line["n"] = 2
        lines.append(line)
        kinds["valid"].append(len(lines))
        if i == 6:
            lines.append('{"prompt": "cut off')  # not JSON
            kinds["invalid"].append(len(lines))
        if i == 9:
            lines.append({"size": "1024x1024"})  # no prompt
            kinds["invalid"].append(len(lines))
        if i == 12:
            lines.append({"prompt": "spaces", "id": "not a valid id"})
            kinds["invalid"].append(len(lines))
        if i == 15:
            lines.append({"prompt": f"bad size {token}", "size": "7x7"})  # refused by the service, nothing generated
            kinds["invalid"].append(len(lines))
        if i == 20:
            lines.append({"prompt": f"flagged {token} [[filter:prompt]]"})
            kinds["filtered"].append(len(lines))
    assert len(lines) == 30
    return lines, kinds


@pytest.mark.slow  # thirty jobs, twice (about 3 s): CI runs it
async def test_thirty_lines_interrupted_and_run_again_end_with_every_image_once(stack: Stack, sim: SimControl, tmp_path: Path) -> None:
    lines, kinds = thirty_lines(uuid.uuid4().hex[:8])
    prompts = write_lines(tmp_path / "prompts.jsonl", lines)
    out = tmp_path / "out"
    config = BatchConfig(endpoint=stack.api.url, out=out, deployment="gpt-image-1-mini", poll_interval=POLL, concurrency=6)

    interrupt = CancelAfter(8)
    async with httpx.AsyncClient(base_url=stack.api.url, timeout=30) as http:
        first = asyncio.create_task(run_batch(prompts, config, http, reporter=interrupt))
        interrupt.task = first
        with pytest.raises(asyncio.CancelledError):
            await first
    done_first = {i for i, r in load_results(out).items() if r.state == "succeeded"}
    assert 8 <= len(done_first) < 25  # interrupted half-way

    console = Console(file=io.StringIO(), width=200)
    code = await asyncio.to_thread(main, ["batch", str(prompts), "--endpoint", stack.api.url, "--out", str(out),
                                          "--deployment", "gpt-image-1-mini", "--poll-interval", str(POLL)], console)
    assert code == 1  # invalid and filtered lines

    results = results_by_line(out)
    assert sorted(results) == list(range(1, 31))
    for number in kinds["valid"]:
        entry = results[number]
        assert entry["state"] == "succeeded", entry
        expected = 2 if lines[number - 1].get("n") == 2 else 1
        assert entry["files"] == [f"{entry['id']}-{n}.png" for n in range(expected)]
        assert all((out / f).read_bytes().startswith(PNG) for f in entry["files"])
        assert [link.split("/images/", 1)[1] for link in entry["links"]] == [f"jobs/{entry['job']}/{n}.png" for n in range(expected)]
        assert entry["usage"]["total_tokens"] > 0
        assert entry.get("reused", False) == (entry["id"] in done_first)
    reasons = [results[n]["error"] for n in kinds["invalid"]]
    assert [r["code"] for r in reasons[:3]] == ["invalidLine"] * 3
    assert "not valid JSON" in reasons[0]["message"] and "'prompt' is missing" in reasons[1]["message"] and "'id'" in reasons[2]["message"]
    assert reasons[3]["param"] == "size"
    assert all(results[n]["state"] == "invalid" for n in kinds["invalid"])
    filtered = results[kinds["filtered"][0]]
    assert filtered["state"] == "failed" and filtered["error"]["code"] == "contentFilter"
    assert sorted(p.name for p in out.iterdir()) == sorted([RESULTS, *(f for n in kinds["valid"] for f in results[n]["files"])])

    stats = sim.stats()
    assert stats["generations"] == len(kinds["valid"])  # one per valid line, across both runs
    assert stats["deployments"] == {"gpt-image-1-mini": 20, "gpt-image-1": 5}
    log = console.file.getvalue()  # type: ignore[attr-defined]
    assert "[30/30]" in log and "contentFilter" in log and "done: succeeded" in log


async def test_queue_mode_sends_each_line_once_and_a_rerun_sends_nothing(stack: Stack, sim: SimControl, tmp_path: Path) -> None:
    token = uuid.uuid4().hex[:8]
    lines: list[Any] = [{"prompt": f"queued {i} {token}"} for i in range(5)] + [{"n": 1}]
    prompts = write_lines(tmp_path / "queued.jsonl", lines)
    out = tmp_path / "queued"
    argv = ["batch", str(prompts), "--endpoint", stack.api.url, "--out", str(out), "--via", "queue",
            "--connection-string", stack.azurite.connection_string, "--queue", stack.settings.queue_name,
            "--deployment", "dall-e-3", "--poll-interval", str(POLL)]
    console = Console(file=io.StringIO(), width=200)
    assert await asyncio.to_thread(main, argv, console) == 1  # the line without a prompt
    results = results_by_line(out)
    assert [results[n]["state"] for n in range(1, 7)] == ["succeeded"] * 5 + ["invalid"]
    assert results[6]["error"]["message"] == "'prompt' is missing"
    assert sim.stats()["deployments"] == {"dall-e-3": 5}
    received = stack.runner.stats.received

    again = Console(file=io.StringIO(), width=200)
    assert await asyncio.to_thread(main, argv, again) == 1
    assert all(e.get("reused") for n, e in results_by_line(out).items() if n <= 5)
    assert "skipped 5" in again.file.getvalue()  # type: ignore[attr-defined]
    assert stack.runner.stats.received == received  # nothing was sent the second time
    assert sim.stats()["generations"] == 5


def test_queue_messages_are_encoded_as_host_json_says(stack: Stack, tmp_path: Path) -> None:
    request = BatchRequest(1, "job-1", "gpt-image-1", {"prompt": "a <cat> ünïcode"})
    assert host_message_encoding() == "none"  # this app's host.json
    submitter = QueueSubmitter.from_connection_string(stack.azurite.connection_string, "unused")
    text = submitter.encode(request)
    assert json.loads(text) == {"prompt": "a <cat> ünïcode", "id": "job-1", "deployment": "gpt-image-1"}
    assert decode_message(text) == json.loads(text)

    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"queues": {"batchSize": 4}}}))
    assert host_message_encoding(tmp_path / "host.json") == "base64"
    encoded = QueueSubmitter(submitter.queue, host_message_encoding(tmp_path / "host.json")).encode(request)
    assert json.loads(base64.b64decode(encoded)) == request.message()


def test_lines_get_stable_ids_and_invalid_lines_their_reason() -> None:
    first = parse_line(1, '{"prompt": "a cat", "size": "1024x1024"}', "gpt-image-1")
    reordered = parse_line(9, '{"size": "1024x1024", "prompt": "a cat"}', "gpt-image-1")
    elsewhere = parse_line(2, '{"prompt": "a cat", "size": "1024x1024", "deployment": "dall-e-3"}', "gpt-image-1")
    assert isinstance(first, BatchRequest) and isinstance(reordered, BatchRequest) and isinstance(elsewhere, BatchRequest)
    assert first.id == reordered.id == derive_id("gpt-image-1", "generation", {"prompt": "a cat", "size": "1024x1024"})
    assert elsewhere.id != first.id and elsewhere.deployment == "dall-e-3"
    assert len(first.id) <= 64 and first.id.isalnum()
    named = parse_line(3, '{"prompt": "x", "id": "my-job_1", "operation": "edit"}', "d")
    assert isinstance(named, BatchRequest) and named.id == "my-job_1" and named.message() == {"prompt": "x", "operation": "edit", "id": "my-job_1", "deployment": "d"}
    for text, reason in [
        ("[1, 2]", "JSON object"),
        ('{"prompt": ""}', "non-empty"),
        ('{"prompt": 7}', "non-empty string"),
        ('{"prompt": "x", "operation": "variation"}', "'operation'"),
        ('{"prompt": "x", "id": "-leading"}', "'id'"),
        (b'{"prompt": "\xff"}', "not UTF-8"),
    ]:
        parsed = parse_line(4, text, "d")
        assert isinstance(parsed, InvalidLine) and reason in parsed.reason, (text, parsed)
    nowhere = parse_line(5, '{"prompt": "x"}', None)
    assert isinstance(nowhere, InvalidLine) and "deployment" in nowhere.reason


async def test_a_repeated_id_is_an_invalid_line_and_the_exit_status_says_so(stack: Stack, sim: SimControl, tmp_path: Path) -> None:
    token = uuid.uuid4().hex[:8]
    line = {"prompt": f"twice {token}"}
    prompts = write_lines(tmp_path / "twice.jsonl", [line, line, {"id": f"mine-{token}", "prompt": "a"}, {"id": f"mine-{token}", "prompt": "b"}])
    config = BatchConfig(endpoint=stack.api.url, out=tmp_path / "twice", deployment="gpt-image-1-mini", poll_interval=POLL)
    async with httpx.AsyncClient(base_url=stack.api.url, timeout=30) as http:
        results = await run_batch(prompts, config, http)
    assert [r.state for r in results] == ["succeeded", "invalid", "succeeded", "invalid"]
    assert [r.error["code"] for r in results if r.error] == ["duplicateId", "duplicateId"]
    assert "line 1 has the id" in results[1].error["message"] and "line 3 has the id" in results[3].error["message"]  # type: ignore[index]
    assert failed(results)  # a request dropped silently was the bug: the exit status is 1
    assert sim.stats()["generations"] == 2


HOSTILE_LINES: list[tuple[str | bytes, str]] = [
    ('{"prompt": NaN}', "not valid JSON"),
    ('{"prompt": "x", "n": Infinity}', "not valid JSON"),
    ('{"prompt": "x", "n": 1e400}', "not valid JSON"),
    ('{"prompt": "\\ud800 lone"}', "lone surrogate"),
    ('{"prompt": "x", "id": "ends-in-newline\\n"}', "'id'"),
    ('{"prompt": "x", "id": 7}', "'id'"),
    ('{"prompt": "x", "deployment": "../../x"}', "'deployment'"),
    ('{"prompt": "x", "deployment": 7}', "'deployment'"),
    ('{"prompt": "x", "operation": ["edit"]}', "'operation'"),
    ('{"prompt": ["x"]}', "non-empty string"),
    ('{"prompt": "x", "prompt": "y"}', "appears twice"),
    ('{"prompt": "x", "user": ' + "[" * 100 + "]" * 100 + "}", "nested deeper"),
    ('{"prompt": "cut', "not valid JSON"),
    (b'{"prompt": "\xff"}', "not UTF-8"),
    ("[]", "JSON object"),
]


async def test_malformed_lines_are_invalid_results_on_this_run_and_every_rerun(stack: Stack, sim: SimControl, tmp_path: Path) -> None:
    good = {"prompt": f"the one good line {uuid.uuid4().hex[:8]}"}
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"".join((t if isinstance(t, bytes) else t.encode("utf-8", "surrogatepass")) + b"\n" for t, _ in HOSTILE_LINES) + json.dumps(good).encode() + b"\n")
    out = tmp_path / "hostile"
    argv = ["batch", str(path), "--endpoint", stack.api.url, "--out", str(out), "--deployment", "gpt-image-1-mini", "--poll-interval", str(POLL)]
    for _ in range(2):  # and again: a rerun reads the same file and its own results.jsonl
        console = Console(file=io.StringIO(), width=300)
        assert await asyncio.to_thread(main, argv, console) == 1
        results = results_by_line(out)
        assert sorted(results) == list(range(1, len(HOSTILE_LINES) + 2))
        for number, (_, reason) in enumerate(HOSTILE_LINES, start=1):
            entry = results[number]
            assert entry["state"] == "invalid" and reason in entry["error"]["message"], (number, entry)
        assert results[len(HOSTILE_LINES) + 1]["state"] == "succeeded"
    assert sim.stats()["generations"] == 1


async def test_a_line_changed_under_an_id_an_earlier_run_sent_is_reported_and_not_sent(stack: Stack, sim: SimControl, tmp_path: Path) -> None:
    key = f"kept-{uuid.uuid4().hex[:8]}"
    path, out = tmp_path / "changing.jsonl", tmp_path / "changing"
    argv = ["batch", str(path), "--endpoint", stack.api.url, "--out", str(out), "--deployment", "gpt-image-1-mini", "--poll-interval", str(POLL)]
    write_lines(path, [{"id": key, "prompt": "a red kite"}])
    assert await asyncio.to_thread(main, argv, Console(file=io.StringIO())) == 0
    first = results_by_line(out)[1]
    write_lines(path, [{"id": key, "prompt": "a blue kite"}])
    console = Console(file=io.StringIO(), width=300)
    assert await asyncio.to_thread(main, argv, console) == 1
    changed = results_by_line(out)[1]
    assert changed["state"] == "changed" and changed["error"]["code"] == "changedRequest" and changed["request"] == first["request"]
    assert "changedRequest" in console.file.getvalue()  # type: ignore[attr-defined]
    assert sim.stats()["generations"] == 1  # nothing sent for the changed line
    write_lines(path, [{"id": key, "prompt": "a red kite"}])  # back as it was: the earlier job's images
    assert await asyncio.to_thread(main, argv, Console(file=io.StringIO())) == 0
    assert results_by_line(out)[1]["state"] == "succeeded" and sim.stats()["generations"] == 1


async def test_a_line_changed_after_an_interrupted_run_sent_it_is_caught_on_the_queue_too(stack: Stack, sim: SimControl, tmp_path: Path) -> None:
    """Interrupted after the message went: only the submitted entry knows what the id asked."""
    key = f"queued-{uuid.uuid4().hex[:8]}"
    path, out = tmp_path / "queued.jsonl", tmp_path / "queued"
    write_lines(path, [{"id": key, "prompt": "sent before the interruption"}])
    config = BatchConfig(endpoint=stack.api.url, out=out, via="queue", deployment="gpt-image-1-mini", poll_interval=POLL)
    submitter = QueueSubmitter.from_connection_string(stack.azurite.connection_string, stack.settings.queue_name)
    stop = CancelOnSubmit()
    async with httpx.AsyncClient(base_url=stack.api.url, timeout=30) as http:
        run = asyncio.create_task(run_batch(path, config, http, queue=submitter, reporter=stop))
        stop.task = run
        with pytest.raises(asyncio.CancelledError):
            await run
        assert [json.loads(t)["state"] for t in (out / RESULTS).read_text().splitlines()] == ["submitted"]
        write_lines(path, [{"id": key, "prompt": "changed meanwhile"}])
        results = await run_batch(path, config, http, queue=submitter)
        done = await wait(http, key, poll_interval=POLL)  # the message sent before the interruption, as asked then
    await submitter.close()
    assert [r.state for r in results] == ["changed"] and failed(results)
    assert done.view["result"]["data"] and sim.stats()["generations"] == 1


class CancelOnSubmit(CancelAfter):
    """Interrupts the run as soon as a line is submitted."""

    def __init__(self) -> None:
        super().__init__(0)

    def changed(self, tally: Tally) -> None:
        if tally.counts()["submitted"] and self.task is not None:
            self.task.cancel()


async def test_library_submit_wait_download_with_a_function_key(stack: Stack, sim: SimControl, tmp_path: Path) -> None:
    """The key goes to the service on every call, and never to storage with the image download."""
    seen: list[tuple[str, str | None]] = []

    async def record(request: httpx.Request) -> None:
        seen.append((f"{request.url.host}:{request.url.port}", request.headers.get("x-functions-key")))

    request = BatchRequest(1, f"lib-{uuid.uuid4().hex[:8]}", "gpt-image-1-mini", {"prompt": "library use", "n": 2})
    async with httpx.AsyncClient(base_url=stack.api.url, auth=FunctionKeyAuth("fn-key-123"), event_hooks={"request": [record]}) as http:
        accepted = await submit(http, request)
        again = await submit(http, request)  # the same Idempotency-Key: the same job, nothing new
        states: list[str] = []
        operation = await wait(http, accepted.id, poll_interval=POLL, on_status=states.append)
        files = await download(http, operation, tmp_path)
        assert (await status(http, "no-such-job")) is None
    # The service names the job (the key scoped by deployment): the same job both times, polled by that name.
    assert accepted.id == again.id and re.fullmatch(r"idem-[0-9a-f]{40}", accepted.id) and accepted.status == "notRunning"
    assert states[-1] == "succeeded"
    assert [f.name for f in files] == [f"{accepted.id}-0.png", f"{accepted.id}-1.png"]
    api_host = stack.api.url.removeprefix("http://")
    assert {key for host, key in seen if host == api_host} == {"fn-key-123"}
    storage = [key for host, key in seen if host != api_host]
    assert len(storage) == 2 and storage == [None, None]
    assert sim.stats()["generations"] == 1
    links = operation.links(stack.api.url)
    assert links == [f"{stack.api.url}/images/jobs/{accepted.id}/{n}.png" for n in range(2)]
    assert stable_link(stack.api.url, operation.urls[0], accepted.id) == links[0]  # the fallback for results without names
    assert "sig=" in operation.urls[0] and not any("sig=" in link for link in links)


async def test_entra_id_token_for_the_scope_when_no_key_is_given(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    issuer = TokenIssuer()
    identity = IdentityEndpoint(issuer).start()
    try:
        for name, value in identity.env().items():
            monkeypatch.setenv(name, value)
        for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT"):
            monkeypatch.delenv(name, raising=False)
        tokens: list[str] = []

        async def record(request: httpx.Request) -> None:
            tokens.append(request.headers.get("authorization", ""))

        auth, credential = entra_auth("api://images-batch/.default")
        async with credential, httpx.AsyncClient(base_url=stack.api.url, auth=auth, event_hooks={"request": [record]}) as http:
            await status(http, "any-job")
            await status(http, "any-job")
    finally:
        identity.stop()
    assert len(tokens) == 2 and tokens[0] == tokens[1] and tokens[0].startswith("Bearer ")
    assert issuer.validate(tokens[0].removeprefix("Bearer "), "api://images-batch")
    assert identity.resources == {"api://images-batch": 1}  # cached: one token for both calls
