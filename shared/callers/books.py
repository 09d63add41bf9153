"""What every generation does for its caller around the upstream call: the budget held, the record indexed.

:meth:`Books.open` runs before the call (shared/service.py ``produce``): it holds the request's
worst case in the caller's budget (shared/callers/budgets.py, which refuses with 403 or 429) and,
for a synchronous generation, starts writing its index entry while upstream works, so the entry
is in place before the record is ever written (shared/index). A job's entry was written when it
was accepted (shared/jobs/store.py), and its summary is written when it ends.

The :class:`Ticket` then follows the call: :meth:`Ticket.failed` gives the hold back when upstream
did no work (else charges it at its worst case) and marks the entry failed; :meth:`Ticket.archived`
settles the hold at what the images cost while the record is written (the entry's summary comes
from the record, when a view first reads it: no write of its own on the answer's path).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from shared.callers.budgets import Budgets, Hold
from shared.callers.identity import Caller
from shared.errors import ServiceError
from shared.index import Entry, RecordIndex, Summary
from shared.index.entries import ms_of
from shared.models import ImageRequest

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Ticket:
    """One call's hold and (for a synchronous generation) its index entry, from before the call to its end."""

    hold: Hold
    index: RecordIndex
    entry: Entry | None = None
    writing: asyncio.Future[None] | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The caller's ``x-ratelimit-*`` once this call is counted (none without budget limits)."""
        return self.hold.headers

    async def indexed(self) -> None:
        """Wait until the entry is written (written again if the first write failed): before any record is."""
        if self.writing is None or self.entry is None:
            return
        try:
            await self.writing
        except ServiceError:
            await self.index.add(self.entry)
        self.writing = None

    async def failed(self, error: ServiceError, *, reached_upstream: bool) -> None:
        """The call failed: give the hold back if upstream did no work, else charge its worst case. The entry says
        ``failed`` when the call reached upstream (it left a failure record), else that nothing came of it."""
        await (self.hold.charge() if error.may_have_worked else self.hold.release())  # the one rule (shared/upstream/work.py)
        if self.entry is not None:
            try:
                await self.indexed()
                await self.index.summarize(self.entry, Summary("failed" if reached_upstream else "none"))
            except ServiceError as exc:  # upstream's error is the answer; the entry stays without a summary
                log.warning("could not mark the entry of %s failed: %s", self.entry.id, exc.message)

    async def archived(self, archive: Callable[[], Awaitable[T]], usd: float | None, images: int) -> T:
        """Run ``archive`` (the record and the images) once the entry is in place, while the hold settles. The entry
        gets its summary from its first reader (shared/index/records.py): nothing more on the answer's path."""
        try:
            await self.indexed()
        except ServiceError:
            await self.hold.settle(usd, images)  # billed all the same
            raise
        stored, _ = await asyncio.gather(archive(), self.hold.settle(usd, images), return_exceptions=True)
        if isinstance(stored, BaseException):
            raise stored
        return stored


class Books:
    """The budgets and the index of one runtime."""

    def __init__(self, budgets: Budgets, index: RecordIndex) -> None:
        self.budgets = budgets
        self.index = index

    async def open(
        self, caller: Caller, request: ImageRequest, *, generation_id: str, prefix: str, kind: str, ttl: float, input_pixels: Sequence[int] = ()
    ) -> Ticket:
        """Hold the request's worst case (403 or 429 refuses it, nothing held) and, for a synchronous generation,
        start writing its entry."""
        hold = await self.budgets.reserve(caller.id, request, input_pixels=input_pixels, ttl=ttl)
        if kind != "sync":
            return Ticket(hold, self.index)
        entry = Entry(caller.id, prefix, generation_id, ms_of(dt.datetime.now(dt.UTC)), request.deployment)
        return Ticket(hold, self.index, entry, asyncio.ensure_future(self.index.add(entry)))
