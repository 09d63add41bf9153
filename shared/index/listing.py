"""Reading the index: a caller's (or everyone's) day a page at a time, the days that have entries, the callers.

Every read lists one prefix, so what it costs grows with what it returns, never with all time:

- a page of a day is one List Blobs call of ``size`` names from storage's own continuation marker
  (names sort newest first, so the first page is the newest);
- the days of a caller (or of everyone), and the callers of a day, are one read each: small lists the
  index keeps (entries.py), since a listing of the entries themselves would read every one of them.

An entry only says where to look: whoever reads the record it points at checks that the record
is there and whose it is (a stray entry, from a crash before its record was written, points at
nothing and is skipped). :func:`summary_of_record` and :func:`summary_of_job` say what a final
record adds to its entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from shared.errors import invalid, storage_call
from shared.index.entries import ALL, DAY_CALLERS, DAYS, PREFIX, Listed, Summary, parse_listed

LISTING_PAGE = 5000  # the most one List Blobs call returns
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_KEY = re.compile(r"[0-9a-f]{32}")


class IndexReader:
    """Lists the index in the jobs container."""

    def __init__(self, container: ContainerClient) -> None:
        self.container = container

    async def page(self, scope: str, day: str, size: int, marker: str | None = None) -> tuple[list[Listed], str | None]:
        """Up to ``size`` entries of ``scope`` (a caller key, or :data:`ALL`) on ``day``, newest first, after ``marker``;
        and the marker of the next page (None: this was the last). A marker storage refuses is a 400 naming ``continuation``."""
        found: list[Listed] = []
        async with storage_call("listing the index"):
            listing = self.container.list_blobs(name_starts_with=f"{PREFIX}/{scope}/{day}/", include=["metadata"], results_per_page=size)
            pages: Any = listing.by_page(continuation_token=marker)  # AsyncPageIterator: its continuation_token is the next marker
            try:
                async for blob in await pages.__anext__():
                    listed = parse_listed(blob.name, blob.metadata)
                    if listed is not None:
                        found.append(listed)
            except StopAsyncIteration:
                return [], None
            except ResourceNotFoundError:
                return [], None  # no jobs container yet: nothing indexed
            except HttpResponseError as exc:
                if exc.status_code == 400 and marker is not None:
                    raise invalid("continuation", "continuation is not a token this gallery gave out; start again from the first page.") from None
                raise
        return found, pages.continuation_token or None

    async def day(self, scope: str, day: str, *, page: int | None = None) -> AsyncIterator[Listed]:
        """Every entry of ``scope`` on ``day``, newest first, with its metadata: the first ``page`` (default: the most
        a call returns), then eight times as many a call, so a reader that stops early listed little."""
        marker: str | None = None
        size = page or LISTING_PAGE
        while True:
            found, marker = await self.page(scope, day, size, marker)
            size = min(LISTING_PAGE, size * 8)
            for listed in found:
                yield listed
            if marker is None:
                return

    async def days(self, scope: str) -> list[str]:
        """The days ``scope`` has entries on, newest first."""
        return sorted((name for name in await self._list(DAYS, scope) if _DAY.fullmatch(name)), reverse=True)

    async def callers(self, day: str) -> list[str]:
        """The keys of every caller with an entry on ``day``."""
        return [name for name in await self._list(DAY_CALLERS, day) if _KEY.fullmatch(name)]

    async def _list(self, prefix: str, name: str) -> list[str]:
        """A list the index keeps (entries.py: days, callers of a day): one read."""
        async with storage_call("reading the index's lists"):
            try:
                data = await (await self.container.download_blob(f"{prefix}/{name}")).readall()
            except ResourceNotFoundError:
                return []
        try:
            found = json.loads(data)
        except ValueError:
            return []
        return [str(value) for value in found] if isinstance(found, list) else []


def _tokens(usage: Any) -> tuple[int, int, int]:
    usage = usage if isinstance(usage, dict) else {}
    counts = [usage.get(k) for k in ("input_tokens", "output_tokens", "total_tokens")]
    ins, outs, total = (c if isinstance(c, int) and not isinstance(c, bool) and c >= 0 else 0 for c in counts)
    return ins, outs, total or ins + outs


def _usd(cost: Any) -> float | None:
    usd = cost.get("usd") if isinstance(cost, dict) else None
    return float(usd) if isinstance(usd, int | float) and not isinstance(usd, bool) else None


def summary_of_record(record: Mapping[str, Any]) -> Summary:
    """What an archive record (``{prefix}/{id}/record.json``, always a success) adds to its entry."""
    images = record.get("images")
    return Summary("succeeded", len(images) if isinstance(images, list) else 0, _usd(record.get("cost")), *_tokens(record.get("usage")))


def summary_of_job(job: Mapping[str, Any]) -> Summary | None:
    """What a job record adds to its entry once the job ended (None while it has not)."""
    status = job.get("status")
    if status == "failed":
        return Summary("failed")
    if status != "succeeded":
        return None
    result = job.get("result")
    result = result if isinstance(result, dict) else {}
    images = result.get("images")
    return Summary("succeeded", len(images) if isinstance(images, list) else 0, _usd(result.get("cost")), *_tokens(result.get("usage")))


__all__ = ["ALL", "IndexReader", "Listed", "summary_of_job", "summary_of_record"]
