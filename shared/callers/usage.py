"""``GET /usage``: a caller's images, cost and tokens per deployment for a day, summed from the records.

Read through the index (shared/index): each record has an entry under the caller and its day,
whose summary is what the final record says (written when the record was, or repaired from the
record by the first reader that found it missing). A record counts on the day its entry names: a
synchronous generation's day, a job's day of acceptance. What counts:

- ``requests``, ``images``, ``cost_usd`` and the tokens of each succeeded generation or edit
  (``unpriced``: those whose family has no price, so ``cost_usd`` leaves them out);
- ``failed``: calls that failed (a synchronous call's failure record, a failed job): they made no
  image to count, though upstream may have billed the work (the budget charges it, shared/callers/ledger.py);
- ``pending``: jobs not ended yet.

So that a busy day does not make every ``/usage`` list all of its entries, each caller's day has a
*checkpoint* (``_usage/<day>/<caller key>``, ETag-guarded): the sums of its entries up to one entry
(``through``), and the entries before it that were not final yet (``open``). Entries are named
newest first, so a reader lists only those newer than ``through`` (a page, usually), looks again at
the open ones, adds their summaries to the checkpoint's sums, and moves the checkpoint on. Only
entries older than :data:`SETTLED_SECONDS` go into a checkpoint: an entry appears within moments of
its own time (clocks of instances disagree by less than that), and a summary is cleared again only
right after it was written (an archive that failed), so what a checkpoint holds no longer changes
but for its open entries. An operator may ask for one caller or for all of them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from shared.errors import ServiceError, storage_call
from shared.etagged import SharedBlobs
from shared.index import IndexReader, Listed, Summary, caller_key
from shared.index.entries import parse_listed
from shared.index.records import IndexedRecords

CONCURRENCY = 8  # callers listed, or records read for a missing summary, at once
SETTLED_SECONDS = 900.0  # longer than a call and its archive take, and than instances' clocks disagree
CHECKPOINTS = "_usage"
FRESH_PAGE = 16  # entries newer than a checkpoint are few: the first page is small (the next ones grow)
_FIELDS = ("requests", "images", "cost_usd", "unpriced", "input_tokens", "output_tokens", "total_tokens", "failed", "pending")


@dataclass
class Totals:
    """What a caller's (or everyone's) records of a day add up to, for one deployment or all."""

    requests: int = 0
    images: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    failed: int = 0
    pending: int = 0

    def add(self, summary: Summary | None) -> None:
        if summary is None:
            self.pending += 1
        elif summary.outcome == "failed":
            self.failed += 1
        elif summary.outcome == "succeeded":
            self.requests += 1
            self.images += summary.images
            if summary.usd is None:
                self.unpriced += 1
            else:
                self.cost_usd += summary.usd
            self.input_tokens += summary.input_tokens
            self.output_tokens += summary.output_tokens
            self.total_tokens += summary.total_tokens

    def merge(self, other: Totals) -> None:
        for name in _FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def view(self) -> dict[str, Any]:
        return {name: round(self.cost_usd, 6) if name == "cost_usd" else getattr(self, name) for name in _FIELDS}


@dataclass
class Report:
    """Totals per deployment (the whole is their sum)."""

    deployments: dict[str, Totals] = field(default_factory=dict)

    def add(self, listed: Listed, summary: Summary | None) -> None:
        if summary is not None and summary.outcome == "none":
            return  # an entry whose record never came
        self.deployments.setdefault(listed.deployment, Totals()).add(summary)

    def merge(self, other: Report) -> None:
        for name, totals in other.deployments.items():
            self.deployments.setdefault(name, Totals()).merge(totals)

    def view(self) -> dict[str, Any]:
        total = Totals()
        for totals in self.deployments.values():
            total.merge(totals)
        return {"total": total.view(), "deployments": {name: t.view() for name, t in sorted(self.deployments.items())}}

    @classmethod
    def of(cls, raw: Any) -> Report:
        deployments = raw if isinstance(raw, dict) else {}
        return cls({str(name): Totals(**{k: v for k, v in t.items() if k in _FIELDS}) for name, t in deployments.items() if isinstance(t, dict)})


@dataclass
class Checkpoint:
    """A caller's day summed up to the entry ``through`` (None: nothing yet), but for its ``open`` entries."""

    through: str | None = None
    reports: dict[str, Report] = field(default_factory=dict)  # caller id -> its sums (one, but for a key collision)
    open: list[str] = field(default_factory=list)  # entry names counted in no sum yet

    def to_json(self) -> bytes:
        reports = {who: {name: t.__dict__ for name, t in r.deployments.items()} for who, r in self.reports.items()}
        return json.dumps({"through": self.through, "reports": reports, "open": self.open}).encode()

    @classmethod
    def from_json(cls, data: bytes | None) -> Checkpoint:
        try:
            raw = json.loads(data) if data else {}
            reports = {str(who): Report.of(r) for who, r in raw.get("reports", {}).items()}
            return cls(raw.get("through"), reports, [str(name) for name in raw.get("open", [])])
        except (ValueError, TypeError, AttributeError):
            return cls()  # unreadable: count the day again


class Usage:
    """Sums callers' days through the index, their checkpoints and (for entries without a summary) the records."""

    def __init__(self, reader: IndexReader, records: IndexedRecords, jobs: ContainerClient, *, clock: Callable[[], float] = time.time) -> None:
        self.reader = reader
        self.records = records
        self.jobs = jobs
        self.clock = clock
        self.checkpoints = SharedBlobs(jobs, CHECKPOINTS, clock=clock, cache_seconds=0.0, what="a usage checkpoint")
        self.gate = asyncio.Semaphore(CONCURRENCY)

    async def of(self, day: str, caller_id: str | None) -> dict[str, Any]:
        """The usage of ``caller_id`` on ``day``, or of every caller (None): ``{object, day, caller, total, deployments[, callers]}``."""
        keys = [caller_key(caller_id)] if caller_id is not None else await self.reader.callers(day)
        found = await asyncio.gather(*(self._caller_day(key, day) for key in keys))
        whole, callers = Report(), {}
        for reports in found:
            for owner, report in reports.items():
                if caller_id is None or owner == caller_id:
                    whole.merge(report)
                    callers[owner] = report.view()
        view: dict[str, Any] = {"object": "usage", "day": day, "caller": caller_id or "all", **whole.view()}
        if caller_id is None:
            view["callers"] = dict(sorted(callers.items()))
        return view

    async def _caller_day(self, key: str, day: str) -> dict[str, Report]:
        """One caller key's day: its checkpoint, and what changed since (then the checkpoint moves on)."""
        snapshot = await self.checkpoints.read(f"{day}/{key}")
        checkpoint = Checkpoint.from_json(snapshot.data)
        async with self.gate:
            fresh = [entry async for entry in self._newer(key, day, checkpoint.through)]
        reopened = await self._entries(checkpoint.open)
        summaries = await self._summaries([*fresh, *reopened])
        now = {who: _copy(report) for who, report in checkpoint.reports.items()}
        for entry in [*fresh, *reopened]:
            now.setdefault(entry.caller_id, Report()).add(entry, summaries[entry.name])
        moved = self._moved(checkpoint, fresh, reopened, summaries)
        if moved.through != checkpoint.through or moved.open != checkpoint.open:
            await self._save(f"{day}/{key}", moved, snapshot.etag)
        return now

    def _moved(self, checkpoint: Checkpoint, fresh: list[Listed], reopened: list[Listed], summaries: dict[str, Summary | None]) -> Checkpoint:
        """The next checkpoint: the open entries and the settled fresh ones added, ``through`` the newest settled entry."""
        settled_before = self.clock() * 1000 - SETTLED_SECONDS * 1000
        settled = [entry for entry in fresh if entry.at_ms < settled_before]
        moved = Checkpoint(settled[0].name if settled else checkpoint.through, {who: _copy(r) for who, r in checkpoint.reports.items()})
        for entry in [*reopened, *settled]:
            summary = summaries[entry.name]
            if summary is None:
                moved.open.append(entry.name)
            else:
                moved.reports.setdefault(entry.caller_id, Report()).add(entry, summary)
        return moved

    async def _newer(self, key: str, day: str, through: str | None) -> Any:
        """The entries of the day newer than ``through`` (all, without a checkpoint), newest first."""
        async for entry in self.reader.day(key, day, page=FRESH_PAGE if through else None):
            if through is not None and entry.name >= through:
                return
            yield entry

    async def _entries(self, names: Iterable[str]) -> list[Listed]:
        async def one(name: str) -> Listed | None:
            async with self.gate, storage_call("reading an index entry"):
                try:
                    properties = await self.jobs.get_blob_client(name).get_blob_properties()
                except ResourceNotFoundError:
                    return None  # the retention rule took it (with its record)
            return parse_listed(name, properties.metadata)

        return [entry for entry in await asyncio.gather(*(one(name) for name in names)) if entry is not None]

    async def _summaries(self, listed: list[Listed]) -> dict[str, Summary | None]:
        async def one(entry: Listed) -> Summary | None:
            if entry.summary is not None:
                return entry.summary
            async with self.gate:
                return await self.records.summary(entry)

        found = await asyncio.gather(*(one(entry) for entry in listed))
        return {entry.name: summary for entry, summary in zip(listed, found, strict=True)}

    async def _save(self, key: str, checkpoint: Checkpoint, etag: str | None) -> None:
        try:
            await self.checkpoints.write(key, checkpoint.to_json(), etag)  # lost to another reader: theirs is as good
        except ServiceError:
            pass  # the answer stands; the next reader lists a little more


def _copy(report: Report) -> Report:
    copied = Report()
    copied.merge(report)
    return copied
