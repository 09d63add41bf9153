"""One page of the gallery: the filters as asked, the tiles that match, where the next page starts."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shared import strictjson
from shared.callers import MODES, Caller
from shared.callers.limits import CALLER_ID
from shared.errors import ServiceError, invalid
from shared.gallery.reader import DAY, GalleryReader, bounded
from shared.gallery.tiles import STATUSES, Tile
from shared.index import ALL, caller_key

DEFAULT_PER_PAGE = 24
MAX_PER_PAGE = 60
SCAN_PAGES = 8  # a filtered page reads at most this many pages' worth of records, then offers "older"
_DEPLOYMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # fullmatch: $ would let a trailing newline through
MAX_TOKEN_CHARS = 512  # a token this gallery gives out wraps storage's marker: a blob name and a little more
MAX_MARKER_CHARS = 360


@dataclass(frozen=True)
class GalleryQuery:
    """The gallery's query parameters, checked: a bad one is a 400 that names it."""

    day: str
    deployment: str | None = None
    status: str | None = None
    after: str | None = None  # storage's marker of the listing where the page starts
    per_page: int = DEFAULT_PER_PAGE
    caller: str | None = None  # operators only: one caller's tiles

    @classmethod
    def parse(cls, params: Mapping[str, str], today: str) -> GalleryQuery:
        """Read ``day``, ``deployment``, ``status``, ``caller``, ``continuation`` and ``per_page`` (blank means unset)."""
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
        caller = params.get("caller") or None
        if caller is not None and not CALLER_ID.fullmatch(caller):
            raise invalid("caller", f"caller must be a caller's id (mode:principal, mode one of {', '.join(MODES)}).")
        token = params.get("continuation") or None
        return cls(day, deployment, status, decode_continuation(token) if token else None, int(per_page), caller)

    def scope(self, viewer: Caller) -> str:
        """Whose entries the page lists: the viewer's own; an operator's, every caller's or the one asked for.
        Another caller's asked for by a caller who is no operator is a 403 (whatever that caller has)."""
        if self.caller is not None and self.caller != viewer.id and not viewer.is_operator:
            raise ServiceError(403, "PermissionDenied", "Only an operator chooses another caller's tiles.", param="caller")
        if self.caller is not None:
            return caller_key(self.caller)
        return ALL if viewer.is_operator else caller_key(viewer.id)

    def matches(self, tile: Tile) -> bool:
        """True when the tile passes the deployment and status filters."""
        return (self.deployment is None or tile.deployment == self.deployment) and (self.status is None or tile.status == self.status)


def _real_day(day: str) -> bool:
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        return False
    return True


def encode_continuation(marker: str) -> str:
    """An opaque token for "where this listing goes on" (URL-safe)."""
    return base64.urlsafe_b64encode(json.dumps([marker]).encode()).decode().rstrip("=")


def decode_continuation(token: str) -> str:
    """The listing marker a token carries; a 400 naming ``continuation`` when it is not one of ours.

    The token is caller input: strict JSON at most one level deep (a nested one never reaches the
    parser's recursion), exactly ``[marker]``, printable ASCII. The marker only ever continues a
    listing of the prefix the viewer may list: whatever it says, it cannot widen that."""
    refused = invalid("continuation", "continuation is not a token this gallery gave out; start again from the first page.")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise refused
    try:
        value = strictjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)), max_depth=1)
    except (ValueError, binascii.Error):
        raise refused from None
    if not (isinstance(value, list) and len(value) == 1 and isinstance(value[0], str)):
        raise refused
    marker = value[0]
    if not marker or len(marker) > MAX_MARKER_CHARS or not (marker.isascii() and marker.isprintable()):
        raise refused
    return marker


@dataclass
class GalleryPage:
    """What the index page shows."""

    query: GalleryQuery
    tiles: list[Tile]
    continuation: str | None  # the next (older) page, if there is one
    days: list[str]  # days that have tiles for this view, newest first
    scanned_out: bool  # the page stopped reading before it was full (a filter matched little)
    every_caller: bool = False  # an operator's view of more than one caller: tiles say whose

    @property
    def older_day(self) -> str | None:
        """The nearest earlier day with tiles."""
        return next((d for d in self.days if d < self.query.day), None)

    @property
    def newer_day(self) -> str | None:
        """The nearest later day with tiles."""
        return next((d for d in reversed(self.days) if d > self.query.day), None)


async def build_page(reader: GalleryReader, query: GalleryQuery, viewer: Caller, family_of: Callable[[str], str | None]) -> GalleryPage:
    """List the view's entries of the day newest first, read their records until the page is full (or the scan
    limit), and say where to go on: storage's own marker, after the last entry examined."""
    scope = query.scope(viewer)
    found: list[Tile] = []
    marker, examined = query.after, 0
    while len(found) < query.per_page and examined < query.per_page * SCAN_PAGES:
        entries, marker = await reader.index.page(scope, query.day, query.per_page - len(found), marker)
        examined += len(entries)
        wanted = [e for e in entries if query.deployment is None or e.deployment == query.deployment]
        tiles = await bounded(reader.tile(e, viewer, family_of) for e in wanted)
        found.extend(t for t in tiles if t is not None and query.matches(t))
        if marker is None:
            break
    return GalleryPage(
        query=query,
        tiles=found,
        continuation=encode_continuation(marker) if marker else None,
        days=await reader.index.days(scope),
        scanned_out=marker is not None and len(found) < query.per_page,
        every_caller=scope == ALL,
    )
