"""The budget ledger: what each caller spent on a day and holds in flight, shared by every instance through storage.

One small blob per caller and UTC day, ``_budgets/<day>/<caller key>`` in the jobs container,
updated as the pool's throttle board is (shared/etagged.py: ETag-guarded writes, a loser re-reads
and decides again), so two instances never both grant the last of a caller's budget::

    {"spent": 1.234567, "images": 12,
     "calls": {"<reservation>": [epoch seconds, images], ...},          # the last minute's
     "held": {"<reservation>": [usd, images, epoch seconds, until], ...}}  # granted, not settled

- **reserve** (before the upstream call): the request's worst case (:func:`shared.pricing.worst_case`)
  is granted only if the images of the last 60 seconds plus its ``n`` fit the minute limit and
  the day's spend plus everything held plus its worst case fit the day's; it is then held.
- **settle** (after upstream answered): the hold becomes what the images cost (upstream's usage);
  **release** (upstream provably did no work): the hold and its images are dropped. Both go to
  the day the hold was granted on, even after midnight.
- A hold nobody settles (the instance died between the two) expires at its ``until`` (the call's
  deadline and a margin) and is then charged at its worst case: upstream may have made and billed
  the images, and nobody can say it did not. It never blocks the budget past that.

A day's first reservation carries the last minute's calls over from the day before, so the minute
limit holds across midnight. A blob a day (rather than one a caller) also lives well with the
templates' lifecycle rule, which deletes blobs some days after they were *created*.

So a caller overspends its day by at most what it has in flight beyond the worst case (a price
table that undercounts); ``/usage`` sums the records themselves (shared/callers/usage.py), which
agree with the ledger but for holds that expired.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from azure.storage.blob.aio import ContainerClient

from shared.callers.limits import Limits
from shared.errors import ServiceError
from shared.etagged import SharedBlobs

PREFIX = "_budgets"
WINDOW = 60.0
CACHE_SECONDS = 1.0
# A day's budget held by calls in flight frees when they settle: come back after about this long.
HELD_RETRY_SECONDS = 15.0
_CONFLICT_ROUNDS = 20


def utc_day(now: float) -> str:
    """The UTC day of an epoch time, as records and ``/usage`` spell it."""
    return dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()


def seconds_to_midnight(now: float) -> float:
    """Seconds until the next UTC day begins."""
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    midnight = dt.datetime.combine(moment.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    return (midnight - moment).total_seconds()


@dataclass
class Held:
    """A granted reservation: its worst case, its images, when it was granted, and when it expires."""

    usd: float
    images: int
    at: float
    until: float


@dataclass
class Book:
    """One caller's ledger of one day, as stored."""

    spent: float = 0.0
    images: int = 0
    calls: dict[str, tuple[float, int]] = field(default_factory=dict)
    held: dict[str, Held] = field(default_factory=dict)

    def current(self, now: float) -> Book:
        """As of ``now``: expired holds are charged, calls older than a minute leave."""
        book = Book(self.spent, self.images, {rid: call for rid, call in self.calls.items() if call[0] > now - WINDOW}, dict(self.held))
        for rid, hold in list(book.held.items()):
            if hold.until <= now:
                del book.held[rid]
                book.spent += hold.usd
                book.images += hold.images
        return book

    def held_usd(self) -> float:
        return sum(h.usd for h in self.held.values())

    def in_window(self) -> int:
        return sum(n for _, n in self.calls.values())

    def minute_free_at(self, now: float, images: int, limit: int) -> float:
        """The earliest moment ``images`` more fit the minute (``now`` when they fit now)."""
        excess = self.in_window() + images - limit
        if excess <= 0:
            return now
        for at, n in sorted(self.calls.values()):
            excess -= n
            if excess <= 0:
                return at + WINDOW
        return math.inf  # more than the limit on its own: never

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "spent": round(self.spent, 6),
                "images": self.images,
                "calls": {rid: [round(t, 3), n] for rid, (t, n) in self.calls.items()},
                "held": {rid: [round(h.usd, 6), h.images, round(h.at, 3), round(h.until, 3)] for rid, h in self.held.items()},
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Book:
        try:
            raw = json.loads(data)
            calls = {str(rid): (float(t), int(n)) for rid, (t, n) in raw.get("calls", {}).items()}
            held = {str(rid): Held(float(u), int(n), float(a), float(until)) for rid, (u, n, a, until) in raw.get("held", {}).items()}
            return cls(float(raw.get("spent", 0.0)), int(raw.get("images", 0)), calls, held)
        except (ValueError, TypeError, AttributeError, KeyError):
            return cls()  # unreadable: start the day again rather than refuse every call


@dataclass(frozen=True)
class Standing:
    """Where a caller stands against its limits after a decision (what the x-ratelimit-* headers say)."""

    limits: Limits
    images_used: int
    images_reset: float  # seconds until the oldest image of the window leaves it (0: none in it)
    usd_used: float  # spent today plus held
    usd_reset: float  # seconds until the UTC day ends


@dataclass(frozen=True)
class Decision:
    """A reservation granted (``rid``), or refused: which limit, how long to wait, and whether waiting can help."""

    standing: Standing
    rid: str | None = None
    day: str = ""  # the day the hold is on (its book)
    refused: Literal["minute", "day"] | None = None
    wait: float = 0.0
    final: bool = False  # True: waiting this minute (or for holds to settle) cannot make room


def decide(book: Book, limits: Limits, usd: float, images: int, now: float, ttl: float) -> tuple[Decision, Book | None]:
    """Grant ``usd`` and ``images`` against ``book`` (as of ``now``) or say why not: the decision, and the book to write if granted."""
    book = book.current(now)
    if limits.images_per_minute is not None:
        free_at = book.minute_free_at(now, images, limits.images_per_minute)
        if free_at > now:
            final = math.isinf(free_at)
            return Decision(_standing(book, limits, now), refused="minute", wait=0.0 if final else free_at - now, final=final), None
    if limits.usd_per_day is not None and book.spent + book.held_usd() + usd > limits.usd_per_day + 1e-9:
        final = book.spent + usd > limits.usd_per_day + 1e-9  # even if every hold were released
        wait = seconds_to_midnight(now) if final else min(HELD_RETRY_SECONDS, seconds_to_midnight(now))
        return Decision(_standing(book, limits, now), refused="day", wait=wait, final=final), None
    rid = uuid.uuid4().hex
    book.held[rid] = Held(usd, images, now, now + ttl)
    book.calls[rid] = (now, images)
    return Decision(_standing(book, limits, now), rid=rid), book


def _standing(book: Book, limits: Limits, now: float) -> Standing:
    oldest = min((t for t, _ in book.calls.values()), default=None)
    reset = max(0.0, oldest + WINDOW - now) if oldest is not None else 0.0
    return Standing(limits, book.in_window(), reset, book.spent + book.held_usd(), seconds_to_midnight(now))


class Ledger:
    """Every caller's books, in the jobs container, read through a short cache."""

    def __init__(self, container: ContainerClient, *, clock: Callable[[], float] = time.time, cache_seconds: float = CACHE_SECONDS) -> None:
        self.blobs = SharedBlobs(container, PREFIX, clock=clock, cache_seconds=cache_seconds, what="a caller's budget ledger")
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    async def book(self, caller: str, day: str | None = None) -> Book:
        """The book of ``caller`` (its key) on ``day`` (default today) as storage has it now."""
        now = self.clock()
        snapshot = await self.blobs.read(f"{day or utc_day(now)}/{caller}")
        return (Book.from_json(snapshot.data) if snapshot.data is not None else Book()).current(now)

    async def reserve(self, caller: str, limits: Limits, usd: float, images: int, ttl: float) -> Decision:
        """Hold ``usd`` and ``images`` on today's book for a call about to be sent, for at most ``ttl`` seconds;
        refused only on a fresh read. The decision names the day the hold is on."""
        day = utc_day(self.clock())
        key = f"{day}/{caller}"
        async with self._lock(key):
            snapshot, fresh = await self.blobs.cached(key), False
            for _ in range(_CONFLICT_ROUNDS):
                now = self.clock()
                book = Book.from_json(snapshot.data) if snapshot.data is not None else await self._first_of_day(caller, day)
                decision, changed = decide(book, limits, usd, images, now, ttl)
                if changed is None:
                    if fresh:
                        return replace(decision, day=day)
                elif await self.blobs.write(key, changed.to_json(), snapshot.etag):
                    return replace(decision, day=day)
                snapshot, fresh = await self.blobs.read(key), True
            raise LedgerBusy()

    async def settle(self, caller: str, day: str, rid: str, usd: float | None, images: int | None) -> None:
        """The call ended: charge ``usd`` for ``images`` in place of the hold (None: what the hold holds, its worst case)."""
        await self._change(f"{day}/{caller}", rid, lambda book, hold: _charge(book, rid, hold, usd, images))

    async def release(self, caller: str, day: str, rid: str) -> None:
        """The call did no work upstream: drop the hold and its images."""
        await self._change(f"{day}/{caller}", rid, lambda book, hold: _drop(book, rid))

    async def _first_of_day(self, caller: str, day: str) -> Book:
        """A day's new book: the minute limit still counts the calls of the day before's last minute."""
        before = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
        snapshot = await self.blobs.cached(f"{before}/{caller}")
        calls = Book.from_json(snapshot.data).calls if snapshot.data is not None else {}
        return Book(calls=calls)

    async def _change(self, key: str, rid: str, apply: Callable[[Book, Held], None]) -> None:
        async with self._lock(key):
            snapshot = await self.blobs.cached(key)
            for _ in range(_CONFLICT_ROUNDS):
                book = (Book.from_json(snapshot.data) if snapshot.data is not None else Book()).current(self.clock())
                hold = book.held.pop(rid, None)
                if hold is None:
                    return  # expired and charged already
                apply(book, hold)
                if await self.blobs.write(key, book.to_json(), snapshot.etag):
                    return
                snapshot = await self.blobs.read(key)
            raise LedgerBusy()

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())


def _charge(book: Book, rid: str, hold: Held, usd: float | None, images: int | None) -> None:
    counted = hold.images if images is None else images
    book.spent += hold.usd if usd is None else usd
    book.images += counted
    if rid in book.calls:
        book.calls[rid] = (book.calls[rid][0], counted)


def _drop(book: Book, rid: str) -> None:
    book.calls.pop(rid, None)


class LedgerBusy(ServiceError):
    """503: other instances changed the caller's book every time this one tried; nothing was held."""

    def __init__(self) -> None:
        super().__init__(503, "StorageUnavailable", f"The caller's budget ledger changed on each of {_CONFLICT_ROUNDS} tries; retry.", transient=True)
