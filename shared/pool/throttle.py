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

from azure.storage.blob.aio import ContainerClient

from shared.etagged import SharedBlobs, Snapshot

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


class ThrottleBoard:
    """The shared state of every backend of this app's pools, read through a short cache."""

    def __init__(self, container: ContainerClient, *, clock: Callable[[], float] = time.time, cache_seconds: float = CACHE_SECONDS) -> None:
        self.blobs = SharedBlobs(container, PREFIX, clock=clock, cache_seconds=cache_seconds, what="a backend's throttle state")
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    async def state(self, key: str) -> BackendState:
        """The backend's state, from the cache when it is fresh enough."""
        return _state(await self.blobs.cached(key))

    async def reserve(self, key: str, rpm: int, *, not_after: float | None = None) -> float | None:
        """Take one call of the backend's quota at the earliest moment it has room, and return that moment.

        Without ``not_after`` only now will do; with it, a moment to come no later than
        ``not_after`` is *booked*: the call counts from then on, so every instance plans around
        it and whoever holds the booking sends at that moment without competing for it. None
        when there is no room by then (decided on a fresh read).
        """
        async with self._lock(key):
            snapshot, fresh = await self.blobs.cached(key), False
            for _ in range(_CONFLICT_ROUNDS):
                now, state = self.clock(), _state(snapshot)
                at = state.available_at(rpm, now)
                if at > (now if not_after is None else max(now, not_after)):
                    if fresh:
                        return None
                elif await self.blobs.write(key, BackendState(state.retry_until, [*state.calls, at]).to_json(now), snapshot.etag):
                    return at
                # Full, or another instance wrote first: decide again on what storage says now.
                snapshot, fresh = await self.blobs.read(key), True
            return None

    async def throttled(self, key: str, seconds: float, *, refused: float | None = None) -> None:
        """Record a 429: nobody calls the backend for ``seconds``; the call reserved at ``refused`` is handed back."""
        async with self._lock(key):
            snapshot = await self.blobs.cached(key)
            for _ in range(_CONFLICT_ROUNDS):
                now, state = self.clock(), _state(snapshot)
                until = now + seconds
                calls = _without(state.calls, refused)
                if state.retry_until >= until and len(calls) == len(state.calls):
                    return
                if await self.blobs.write(key, BackendState(max(until, state.retry_until), calls).to_json(now), snapshot.etag):
                    return
                snapshot = await self.blobs.read(key)

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())


def _state(snapshot: Snapshot) -> BackendState:
    return BackendState.from_json(snapshot.data) if snapshot.data is not None else BackendState()
