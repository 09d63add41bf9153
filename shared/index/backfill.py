"""Index the records that have no entry: those written before the index existed, or whose entry was lost.

``python -m shared.index.backfill [--day YYYY-MM-DD ...]`` with the app's storage settings in the
environment (``AzureWebJobsStorage`` or its identity-based form; the identity needs Storage Blob
Data Contributor on both containers). It lists what the views otherwise never list, once: every job
record of the jobs container, and the archive records (and failure records) of the days given
(default: every day of the images container), and writes each one's entry with its summary. Entries are named by the
record's own caller, day and time, so running it again changes nothing. A record that names no
caller this app vouched for (written before callers were known) is filed under
``unknown:unknown``, which only operators see.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from shared.callers import owner_of
from shared.credentials.identity import create_token_credential
from shared.errors import storage_call
from shared.index.entries import UNKNOWN_CALLER, Entry, RecordIndex, Summary, ms_of_iso
from shared.index.listing import summary_of_job, summary_of_record
from shared.index.records import RECORD_NAME, read_json
from shared.settings import Settings

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
CONCURRENCY = 16


async def backfill(index: RecordIndex, images: ContainerClient, jobs: ContainerClient, days: Iterable[str] | None = None) -> int:
    """Write the entry of every job record and of every archive record of ``days`` (None: every day); how many."""
    gate = asyncio.Semaphore(CONCURRENCY)
    names = [(jobs, name) for name in await _names(jobs, "", lambda n: n.endswith(".json") and "/" not in n)]
    for day in days if days is not None else await _days(images):
        names += [(images, name) for name in await _names(images, f"{day}/", _archive_record)]

    async def one(container: ContainerClient, name: str) -> bool:
        async with gate:
            record = await read_json(container, name, "reading a record to index")
            if record is None:
                return False
            job = container is jobs
            at = ms_of_iso(record.get("created_at") if job else record.get("created"))
            prefix = "jobs" if job else name.split("/", 1)[0]
            if at is None or not isinstance(record.get("id"), str):
                return False
            entry = Entry(owner_of(record) or UNKNOWN_CALLER, prefix, record["id"], at, str(record.get("deployment") or ""))
            summary = summary_of_job(record) if job else summary_of_record(record) if name.endswith(RECORD_NAME) else Summary("failed")
            await index.add(entry, summary)
            return True

    return sum(await asyncio.gather(*(one(container, name) for container, name in names)))


def _archive_record(name: str) -> bool:
    """A generation's record, or the failure record of a call that reached upstream (shared/audit.py)."""
    leaf = name.rpartition("/")[2]
    return leaf == RECORD_NAME or (leaf.startswith("failed-") and leaf.endswith(".json"))


async def _names(container: ContainerClient, prefix: str, wanted: Callable[[str], bool]) -> list[str]:
    found = []
    async with storage_call("listing records to index"):
        try:
            async for blob in container.list_blobs(name_starts_with=prefix or None, results_per_page=5000):
                if wanted(blob.name):
                    found.append(blob.name)
        except ResourceNotFoundError:
            pass
    return found


async def _days(images: ContainerClient) -> list[str]:
    days = []
    async with storage_call("listing the archive's days"):
        try:
            async for item in images.walk_blobs(delimiter="/"):
                if _DAY.fullmatch(item.name.rstrip("/")):
                    days.append(item.name.rstrip("/"))
        except ResourceNotFoundError:
            pass
    return days


async def _main(days: list[str] | None) -> int:
    """Open the app's storage as its settings say (a connection string, or this process's identity) and backfill."""
    settings = Settings.from_env()
    async with AsyncExitStack() as stack:
        if settings.storage.connection_string:
            blobs = BlobServiceClient.from_connection_string(settings.storage.connection_string)
        else:
            credential = await stack.enter_async_context(create_token_credential(settings, client_id=settings.storage.client_id or None))
            blobs = BlobServiceClient(settings.storage.blob_url, credential=credential)
        await stack.enter_async_context(blobs)
        jobs = blobs.get_container_client(settings.jobs_container)
        return await backfill(RecordIndex(jobs), blobs.get_container_client(settings.images_container), jobs, days)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.index.backfill", description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--day", action="append", help="an archive day to index (repeatable; default: every day)")
    args = parser.parse_args(argv)
    for day in args.day or []:
        if not _DAY.fullmatch(day):
            parser.error(f"--day must be a date like 2026-11-20, got {day!r}")
    print(json.dumps({"indexed": asyncio.run(_main(args.day))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
