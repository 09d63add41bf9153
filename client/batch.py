"""A whole file of requests: submit each line as a background job, wait, download, record.

Resumable by construction: every line's job id comes from the line (client.lines), the
service treats a known id as the job it already has, and ``results.jsonl`` in the output
folder remembers which lines already have their images, so a second run skips them and
picks up the rest (including jobs submitted by a run that was interrupted).

``results.jsonl`` also keeps what each id asked (``request``: the digest of the line as sent,
written the moment it is submitted), so a line changed under an id an earlier run sent is
reported as ``changed`` and not sent (the service, or its queue, would answer with the job it
has for that id: the earlier request's images). Two lines with one id in a file are one
request and an ``invalid`` line. Whatever a line or an answer holds, it ends as a result.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import httpx

from client.lines import BatchRequest, InvalidLine, read_lines
from client.progress import FROM_SERVICE, Reporter, SilentReporter, Tally
from client.queue import QueueSubmitter
from client.service import API_VERSION, JobError, Operation, download, status, submit, wait

RESULTS = "results.jsonl"
FAILURES = ("failed", "invalid", "changed")
SENT = ("submitted", "succeeded", "failed", "changed")  # states whose id the service holds a job for


@dataclass
class LineResult:
    """How one line ended: one entry of results.jsonl."""

    line: int
    id: str | None  # the line's id (the Idempotency-Key, and the name of its files)
    state: str  # submitted (in results.jsonl only while a run is on) | succeeded | failed | invalid | changed
    job: str | None = None  # the service's job id (it scopes keys by deployment and caller)
    request: str | None = None  # the digest of what the id asked the service (BatchRequest.digest), once sent
    files: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    cost: Any = None
    error: dict[str, Any] | None = None
    reused: bool = False  # its images came from an earlier run

    def summary(self) -> str:
        """One line for a person."""
        if self.state == "succeeded":
            return f"line {self.line} succeeded {self.id}: {', '.join(self.files)}" + (" (earlier run)" if self.reused else "")
        error = self.error or {}
        named = f"line {self.line} {self.state}" + (f" {self.id}" if self.id else "")
        return f"{named}: {error.get('code', 'error')}: {error.get('message', '')}"

    def to_json(self) -> dict[str, Any]:
        """The entry as written (empty fields left out)."""
        return {k: v for k, v in asdict(self).items() if v not in (None, [], False)}


@dataclass(frozen=True)
class BatchConfig:
    """How to run a batch. ``endpoint`` is where the service is (the http client's base URL)."""

    endpoint: str
    out: Path
    via: Literal["http", "queue"] = "http"
    deployment: str | None = None
    api_version: str = API_VERSION
    poll_interval: float = 2.0
    concurrency: int = 16
    timeout: float | None = None  # per job, after submission


def load_results(out: Path) -> dict[str, LineResult]:
    """What earlier runs sent, by id: the last entry of an id that the service holds a job for."""
    found: dict[str, LineResult] = {}
    path = out / RESULTS
    if not path.exists():
        return found
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        result = _entry(text)
        if result is not None and result.id and (result.state in SENT or result.id not in found):
            found[result.id] = result
    return found


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "line": int, "id": str, "state": str, "job": str, "request": str, "files": list, "links": list, "error": dict, "reused": bool, "usage": dict,
}  # fmt: skip


def _entry(text: str) -> LineResult | None:
    """One entry of results.jsonl, or None for what is not one (a line cut short by an interrupted run, an edit by hand)."""
    try:
        entry = json.loads(text)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("line"), int) or not isinstance(entry.get("state"), str):
        return None
    if any(k in entry and entry[k] is not None and not isinstance(entry[k], t) for k, t in _FIELD_TYPES.items()):
        return None
    if not all(isinstance(f, str) for f in entry.get("files") or []):
        return None
    return LineResult(**{"id": None, **{k: v for k, v in entry.items() if k in LineResult.__dataclass_fields__}})


def _safe(text: str) -> str:
    # Exception texts can carry URLs; a SAS query string never goes into results or the console.
    return re.sub(r"\?[^\s'\"]*", "?…", text)


class Batch:
    """One run over a file."""

    def __init__(self, config: BatchConfig, http: httpx.AsyncClient, queue: QueueSubmitter | None, reporter: Reporter, tally: Tally) -> None:
        if config.via == "queue" and queue is None:
            raise ValueError("--via queue needs a queue (a connection string or a queue URL with an identity)")
        self.config, self.http, self.queue, self.reporter, self.tally = config, http, queue, reporter, tally
        self.results: list[LineResult] = []
        config.out.mkdir(parents=True, exist_ok=True)
        # backslashreplace: text that is not valid Unicode (an echo in an error) is written escaped, never a crash
        self._log = (config.out / RESULTS).open("a", encoding="utf-8", errors="backslashreplace")

    def _write(self, result: LineResult) -> None:
        self._log.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
        self._log.flush()

    def finish(self, result: LineResult, state: str | None = None) -> None:
        """Record a line's end: appended to results.jsonl at once, so an interrupted run loses nothing."""
        self.results.append(result)
        self._write(result)
        self.tally.set(result.line, state or result.state)
        self.reporter.finished(result, self.tally)

    def moved(self, line: int, state: str) -> None:
        """A line changed state."""
        self.tally.set(line, state)
        self.reporter.changed(self.tally)

    def plan(self, path: Path) -> list[BatchRequest]:
        """Read the file: invalid, repeated, changed and already-done lines end here; the rest are returned."""
        previous = load_results(self.config.out)
        first: dict[str, int] = {}
        todo: list[BatchRequest] = []
        items = list(read_lines(path, self.config.deployment))
        for item in items:
            self.tally.set(item.line, "waiting")
        for item in items:
            if isinstance(item, InvalidLine):
                self.finish(LineResult(item.line, item.id, "invalid", error={"code": "invalidLine", "message": item.reason}))
            elif item.id in first:
                message = f"line {first[item.id]} has the id {item.id!r} already; give each request its own id (two lines asking the same get one)"
                self.finish(LineResult(item.line, item.id, "invalid", error={"code": "duplicateId", "message": message}))
            else:
                first[item.id] = item.line
                self._plan_one(item, previous.get(item.id), todo)
        self.reporter.changed(self.tally)
        return todo

    def _plan_one(self, item: BatchRequest, done: LineResult | None, todo: list[BatchRequest]) -> None:
        if done is not None and done.request is not None and done.request != item.digest and done.state in SENT:
            message = (
                f"an earlier run sent another request under the id {item.id!r} (its digest {done.request[:16]}…, this line's "
                f"{item.digest[:16]}…): the service would answer with that job; give this line a new id"
            )
            # The entry keeps what the service holds under the id (its job and digest), not this line's request.
            kept = LineResult(item.line, item.id, "changed", job=done.job, request=done.request, error={"code": "changedRequest", "message": message})
            self.finish(kept)
        elif done is not None and done.state == "succeeded" and done.files and all((self.config.out / f).exists() for f in done.files):
            self.finish(replace(done, line=item.line, reused=True, request=done.request or item.digest), "skipped")
        else:
            todo.append(item)

    async def run_line(self, request: BatchRequest) -> LineResult:
        """Submit (unless the service has the job already), wait, download."""
        line = request.line
        try:
            job_id = await self._submit(request)
            operation = await wait(
                self.http, job_id, poll_interval=self.config.poll_interval, api_version=self.config.api_version,
                on_status=lambda s: self.moved(line, FROM_SERVICE.get(s, s)), timeout=self.config.timeout,
            )
            # Files are named by the line's id, whatever the service calls the job.
            files = await download(self.http, replace(operation, id=request.id), self.config.out, pause=self.config.poll_interval)
        except JobError as exc:
            if exc.refused:  # refused before a job was made: the id is free for a corrected line
                return LineResult(line, request.id, "invalid", error=exc.error)
            return LineResult(line, request.id, "failed", error=exc.error, request=request.digest)
        except Exception as exc:  # a broken connection, a timeout, an answer that is not what the service gives
            return LineResult(line, request.id, "failed", error={"code": type(exc).__name__, "message": _safe(str(exc))}, request=request.digest)
        return self._succeeded(request, operation, files)

    async def _submit(self, request: BatchRequest) -> str:
        """Submit unless known; the id of the job to poll (HTTP: the service's; the queue: the message's ``id``)."""
        if self.queue is None:
            accepted = await submit(self.http, request, api_version=self.config.api_version, pause=self.config.poll_interval)
            job = accepted.id
        else:
            # On the queue, a known job is not sent again: a second message would only be skipped by the service.
            if await status(self.http, request.id, api_version=self.config.api_version, pause=self.config.poll_interval) is None:
                await self.queue.send(request)
            job = request.id
        # What this id asked, kept the moment the service has it: a rerun after an interruption knows it too.
        self._write(LineResult(request.line, request.id, "submitted", job=job, request=request.digest))
        self.moved(request.line, "submitted")
        return job

    def _succeeded(self, request: BatchRequest, operation: Operation, files: list[Path]) -> LineResult:
        result = operation.view.get("result") or {}
        return LineResult(
            request.line,
            request.id,
            "succeeded",
            files=[f.name for f in files],
            job=operation.id,
            request=request.digest,
            links=operation.links(self.config.endpoint),
            usage=result.get("usage"),
            cost=result.get("cost"),
        )

    def close(self, completed: bool) -> None:
        """A run that completed rewrites results.jsonl: one entry per line, in file order."""
        self._log.close()
        if completed:
            lines = [json.dumps(r.to_json(), ensure_ascii=False) for r in sorted(self.results, key=lambda r: r.line)]
            (self.config.out / RESULTS).write_text("".join(f"{text}\n" for text in lines), encoding="utf-8", errors="backslashreplace")
        self.reporter.close(self.tally)


async def run_batch(
    path: Path,
    config: BatchConfig,
    http: httpx.AsyncClient,
    *,
    queue: QueueSubmitter | None = None,
    reporter: Reporter | None = None,
    tally: Tally | None = None,
) -> list[LineResult]:
    """Run every line of ``path``; returns one result per line, in file order. Cancelling it keeps
    what finished in results.jsonl; running it again carries on."""
    batch = Batch(config, http, queue, reporter or SilentReporter(), tally or Tally())
    completed = False
    try:
        gate = asyncio.Semaphore(config.concurrency)

        async def one(request: BatchRequest) -> None:
            async with gate:
                batch.finish(await batch.run_line(request))

        async with asyncio.TaskGroup() as group:  # cancelling the run cancels every line in flight
            for request in batch.plan(path):
                group.create_task(one(request))
        completed = True
    finally:
        batch.close(completed)
    return sorted(batch.results, key=lambda r: r.line)


def failed(results: list[LineResult]) -> bool:
    """True when any line failed, was invalid or changed under an id an earlier run sent (the command then exits non-zero)."""
    return any(r.state in FAILURES for r in results)
