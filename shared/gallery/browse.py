"""One page of the gallery: the filters as asked, the tiles that match, where the next page starts."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shared import strictjson
from shared.errors import invalid
from shared.gallery.reader import DAY, Candidate, GalleryReader, bounded
from shared.gallery.tiles import STATUSES, SUCCEEDED, Tile

DEFAULT_PER_PAGE = 24
MAX_PER_PAGE = 60
SCAN_PAGES = 8  # a filtered page reads at most this many pages' worth of records, then offers "older"
_DEPLOYMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # fullmatch: $ would let a trailing newline through
MAX_TOKEN_CHARS = 512  # a token this gallery gives out is under 200


@dataclass(frozen=True)
class GalleryQuery:
    """The gallery's query parameters, checked: a bad one is a 400 that names it."""

    day: str
    deployment: str | None = None
    status: str | None = None
    after: tuple[dt.datetime, str] | None = None
    per_page: int = DEFAULT_PER_PAGE

    @classmethod
    def parse(cls, params: Mapping[str, str], today: str) -> GalleryQuery:
        """Read ``day``, ``deployment``, ``status``, ``continuation`` and ``per_page`` (blank means unset)."""
        day = params.get("day") or today
        if not DAY.fullmatch(day) or not _real_day(day):
            raise invalid("day", f"day must be a date like 2026-11-20, got {day!r}.")
        deployment = params.get("deployment") or None
        if deployment is not None and not _DEPLOYMENT.fullmatch(deployment):
            raise invalid("deployment", "deployment must be a deployment name: letters, digits, '.', '-' or '_', at most 64.")
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise invalid("status", f"status must be one of {', '.join(STATUSES)}, got {status!r}.")
        per_page = params.get("per_page") or str(DEFAULT_PER_PAGE)
        if not (per_page.isascii() and per_page.isdigit()) or not 1 <= int(per_page) <= MAX_PER_PAGE:
            raise invalid("per_page", f"per_page must be a whole number from 1 to {MAX_PER_PAGE}, got {per_page!r}.")
        token = params.get("continuation") or None
        return cls(day, deployment, status, decode_continuation(token) if token else None, int(per_page))

    def matches(self, tile: Tile) -> bool:
        """True when the tile passes the deployment and status filters."""
        return (self.deployment is None or tile.deployment == self.deployment) and (self.status is None or tile.status == self.status)


def _real_day(day: str) -> bool:
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        return False
    return True


def encode_continuation(key: tuple[dt.datetime, str]) -> str:
    """An opaque token for "after this candidate" (URL-safe)."""
    return base64.urlsafe_b64encode(json.dumps([key[0].isoformat(), key[1]]).encode()).decode().rstrip("=")


def decode_continuation(token: str) -> tuple[dt.datetime, str]:
    """The candidate a token names; a 400 naming ``continuation`` when it is not one of ours.

    The token is caller input: strict JSON at most one level deep (a nested one never reaches the
    parser's recursion), exactly ``[aware ISO time, name]``."""
    refused = invalid("continuation", "continuation is not a token this gallery gave out; start again from the first page.")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise refused
    try:
        value = strictjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)), max_depth=1)
    except (ValueError, binascii.Error):
        raise refused from None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(part, str) for part in value)):
        raise refused
    try:
        when = dt.datetime.fromisoformat(value[0])
    except ValueError:
        raise refused from None
    if when.tzinfo is None:
        raise refused
    return when, value[1]


@dataclass
class GalleryPage:
    """What the index page shows."""

    query: GalleryQuery
    tiles: list[Tile]
    continuation: str | None  # the next (older) page, if there is one
    days: list[str]  # days that have images, newest first
    scanned_out: bool  # the page stopped reading before it was full (a filter matched little)

    @property
    def older_day(self) -> str | None:
        """The nearest earlier day with images."""
        return next((d for d in self.days if d < self.query.day), None)

    @property
    def newer_day(self) -> str | None:
        """The nearest later day with images."""
        return next((d for d in reversed(self.days) if d > self.query.day), None)


async def build_page(reader: GalleryReader, query: GalleryQuery, family_of: Callable[[str], str | None]) -> GalleryPage:
    """List the day, read records newest first until the page is full (or the scan limit), and say where to go on."""
    # Every archived generation succeeded, so a filter on another status needs only the jobs.
    listing, archive_days = await asyncio.gather(
        reader.list_day(query.day, with_archive=query.status in (None, SUCCEEDED)), reader.days_with_images()
    )
    candidates: list[Candidate] = sorted(listing.candidates, reverse=True)
    if query.after is not None:
        candidates = [c for c in candidates if c.key < query.after]

    found: list[tuple[Candidate, Tile]] = []

    async def examine(chunk: list[Candidate]) -> None:
        read = await bounded(reader.tile(c, listing.archived, family_of) for c in chunk)
        found.extend((c, t) for c, t in zip(chunk, read, strict=True) if t is not None and query.matches(t))

    examined = 0
    limit = min(len(candidates), query.per_page * SCAN_PAGES)
    while examined < limit and len(found) < query.per_page:
        chunk = candidates[examined : min(limit, examined + query.per_page - len(found))]
        await examine(chunk)
        examined += len(chunk)
    # Storage times are whole seconds and only the records know better: a page takes the rest of
    # the second it stopped in (up to another page's worth), so pages split a second only when
    # it holds more than that, and the records' own times order what a page holds.
    tail = _same_second(candidates, examined, query.per_page)
    await examine(tail)
    examined += len(tail)
    found.sort(key=lambda pair: (pair[0].modified, pair[1].time or pair[0].modified, pair[0].name), reverse=True)
    more = examined < len(candidates)
    return GalleryPage(
        query=query,
        tiles=[tile for _, tile in found],
        continuation=encode_continuation(candidates[examined - 1].key) if more and examined else None,
        days=sorted(archive_days | listing.job_days, reverse=True),
        scanned_out=more and len(found) < query.per_page,
    )


def _same_second(candidates: list[Candidate], examined: int, most: int) -> list[Candidate]:
    """The candidates after ``examined`` that share the last examined one's time (at most ``most``)."""
    if examined == 0:
        return []
    second = candidates[examined - 1].modified
    tail = []
    for candidate in candidates[examined : examined + most]:
        if candidate.modified != second:
            break
        tail.append(candidate)
    return tail
