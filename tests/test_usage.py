"""``GET /usage`` and the gallery per caller, over records the service itself wrote (in process, Azurite, the simulator).

Two callers and an operator, as App Service authentication names them (tests/callers.py): each
caller's generations, an edit, a job and a filtered call. ``/usage`` must equal the sums of the
records' own figures (read back from storage), also after an entry lost its summary (a crash
between record and summary) and beside an entry whose record never came; the gallery shows a
caller only its own, an operator everything or one caller, and another caller's page is a 404
exactly like a missing one.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient
from azure.storage.queue import QueueClient

from local.azurite import Azurite
from local.servers import ServerThread
from local.simulator import render_image
from shared.callers.usage import CHECKPOINTS, FRESH_PAGE, Checkpoint, Usage
from shared.index import Entry, IndexReader, RecordIndex, caller_key
from shared.index.backfill import main as backfill_main
from shared.index.entries import PREFIX
from shared.index.records import IndexedRecords
from shared.runtime import Runtime
from shared.service import sync_prefix
from shared.settings import Settings
from tests.callers import entra, operator, principal
from tests.conftest import SimControl, base_env

InProcess = Callable[..., Awaitable[httpx.AsyncClient]]
GENERATE = "/openai/deployments/{}/images/generations?api-version=2025-04-01-preview"
EDIT = "/openai/deployments/gpt-image-1/images/edits?api-version=2025-04-01-preview"
SUBMIT = "/openai/deployments/gpt-image-1-mini/images/generations:submit?api-version=2025-04-01-preview"
ANN, BEN = principal("ann"), principal("ben")
TOKENS = ("input_tokens", "output_tokens", "total_tokens")


@dataclass
class Stack:
    client: httpx.AsyncClient
    settings: Settings
    day: str
    made: dict[str, list[dict[str, Any]]]  # caller id -> the archive records the service wrote for it
    ids: dict[str, list[str]]  # caller id -> generation and job ids
    job: str  # ann's job


def _records(azurite: Azurite, container: str) -> list[dict[str, Any]]:
    """Every archive record in the images container, as the service wrote it."""
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    return [json.loads(blobs.download_blob(b.name).readall()) for b in blobs.list_blobs() if b.name.endswith("/record.json")]


@pytest.fixture()
async def stack(in_process: InProcess, make_settings: Callable[..., Settings], sim: SimControl, azurite: Azurite) -> Stack:
    suffix = uuid.uuid4().hex[:10]
    env = entra(IMAGES_CONTAINER=f"usage-{suffix}", IMAGES_JOBS_CONTAINER=f"usage-jobs-{suffix}", IMAGES_QUEUE=f"usage-{suffix}")
    client = await in_process(**env)
    settings = make_settings(**env)
    for deployment, body in (("gpt-image-1-mini", {"prompt": "a red kite"}), ("gpt-image-2", {"prompt": "two kites", "n": 2, "quality": "low"})):
        assert (await client.post(GENERATE.format(deployment), json=body, headers=ANN)).status_code == 200
    edit = await client.post(EDIT, data={"prompt": "make it blue"}, files=[("image", ("in.png", render_image(64, 48), "image/png"))], headers=ANN)
    assert edit.status_code == 200, edit.text
    assert (await client.post(GENERATE.format("gpt-image-1"), json={"prompt": "a fight [[filter:prompt]]"}, headers=ANN)).status_code == 400
    accepted = await client.post(SUBMIT, json={"prompt": "a kite, later"}, headers=ANN)
    async with Runtime(settings) as worker:  # the job runs as the queue trigger would run it
        queue = QueueClient.from_connection_string(azurite.connection_string, settings.queue_name)
        message = queue.receive_message()
        assert message is not None and (await worker.jobs.handle(message.content, message.id, 1)).action == "succeeded"
    assert (await client.post(GENERATE.format("gpt-image-1-mini"), json={"prompt": "ben's kite"}, headers=BEN)).status_code == 200
    made: dict[str, list[dict[str, Any]]] = {}
    for record in _records(azurite, settings.images_container):
        made.setdefault(record["caller"]["id"], []).append(record)
    ids = {who: [r["id"] for r in records] for who, records in made.items()}
    assert accepted.json()["id"] in ids["entra:ann"] and len(ids["entra:ann"]) == 4 and len(ids["entra:ben"]) == 1
    return Stack(client, settings, sync_prefix(), made, ids, accepted.json()["id"])


def _env(settings: Settings) -> dict[str, str]:
    """The overrides a stack's settings were made with."""
    return entra(IMAGES_CONTAINER=settings.images_container, IMAGES_JOBS_CONTAINER=settings.jobs_container, IMAGES_QUEUE=settings.queue_name)


def expected(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The records' own figures per deployment, as /usage should sum them."""
    found: dict[str, dict[str, Any]] = {}
    for record in records:
        totals = found.setdefault(record["deployment"], {"requests": 0, "images": 0, "cost_usd": 0.0, **dict.fromkeys(TOKENS, 0)})
        totals["requests"] += 1
        totals["images"] += len(record["images"])
        totals["cost_usd"] += record["cost"]["usd"]
        for name in TOKENS:
            totals[name] += record["usage"][name]
    return found


def assert_sums(view: dict[str, Any], records: list[dict[str, Any]]) -> None:
    wanted = expected(records)
    assert set(view["deployments"]) >= set(wanted)
    for deployment, totals in wanted.items():
        got = view["deployments"][deployment]
        assert got["cost_usd"] == pytest.approx(totals["cost_usd"]) and got["cost_usd"] > 0
        assert {k: got[k] for k in ("requests", "images", *TOKENS)} == {k: totals[k] for k in ("requests", "images", *TOKENS)}
    assert view["total"]["cost_usd"] == pytest.approx(sum(r["cost"]["usd"] for r in records))
    assert view["total"]["requests"] == len(records) and view["total"]["unpriced"] == 0 and view["total"]["pending"] == 0


async def test_usage_is_the_sum_of_the_caller_s_records_and_an_operator_sees_one_caller_or_all(stack: Stack) -> None:
    ann = (await stack.client.get("/usage", headers=ANN)).json()
    assert ann["caller"] == "entra:ann" and ann["day"] == stack.day
    assert_sums(ann, stack.made["entra:ann"])
    assert ann["total"]["failed"] == 1  # the filtered call: upstream worked on it, no image to count
    ben = (await stack.client.get("/usage", params={"day": stack.day}, headers=BEN)).json()
    assert_sums(ben, stack.made["entra:ben"])

    assert (await stack.client.get("/usage", params={"caller": "entra:ben"}, headers=ANN)).status_code == 403
    assert (await stack.client.get("/usage", params={"caller": "all"}, headers=ANN)).status_code == 403
    assert (await stack.client.get("/usage", params={"caller": "entra:ann"}, headers=ANN)).json() == ann  # its own, by name
    as_operator = (await stack.client.get("/usage", params={"caller": "entra:ben"}, headers=operator())).json()
    assert as_operator == ben
    everyone = (await stack.client.get("/usage", params={"caller": "all"}, headers=operator())).json()
    assert everyone["caller"] == "all" and set(everyone["callers"]) == {"entra:ann", "entra:ben"}
    assert_sums(everyone, [*stack.made["entra:ann"], *stack.made["entra:ben"]])
    assert everyone["callers"]["entra:ann"]["total"] == ann["total"]
    other_day = (await stack.client.get("/usage", params={"day": "2020-01-01"}, headers=ANN)).json()
    assert other_day["total"]["requests"] == 0 and other_day["deployments"] == {}
    for bad in ({"day": "2026-02-30"}, {"day": "today"}, {"caller": "nobody"}):
        answer = await stack.client.get("/usage", params=bad, headers=operator())
        assert answer.status_code == 400 and answer.json()["error"]["param"] == next(iter(bad))


async def test_usage_repairs_an_entry_that_lost_its_summary_and_skips_one_whose_record_never_came(stack: Stack, azurite: Azurite) -> None:
    jobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(stack.settings.jobs_container)
    entries = [b for b in jobs.list_blobs(name_starts_with=f"{PREFIX}/{caller_key('entra:ann')}/{stack.day}/", include=["metadata"])]
    lost = next(b for b in entries if b.metadata.get("outcome") == "succeeded")
    jobs.get_blob_client(lost.name).set_blob_metadata({k: v for k, v in lost.metadata.items() if k in ("caller", "deployment")})  # crashed before it
    stray = Entry("entra:ann", stack.day, uuid.uuid4().hex, 1_000_000_000_000, "gpt-image-2")  # an old entry, its record never written
    jobs.upload_blob(stray.name, b"", metadata=stray.metadata())
    view = (await stack.client.get("/usage", headers=ANN)).json()
    assert_sums(view, stack.made["entra:ann"])
    assert jobs.get_blob_client(lost.name).get_blob_properties().metadata["outcome"] == "succeeded"  # repaired from the record
    assert jobs.get_blob_client(stray.name).get_blob_properties().metadata["outcome"] == "none"  # nobody reads for it again


def tile_ids(html: str) -> list[str]:
    return re.findall(r'class="tile" href="[^"]*" data-id="([^"]+)"', html)


async def test_the_gallery_shows_a_caller_only_its_own_and_an_operator_all_or_one_caller(stack: Stack) -> None:
    ann, ben = stack.ids["entra:ann"], stack.ids["entra:ben"]
    assert sorted(tile_ids((await stack.client.get("/gallery", headers=ANN)).text)) == sorted(ann)
    assert tile_ids((await stack.client.get("/gallery", headers=BEN)).text) == ben
    every = (await stack.client.get("/gallery", headers=operator())).text
    assert sorted(tile_ids(every)) == sorted([*ann, *ben]) and '<span class="caller">ben</span>' in every
    assert sorted(tile_ids((await stack.client.get("/gallery", params={"caller": "entra:ann"}, headers=operator())).text)) == sorted(ann)
    assert (await stack.client.get("/gallery", params={"caller": "entra:ann"}, headers=BEN)).status_code == 403

    mine = await stack.client.get(f"/gallery/{stack.day}/{ben[0]}", headers=BEN)
    assert mine.status_code == 200 and "ben&#39;s kite" in mine.text
    theirs = await stack.client.get(f"/gallery/{stack.day}/{ben[0]}", headers=ANN)
    missing = await stack.client.get(f"/gallery/{stack.day}/{uuid.uuid4().hex}", headers=ANN)
    assert theirs.status_code == missing.status_code == 404 and theirs.json() == missing.json()
    job = stack.job
    assert (await stack.client.get(f"/gallery/jobs/{job}", headers=ANN)).status_code == 200
    assert (await stack.client.get(f"/gallery/jobs/{job}", headers=BEN)).json() == missing.json()
    assert (await stack.client.get(f"/gallery/{stack.day}/{ben[0]}", headers=operator())).status_code == 200


async def test_a_checkpoint_keeps_the_settled_sums_and_the_next_reader_lists_only_what_is_newer(
    stack: Stack, azurite: Azurite, make_settings: Callable[..., Settings]
) -> None:
    later = time.time() + 3600  # an hour on: every entry so far is settled
    requests: list[str] = []
    settings = stack.settings
    async with AsyncBlobServiceClient.from_connection_string(azurite.connection_string, raw_request_hook=lambda r: requests.append(r.http_request.url)) as blobs:
        jobs = blobs.get_container_client(settings.jobs_container)
        records = IndexedRecords(blobs.get_container_client(settings.images_container), jobs, RecordIndex(jobs))
        usage = Usage(IndexReader(jobs), records, jobs, clock=lambda: later)
        by_http = (await stack.client.get("/usage", headers=ANN)).json()
        assert await usage.of(stack.day, "entra:ann") == by_http  # the first reader lists the day, and checkpoints it
        checkpoint = Checkpoint.from_json(await (await jobs.download_blob(f"{CHECKPOINTS}/{stack.day}/{caller_key('entra:ann')}")).readall())
        assert checkpoint.through is not None and checkpoint.open == []
        requests.clear()
        assert await usage.of(stack.day, "entra:ann") == by_http
        assert [u for u in requests if "comp=list" in u and f"maxresults={FRESH_PAGE}" in u] and not [u for u in requests if "record.json" in u]

        pending = await stack.client.post(SUBMIT, json={"prompt": "a kite, much later"}, headers=ANN)  # a job not run yet
        view = await usage.of(stack.day, "entra:ann")
        assert view["total"]["pending"] == 1 and view["total"]["requests"] == by_http["total"]["requests"]
        assert json.loads(await (await jobs.download_blob(f"{CHECKPOINTS}/{stack.day}/{caller_key('entra:ann')}")).readall())["open"]
        async with Runtime(make_settings(**_env(settings))) as worker:
            queue = QueueClient.from_connection_string(azurite.connection_string, settings.queue_name)
            message = queue.receive_message()
            assert message is not None and (await worker.jobs.handle(message.content, message.id, 1)).action == "succeeded"
        after = await usage.of(stack.day, "entra:ann")  # the open entry, read again: counted now
    assert after["total"]["pending"] == 0 and after["total"]["requests"] == by_http["total"]["requests"] + 1
    assert after == (await stack.client.get("/usage", headers=ANN)).json() and pending.status_code == 202


async def test_records_without_entries_are_indexed_again_by_the_backfill(
    stack: Stack, azurite: Azurite, simulator: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records written before the index existed (or whose entries were lost): the views miss them until the backfill runs."""
    before = ((await stack.client.get("/usage", headers=ANN)).json(), tile_ids((await stack.client.get("/gallery", headers=ANN)).text))
    jobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(stack.settings.jobs_container)
    for blob in list(jobs.list_blobs(name_starts_with=f"{PREFIX}/")) + list(jobs.list_blobs(name_starts_with=f"{CHECKPOINTS}/")):
        jobs.delete_blob(blob.name)
    assert tile_ids((await stack.client.get("/gallery", headers=ANN)).text) == []
    for name, value in {**base_env(azurite, simulator.url), **_env(stack.settings)}.items():
        monkeypatch.setenv(name, value)
    assert await asyncio.to_thread(backfill_main, ["--day", stack.day]) == 0
    after = ((await stack.client.get("/usage", headers=ANN)).json(), tile_ids((await stack.client.get("/gallery", headers=ANN)).text))
    assert after[0] == before[0] and sorted(after[1]) == sorted(before[1])
    assert await asyncio.to_thread(backfill_main, ["--day", stack.day]) == 0  # again: the same entries, nothing more
    assert (await stack.client.get("/usage", params={"caller": "all"}, headers=operator())).json()["total"]["requests"] == 5
