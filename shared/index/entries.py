"""Index entries: their names, what they carry, and writing them.

An entry is an empty blob in the jobs container whose name says whose record it points at, on
which day, when, and where the record is::

    _index/<caller key>/<day>/<inverted ms>.<prefix>.<id>.<caller key>
    _index/~all/<day>/<inverted ms>.<prefix>.<id>.<caller key>

- ``caller key``: the first 32 hex digits of the SHA-256 of the caller's id (``mode:principal``),
  so any id makes a safe name; the id itself is in the entry's metadata;
- ``inverted ms``: 9999999999999 less the entry's time in epoch milliseconds, 13 digits, so a
  listing (which storage returns in name order) comes newest first;
- ``prefix`` and ``id``: a synchronous generation's record is ``{prefix}/{id}/record.json`` in the
  images container (the prefix is its day); a job's (prefix ``jobs``) is ``{id}.json`` in the jobs
  container, its images' record ``jobs/{id}/record.json``.

The ``~all`` entry lets an operator's view of a day list every caller's in time order; the caller's
own entry also carries the record's *summary* once the record is final (outcome, images, cost,
tokens), which ``/usage`` sums without reading the records. Metadata is ASCII: text values are
percent-encoded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from shared.archive import ensure_container
from shared.errors import ServiceError, storage_call
from shared.etagged import SharedBlobs

PREFIX = "_index"
_NOTE_ROUNDS = 20
ALL = "~all"
UNKNOWN_CALLER = "unknown:unknown"  # whose a record is when it names no caller this app vouched for (written before callers were known)
_INVERT = 9_999_999_999_999
_LEAF = re.compile(r"([0-9]{13})\.(jobs|[0-9]{4}-[0-9]{2}-[0-9]{2})\.([A-Za-z0-9][A-Za-z0-9_-]{0,63})\.([0-9a-f]{32})")
Outcome = Literal["succeeded", "failed", "none"]
_OUTCOMES: dict[str, Outcome] = {"succeeded": "succeeded", "failed": "failed", "none": "none"}


def caller_key(caller_id: str) -> str:
    """The name part of a caller: 32 hex digits of the SHA-256 of its id."""
    return hashlib.sha256(caller_id.encode("utf-8")).hexdigest()[:32]


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)


def ms_of(moment: dt.datetime) -> int:
    """Epoch milliseconds of an aware moment, exactly (what an entry's name holds)."""
    return (moment - _EPOCH) // _MS


def ms_of_iso(value: object) -> int | None:
    """Epoch milliseconds of an ISO 8601 moment as records write it; None for anything else."""
    try:
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return ms_of(moment) if moment is not None and moment.tzinfo is not None else None


def day_of_ms(at_ms: int) -> str:
    return (_EPOCH + at_ms * _MS).date().isoformat()


@dataclass(frozen=True)
class Summary:
    """What a final record says for ``/usage``: its outcome, images, cost (None: not priced) and tokens."""

    outcome: Outcome
    images: int = 0
    usd: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def metadata(self) -> dict[str, str]:
        usd = "" if self.usd is None else f"{self.usd:.6f}"
        return {
            "outcome": self.outcome, "images": str(self.images), "usd": usd,
            "intokens": str(self.input_tokens), "outtokens": str(self.output_tokens), "tokens": str(self.total_tokens),
        }  # fmt: skip

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> Summary | None:
        outcome = _OUTCOMES.get(meta.get("outcome", ""))
        if outcome is None:
            return None
        usd = meta.get("usd", "")
        try:
            return cls(outcome, _int(meta.get("images")), float(usd) if usd else None, _int(meta.get("intokens")), _int(meta.get("outtokens")), _int(meta.get("tokens")))
        except ValueError:
            return None


def _int(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


@dataclass(frozen=True)
class Entry:
    """One record in the index: whose, where, when (epoch ms), and for which deployment."""

    caller_id: str
    prefix: str  # a day (synchronous generations) or "jobs"
    id: str
    at_ms: int
    deployment: str = ""

    @property
    def key(self) -> str:
        return caller_key(self.caller_id)

    @property
    def day(self) -> str:
        """The day it is listed under: a synchronous generation's prefix, a job's day of acceptance."""
        return self.prefix if self.prefix != "jobs" else day_of_ms(self.at_ms)

    @property
    def leaf(self) -> str:
        return f"{_INVERT - self.at_ms:013d}.{self.prefix}.{self.id}.{self.key}"

    @property
    def name(self) -> str:
        """The caller's entry (the one with the summary)."""
        return f"{PREFIX}/{self.key}/{self.day}/{self.leaf}"

    @property
    def all_name(self) -> str:
        """The entry in the operators' list of the day."""
        return f"{PREFIX}/{ALL}/{self.day}/{self.leaf}"

    def metadata(self, summary: Summary | None = None) -> dict[str, str]:
        meta = {"caller": quote(self.caller_id, safe=""), "deployment": quote(self.deployment, safe="")}
        return meta | (summary.metadata() if summary else {})


@dataclass(frozen=True)
class Listed:
    """An entry as a listing finds it: where its record is, and its metadata."""

    name: str
    at_ms: int
    prefix: str
    id: str
    key: str
    caller_id: str
    deployment: str
    summary: Summary | None

    @property
    def is_job(self) -> bool:
        return self.prefix == "jobs"

    @property
    def entry(self) -> Entry:
        return Entry(self.caller_id, self.prefix, self.id, self.at_ms, self.deployment)


def parse_listed(name: str, metadata: Mapping[str, str] | None) -> Listed | None:
    """A listed blob as an entry; None for a name this index does not write."""
    found = _LEAF.fullmatch(name.rpartition("/")[2])
    if found is None:
        return None
    inverted, prefix, item_id, key = found.groups()
    meta = metadata or {}
    caller = unquote(meta.get("caller", ""))
    return Listed(name, _INVERT - int(inverted), prefix, item_id, key, caller, unquote(meta.get("deployment", "")), Summary.from_metadata(meta))


DAYS = "_days"  # _days/<caller key or ~all>: a JSON list of the days a view has entries on
DAY_CALLERS = "_daycallers"  # _daycallers/<day>: a JSON list of the caller keys with entries that day


def _with(data: bytes | None, value: str) -> bytes | None:
    """The JSON list ``data`` with ``value`` added; None when it holds it already."""
    try:
        found = json.loads(data) if data else []
    except ValueError:
        found = []  # unreadable: written again whole
    values = {str(v) for v in found} if isinstance(found, list) else set()
    return None if value in values else json.dumps(sorted(values | {value})).encode()


class RecordIndex:
    """Writes entries (before their records) and their summaries (once the records are final)."""

    def __init__(self, container: ContainerClient) -> None:
        self.container = container
        self._ready = False
        self._days = SharedBlobs(container, DAYS, clock=time.time, cache_seconds=60.0, what="the index's days")
        self._callers = SharedBlobs(container, DAY_CALLERS, clock=time.time, cache_seconds=60.0, what="the index's callers of a day")
        self._noted: set[tuple[str, str]] = set()  # (caller key, day) this instance noted in both lists

    async def add(self, entry: Entry, summary: Summary | None = None) -> None:
        """Write both names of ``entry`` (again: the same content, so a repeat is harmless); ``summary`` when the
        record it points at is final already. The first entry of a caller's day in this instance also notes the day
        in the caller's and everyone's list of days, and the caller in the day's list of callers (ETag-guarded)."""
        await self._ensure()
        writes = [self._put(entry.name, entry.metadata(summary)), self._put(entry.all_name, entry.metadata())]
        noted = (entry.key, entry.day) in self._noted
        if not noted:
            writes += [self._note(self._days, entry.key, entry.day), self._note(self._days, ALL, entry.day), self._note(self._callers, entry.day, entry.key)]
        async with storage_call("indexing a record"):
            await asyncio.gather(*writes)
        self._noted.add((entry.key, entry.day))

    async def _note(self, lists: SharedBlobs, name: str, value: str) -> None:
        """Add ``value`` to the list ``name`` unless it holds it; another instance's write first: read again, decide again."""
        snapshot = await lists.cached(name)
        for _ in range(_NOTE_ROUNDS):
            changed = _with(snapshot.data, value)
            if changed is None or await lists.write(name, changed, snapshot.etag):
                return
            snapshot = await lists.read(name)
        raise ServiceError(503, "StorageUnavailable", "The index's lists changed on every try; retry.", transient=True)

    async def summarize(self, entry: Entry, summary: Summary | None) -> None:
        """Set (or, with None, clear) the summary on the caller's entry; rewrites the entry if it went missing."""
        meta = entry.metadata(summary)
        async with storage_call("summarizing an indexed record"):
            try:
                await self.container.get_blob_client(entry.name).set_blob_metadata(meta)
            except ResourceNotFoundError:
                await self._put(entry.name, meta)

    async def remove(self, entry: Entry) -> None:
        """Delete both names (an entry whose record will never exist); best effort."""
        for name in (entry.name, entry.all_name):
            try:
                await self.container.delete_blob(name)
            except AzureError:  # gone already, or storage refused: a stray entry only costs its readers a look
                pass

    async def _put(self, name: str, metadata: dict[str, Any]) -> None:
        await self.container.upload_blob(name, b"", overwrite=True, metadata=metadata)

    async def _ensure(self) -> None:
        if not self._ready:
            await ensure_container(self.container, "jobs")
            self._ready = True
