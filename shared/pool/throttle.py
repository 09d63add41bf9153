"""What every instance knows about each backend's quota: recent calls and a live Retry-After, shared through storage.

A scaled-out app has many instances, and each would otherwise discover the same 429s on
its own. Each backend has one small blob, ``_throttle/<pool>/<index>`` in the jobs container
(no ``.json`` suffix: the gallery lists the container's ``*.json`` as jobs), holding
``{"retry_until": epoch seconds, "calls": [epoch seconds, ...]}``.

- A call is *reserved* before it is sent: the reservation is an ETag-guarded write, so two
  instances never both take the last slot of a window (the loser re-reads and decides again).
- A call that cannot go now may *book* the earliest moment with room: the booking is a call
  stamped in the future. Counting every recorded call after ``t - window`` (future ones too)
  before adding one at ``t`` keeps each window under its quota whatever the order of bookings,
  and makes waiters a queue: each holds its own moment instead of all waking for the first
  free one and all but one going back to sleep.
- A 429 writes ``retry_until``; every instance skips the backend until then. The refused call's
  reservation is handed back: upstream does not count a throttled request, and a board that did would
  keep a slot of the window empty (a whole window lost for the call that needed it).
- Reads are cached for :data:`CACHE_SECONDS` (what others learn is seen within about a
  second); a failed reservation always re-reads.

A backend's quota is ``rpm`` requests a minute, and, as Azure enforces it over short
intervals, at most ``ceil(rpm / 6)`` in any 10 seconds. Time is epoch seconds from an
injectable clock (instances share it; tests move it).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import ContainerClient

from shared.errors import storage_call

CACHE_SECONDS = 1.0
MINUTE = 60.0
SHORT_WINDOW = 10.0
# Our clock stamps a call before it is sent; upstream counts it when it arrives. A little slack
# keeps a call that left late in one window from landing early in upstream's next.
SLACK_SECONDS = 0.1
PREFIX = "_throttle"
_CONFLICT_ROUNDS = 20


@dataclass
class BackendState:
    """One backend's shared state: recent calls (epoch seconds) and the end of its Retry-After."""

    retry_until: float = 0.0
    calls: list[float] = field(default_factory=list)

    @staticmethod
    def limits(rpm: int) -> tuple[tuple[float, int], ...]:
        """(window seconds, calls allowed in it): the minute's quota and its 10-second share."""
        return ((MINUTE + SLACK_SECONDS, rpm), (SHORT_WINDOW + SLACK_SECONDS, max(1, math.ceil(rpm * SHORT_WINDOW / MINUTE))))

    def headroom(self, rpm: int, now: float) -> int:
        """Calls that may be sent now (0 during a Retry-After)."""
        if self.retry_until > now:
            return 0
        return min(allowed - sum(1 for t in self.calls if t > now - window) for window, allowed in self.limits(rpm))

    def available_at(self, rpm: int, now: float) -> float:
        """The earliest moment a call may be sent (``now`` when it may be sent now)."""
        at = max(now, self.retry_until)
        for window, allowed in self.limits(rpm):
            recent = sorted(t for t in self.calls if t > now - window)
            if len(recent) >= allowed:
                at = max(at, recent[len(recent) - allowed] + window)
        return at

    def to_json(self, now: float) -> bytes:
        kept = [round(t, 3) for t in self.calls if t > now - MINUTE - SLACK_SECONDS]
        return json.dumps({"retry_until": round(self.retry_until, 3), "calls": kept}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> BackendState:
        try:
            raw = json.loads(data)
            return cls(float(raw.get("retry_until", 0.0)), [float(t) for t in raw.get("calls", [])])
        except (ValueError, TypeError, AttributeError):
            return cls()  # unreadable: start again rather than block the backend


def _without(calls: list[float], refused: float | None) -> list[float]:
    """``calls`` less the one stamped ``refused`` (stamps are stored to the millisecond), if it is there."""
    if refused is None:
        return list(calls)
    for i, t in enumerate(calls):
        if abs(t - refused) < 0.001:
            return calls[:i] + calls[i + 1 :]
    return list(calls)


@dataclass
class _Cached:
    state: BackendState
    etag: str | None  # None: the blob does not exist yet
    read_at: float


class ThrottleBoard:
    """The shared state of every backend of this app's pools, read through a short cache."""

    def __init__(self, container: ContainerClient, *, clock: Callable[[], float] = time.time, cache_seconds: float = CACHE_SECONDS) -> None:
        self.container = container
        self.clock = clock
        self.cache_seconds = cache_seconds
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._container_ready = False

    async def state(self, key: str) -> BackendState:
        """The backend's state, from the cache when it is fresh enough."""
        return (await self._entry(key)).state

    async def reserve(self, key: str, rpm: int, *, not_after: float | None = None) -> float | None:
        """Take one call of the backend's quota at the earliest moment it has room, and return that moment.

        Without ``not_after`` only now will do; with it, a moment to come no later than
        ``not_after`` is *booked*: the call counts from then on, so every instance plans around
        it and whoever holds the booking sends at that moment without competing for it. None
        when there is no room by then (decided on a fresh read).
        """
        async with self._lock(key):
            entry, fresh = await self._entry(key), False
            for _ in range(_CONFLICT_ROUNDS):
                now = self.clock()
                at = entry.state.available_at(rpm, now)
                if at > (now if not_after is None else max(now, not_after)):
                    if fresh:
                        return None
                else:
                    state = BackendState(entry.state.retry_until, [*entry.state.calls, at])
                    if await self._write(key, state, entry.etag):
                        return at
                # Full, or another instance wrote first: decide again on what storage says now.
                entry, fresh = await self._read(key), True
            return None

    async def throttled(self, key: str, seconds: float, *, refused: float | None = None) -> None:
        """Record a 429: nobody calls the backend for ``seconds``; the call reserved at ``refused`` is handed back."""
        async with self._lock(key):
            entry = await self._entry(key)
            for _ in range(_CONFLICT_ROUNDS):
                until = self.clock() + seconds
                calls = _without(entry.state.calls, refused)
                if entry.state.retry_until >= until and len(calls) == len(entry.state.calls):
                    return
                if await self._write(key, BackendState(max(until, entry.state.retry_until), calls), entry.etag):
                    return
                entry = await self._read(key)

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _entry(self, key: str) -> _Cached:
        cached = self._cache.get(key)
        if cached is not None and self.clock() - cached.read_at < self.cache_seconds:
            return cached
        return await self._read(key)

    async def _read(self, key: str) -> _Cached:
        async with storage_call("reading a backend's throttle state"):
            try:
                stream = await self.container.download_blob(f"{PREFIX}/{key}")
                data = await stream.readall()
                entry = _Cached(BackendState.from_json(data), stream.properties.etag, self.clock())
            except ResourceNotFoundError:
                entry = _Cached(BackendState(), None, self.clock())
        self._cache[key] = entry
        return entry

    async def _write(self, key: str, state: BackendState, etag: str | None) -> bool:
        """Write if nobody else wrote since ``etag`` (None: if the blob still does not exist); False on a conflict."""
        now = self.clock()
        conditions: dict[str, Any] = (
            {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {"match_condition": MatchConditions.IfMissing}
        )
        async with storage_call("recording a backend's throttle state"):
            try:
                result = await self._upload(key, state.to_json(now), conditions)
            except (ResourceModifiedError, ResourceExistsError):
                return False
        self._cache[key] = _Cached(state, result.get("etag"), now)
        return True

    async def _upload(self, key: str, data: bytes, conditions: dict[str, Any]) -> dict[str, Any]:
        blob = self.container.get_blob_client(f"{PREFIX}/{key}")
        settings = ContentSettings(content_type="application/json")
        for first in (True, False):
            try:
                result: dict[str, Any] = await blob.upload_blob(data, overwrite=True, content_settings=settings, **conditions)
                return result
            except ResourceNotFoundError:
                if self._container_ready or not first:
                    raise
            try:  # the jobs container is made on first use; so may this be the first use
                await self.container.create_container()
            except ResourceExistsError:
                pass
            self._container_ready = True
        raise AssertionError("unreachable")
