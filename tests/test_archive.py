"""The archive's write protocol against real Azurite: a record never survives without its images.

Failures and crashes are injected into the storage clients through the runtime's
``storage_options`` (the SDK's request and response hooks), never into the archive.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError

from local.queue_runner import SimulatedCrash
from shared.archive import Archive
from shared.errors import ServiceError, storage_call
from shared.runtime import Runtime
from shared.settings import Settings

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64


async def exists(archive: Archive, name: str) -> bool:
    found, _ = await archive.owner(name)
    return found


def _leaf(url: str) -> str:
    return url.split("?", 1)[0].rsplit("/", 2)[-2] + "/" + url.split("?", 1)[0].rsplit("/", 1)[-1]


class StorageLog:
    """What the storage clients sent and heard, in order; and a failure to inject into one upload."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []  # ("sent" | "answered", "{id}/{leaf}")
        self.fail: dict[str, BaseException] = {}  # "{id}/{leaf}" -> raised when its PUT is about to be sent

    def on_request(self, request: Any) -> None:
        http = request.http_request
        if http.method == "PUT" and "restype=container" not in http.url:
            name = _leaf(http.url)
            self.events.append(("sent", name))
            if name in self.fail:
                raise self.fail[name]

    def on_response(self, response: Any) -> None:
        http = response.http_request
        if http.method == "PUT" and "restype=container" not in http.url and response.http_response.status_code == 201:
            self.events.append(("answered", _leaf(http.url)))

    def index(self, event: str, name: str) -> int:
        return self.events.index((event, name))


@pytest.fixture()
async def storage(make_settings: Callable[..., Settings]) -> AsyncIterator[tuple[Archive, StorageLog]]:
    """An archive on its own container, its storage clients reporting to a StorageLog."""
    log = StorageLog()
    options = {"raw_request_hook": log.on_request, "raw_response_hook": log.on_response, "retry_total": 0}
    async with Runtime(make_settings(IMAGES_CONTAINER=f"archive-{uuid.uuid4().hex[:10]}"), storage_options=options) as runtime:
        yield runtime.service.archive, log


def _record(generation_id: str, count: int) -> dict[str, Any]:
    return {"id": generation_id, "images": [{"revised_prompt": None} for _ in range(count)]}


async def test_sync_order_starts_the_record_while_the_images_upload(storage: tuple[Archive, StorageLog]) -> None:
    archive, log = storage
    gid = uuid.uuid4().hex
    archived, record = await archive.store("day", gid, [(PNG, "image/png")] * 2, _record(gid, 2), concurrent=True)
    # The record went out before the images had answered: it did not wait for them.
    assert log.index("sent", f"{gid}/record.json") < max(log.index("answered", f"{gid}/0.png"), log.index("answered", f"{gid}/1.png"))
    assert [i["name"] for i in record["images"]] == [a.name for a in archived] == [f"day/{gid}/0.png", f"day/{gid}/1.png"]
    assert await archive.read_record("day", gid) == record
    assert all([await exists(archive, a.name) for a in archived])


async def test_job_order_writes_the_record_after_every_image(storage: tuple[Archive, StorageLog]) -> None:
    archive, log = storage
    gid = uuid.uuid4().hex
    await archive.store("jobs", gid, [(PNG, "image/png")] * 2, _record(gid, 2))
    assert log.index("sent", f"{gid}/record.json") > max(log.index("answered", f"{gid}/0.png"), log.index("answered", f"{gid}/1.png"))


async def test_a_failed_image_upload_removes_the_record_that_landed(storage: tuple[Archive, StorageLog]) -> None:
    archive, log = storage
    gid = uuid.uuid4().hex
    log.fail[f"{gid}/1.png"] = ServiceRequestError("injected: the image upload fails")
    with pytest.raises(ServiceError) as caught:
        await archive.store("day", gid, [(PNG, "image/png")] * 2, _record(gid, 2), concurrent=True)
    assert (caught.value.status, caught.value.code, caught.value.transient) == (503, "StorageUnavailable", True)
    assert ("answered", f"{gid}/record.json") in log.events and ("answered", f"{gid}/0.png") in log.events  # both had landed
    assert not await exists(archive, f"day/{gid}/record.json")
    assert not await exists(archive, f"day/{gid}/0.png")
    assert await archive.read_record("day", gid) is None


async def test_a_crash_mid_write_leaves_what_sweep_removes(storage: tuple[Archive, StorageLog]) -> None:
    archive, log = storage
    crashed, complete = uuid.uuid4().hex, uuid.uuid4().hex
    log.fail[f"{crashed}/0.png"] = SimulatedCrash("the worker dies as the first image goes out")
    with pytest.raises(SimulatedCrash):
        await archive.store("day", crashed, [(PNG, "image/png")] * 2, _record(crashed, 2), concurrent=True)
    # A crash runs no cleanup: the record and the second image are there, the first image is not.
    assert await exists(archive, f"day/{crashed}/record.json") and await exists(archive, f"day/{crashed}/1.png")
    assert not await exists(archive, f"day/{crashed}/0.png")
    await archive.store("day", complete, [(PNG, "image/png")], _record(complete, 1), concurrent=True)

    now = dt.datetime.now(dt.UTC)
    assert await archive.sweep("day", written_before=now - dt.timedelta(hours=1)) == []  # recent: may still be in flight
    assert await archive.sweep("day", written_before=now + dt.timedelta(hours=1)) == [f"day/{crashed}"]
    assert not await exists(archive, f"day/{crashed}/record.json")
    assert not await exists(archive, f"day/{crashed}/1.png")
    assert await archive.read_record("day", complete) is not None and await exists(archive, f"day/{complete}/0.png")
    assert await archive.sweep("day", written_before=now + dt.timedelta(hours=1)) == []


async def test_storage_call_reports_the_action_and_nothing_of_the_failure() -> None:
    with pytest.raises(ServiceError) as caught:
        async with storage_call("reading a record"):
            raise ResourceNotFoundError("https://account.blob.core.windows.net/images/x?sv=2024&sig=SECRETSIGNATURE")
    assert caught.value.status == 503 and caught.value.transient
    assert caught.value.body() == {"error": {"code": "StorageUnavailable", "message": "Azure Storage failed while reading a record: ResourceNotFoundError"}}
    with pytest.raises(ValueError, match="not storage"):
        async with storage_call("reading a record"):
            raise ValueError("not storage")

    calls = 0

    @storage_call("looking up an image")
    async def look_up() -> bool:
        nonlocal calls
        calls += 1
        raise HttpResponseError("down")

    for _ in range(2):  # a fresh context per call
        with pytest.raises(ServiceError, match="looking up an image: HttpResponseError"):
            await look_up()
    assert calls == 2
