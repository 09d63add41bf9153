"""A whole file of requests: submit each line as a background job, wait, download, record.

Resumable by construction: every line's job id comes from the line (client.lines), the
service treats a known id as the job it already has, and ``results.jsonl`` in the output
folder remembers which lines already have their images, so a second run skips them and
picks up the rest (including jobs submitted by a run that was interrupted).
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
FAILURES = ("failed", "invalid")


@dataclass
class LineResult:
    """How one line ended: one entry of results.jsonl."""

    line: int
    id: str | None  # the line's id (the Idempotency-Key, and the name of its files)
    state: str  # succeeded | failed | invalid | duplicate
    job: str | None = None  # the service's job id (it scopes keys by deployment and caller)
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
    """What earlier runs recorded, by id (the last entry of an id wins)."""
    found: dict[str, LineResult] = {}
    path = out / RESULTS
    if not path.exists():
        return found
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(text)
            result = LineResult(**{k: v for k, v in entry.items() if k in LineResult.__dataclass_fields__})
        except (ValueError, TypeError):
            continue  # a line cut short by an interrupted run
        if result.id:
            found[result.id] = result
    return found


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
        self._log = (config.out / RESULTS).open("a", encoding="utf-8")

    def finish(self, result: LineResult, state: str | None = None) -> None:
        """Record a line's end: appended to results.jsonl at once, so an interrupted run loses nothing."""
        self.results.append(result)
        self._log.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
        self._log.flush()
        self.tally.set(result.line, state or result.state)
        self.reporter.finished(result, self.tally)

    def moved(self, line: int, state: str) -> None:
        """A line changed state."""
        self.tally.set(line, state)
        self.reporter.changed(self.tally)

    def plan(self, path: Path) -> list[BatchRequest]:
        """Read the file: invalid, duplicate and already-done lines end here; the rest are returned."""
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
                self.finish(LineResult(item.line, item.id, "duplicate", error={"code": "duplicate", "message": f"the same request as line {first[item.id]}"}))
            else:
                first[item.id] = item.line
                done = previous.get(item.id)
                if done is not None and done.state == "succeeded" and done.files and all((self.config.out / f).exists() for f in done.files):
                    self.finish(LineResult(**{**asdict(done), "line": item.line, "reused": True}), "skipped")
                else:
                    todo.append(item)
        self.reporter.changed(self.tally)
        return todo

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
            return LineResult(line, request.id, "invalid" if exc.refused else "failed", error=exc.error)
        except (httpx.HTTPError, TimeoutError) as exc:
            return LineResult(line, request.id, "failed", error={"code": type(exc).__name__, "message": _safe(str(exc))})
        return self._succeeded(request, operation, files)

    async def _submit(self, request: BatchRequest) -> str:
        """Submit unless known; the id of the job to poll (HTTP: the service's; the queue: the message's ``id``)."""
        if self.queue is None:
            accepted = await submit(self.http, request, api_version=self.config.api_version, pause=self.config.poll_interval)
            self.moved(request.line, FROM_SERVICE.get(accepted.status, "submitted"))
            return accepted.id
        # On the queue, a known job is not sent again: a second message would only be skipped by the service.
        if await status(self.http, request.id, api_version=self.config.api_version, pause=self.config.poll_interval) is None:
            await self.queue.send(request)
        self.moved(request.line, "submitted")
        return request.id

    def _succeeded(self, request: BatchRequest, operation: Operation, files: list[Path]) -> LineResult:
        result = operation.view.get("result") or {}
        return LineResult(
            request.line,
            request.id,
            "succeeded",
            files=[f.name for f in files],
            job=operation.id,
            links=operation.links(self.config.endpoint),
            usage=result.get("usage"),
            cost=result.get("cost"),
        )

    def close(self, completed: bool) -> None:
        """A run that completed rewrites results.jsonl: one entry per line, in file order."""
        self._log.close()
        if completed:
            lines = [json.dumps(r.to_json(), ensure_ascii=False) for r in sorted(self.results, key=lambda r: r.line)]
            (self.config.out / RESULTS).write_text("".join(f"{text}\n" for text in lines), encoding="utf-8")
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
    """True when any line failed or was invalid (the command then exits non-zero)."""
    return any(r.state in FAILURES for r in results)
