"""Issue 15, finding 4: the archive is enough for an audit.

Every call that reached upstream leaves a record, filtered ones included; records name the caller
(as the platform vouches for it: in key mode the key holder, whatever principal headers a client
sends, issue 21; the ``user`` field stays a parameter), upstream's request id, endpoint and
api-version, the real format and dimensions of each image, and when retention deletes them.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from azure.storage.queue import QueueClient
from PIL import Image

from local.azurite import Azurite
from shared.audit import failure_name, image_facts
from shared.callers import key_caller
from shared.jobs import JobRetry
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import SimControl
from tests.test_api import apost, blob_name_from_url, blob_names, failure_records_since, record_for
from tests.test_newcomer_answers import SUBMIT_PATH, app_with_own_queue

InProcess = Callable[..., Awaitable[httpx.AsyncClient]]
# Principal headers a client sends in key mode: forged (only App Service authentication sets them), never written.
CALLER = {"X-MS-CLIENT-PRINCIPAL-NAME": "ceo@contoso.com", "X-MS-CLIENT-PRINCIPAL-ID": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}
EXPECTED_CALLER = key_caller().record()  # the key holder, as key mode knows every caller


def assert_names_the_key_holder(record: dict[str, object]) -> None:
    assert record["caller"] == EXPECTED_CALLER
    assert "ceo@contoso.com" not in json.dumps(record) and "0f1e2d3c" not in json.dumps(record)


async def test_a_filtered_request_leaves_a_record_with_the_side_the_categories_and_the_caller(
    app_client: httpx.AsyncClient, azurite: Azurite, sim: SimControl
) -> None:
    before = blob_names(azurite)
    response = await apost(app_client, "gpt-image-1", {"prompt": "a fight [[filter:prompt]]", "user": "user-42"}, headers=CALLER)
    assert response.status_code == 400 and response.json()["error"]["code"] == "contentFilter"
    [record] = failure_records_since(azurite, before, response)
    upstream_call = sim.stats()["recent"][-1]
    assert record["outcome"] == "filtered" and record["filtered"] == "prompt" and record["categories"]
    assert record["prompt"] == "a fight [[filter:prompt]]" and record["deployment"] == "gpt-image-1"
    assert_names_the_key_holder(record)
    assert record["parameters"]["asked"]["user"] == "user-42"  # the request's own field, a parameter
    assert record["upstream"]["request_id"] == upstream_call["id"]
    assert record["upstream"]["status"] == 400 and record["error"]["content_filter_results"]


async def test_a_generation_record_names_caller_upstream_call_and_real_image_facts(
    in_process: InProcess, azurite: Azurite, sim: SimControl
) -> None:
    client = await in_process(IMAGES_RETENTION_DAYS="30")
    body = {"prompt": "a square", "size": "auto", "output_format": "jpeg", "user": "user-42"}
    response = await apost(client, "gpt-image-2", body, headers=CALLER)
    assert response.status_code == 200, response.text
    item = response.json()["data"][0]
    record = record_for(azurite, blob_name_from_url(item["url"]))
    upstream_call = sim.stats()["recent"][-1]
    assert_names_the_key_holder(record)
    assert record["upstream"] == {
        "endpoint": sim.url,
        "api_style": "deployment",
        "api_version": "2025-04-01-preview",
        "request_id": upstream_call["id"],
        "attempts": 1,
    }
    with Image.open(io.BytesIO(httpx.get(item["url"]).content)) as image:
        size, kind = image.size, image.format
    facts = record["images"][0]
    assert kind == "JPEG" and (facts["format"], facts["width"], facts["height"]) == ("jpeg", *size)
    assert "prompt_filter_results" in facts
    created = dt.datetime.fromisoformat(record["created"])
    assert record["retention"] == {"days": 30, "delete_after": (created + dt.timedelta(days=30)).date().isoformat()}


async def test_the_user_field_is_a_parameter_never_the_caller(app_client: httpx.AsyncClient, azurite: Azurite, sim: SimControl) -> None:
    response = await apost(app_client, "gpt-image-1-mini", {"prompt": "x", "user": "user-7"})
    record = record_for(azurite, blob_name_from_url(response.json()["data"][0]["url"]))
    assert record["caller"] == EXPECTED_CALLER and record["parameters"]["asked"]["user"] == "user-7" and record["retention"] is None


async def test_calls_that_never_reached_upstream_leave_no_failure_record(in_process: InProcess, azurite: Azurite) -> None:
    client = await in_process(AZURE_OPENAI_ENDPOINT="http://127.0.0.1:9", IMAGES_MAX_RETRIES="0")
    before = blob_names(azurite)
    response = await apost(client, "gpt-image-1", {"prompt": "x"})
    assert response.status_code == 502 and response.json()["error"]["code"] == "UpstreamUnavailable"
    assert blob_names(azurite) == before


def _encoded(fmt: str, size: tuple[int, int], **options: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "options", "name"),
    [
        ("PNG", {}, "png"),
        ("JPEG", {}, "jpeg"),
        ("JPEG", {"progressive": True}, "jpeg"),
        ("JPEG", {"exif": b"Exif\x00\x00" + b"\x00" * 4000}, "jpeg"),  # a long APP1 segment before the frame header
        ("WEBP", {"lossless": False}, "webp"),
        ("WEBP", {"lossless": True}, "webp"),
    ],
)
@pytest.mark.parametrize("size", [(1536, 1024), (17, 3001)])
def test_image_facts_read_the_header_as_pillow_does(fmt: str, options: dict[str, object], name: str, size: tuple[int, int]) -> None:
    facts = image_facts(_encoded(fmt, size, **options))
    assert facts is not None and (facts.format, facts.width, facts.height) == (name, *size)


def test_image_facts_of_bytes_that_are_no_known_image_are_none() -> None:
    assert image_facts(b"") is None
    assert image_facts(b"GIF89a" + b"\x00" * 40) is None
    assert image_facts(b"\xff\xd8\xff\xda" + b"\x00" * 40) is None  # scan data before any frame header
    assert image_facts(_encoded("PNG", (8, 8))[:20]) is None


def test_failure_records_sort_by_time_in_utc() -> None:
    first = failure_name("jobs/j-1", dt.datetime(2026, 11, 25, 10, 0, 0, 1, tzinfo=dt.UTC))
    earlier = failure_name("jobs/j-1", dt.datetime(2026, 11, 25, 11, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))))
    assert first == "jobs/j-1/failed-20261125T100000000001Z.json"
    assert earlier == "jobs/j-1/failed-20261125T090000000000Z.json" < first


@pytest.fixture()
async def runtime_client(make_settings: Callable[..., Settings], sim: SimControl) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with app_with_own_queue(make_settings(IMAGES_QUEUE=f"audit-{uuid.uuid4().hex[:12]}")) as opened:
        yield opened


async def test_a_failed_job_attempt_leaves_a_record_that_is_never_read_as_finished(
    runtime_client: tuple[Runtime, httpx.AsyncClient], azurite: Azurite, sim: SimControl
) -> None:
    """A job's record.json means "finished" to the handler: a failure record beside it must not end the job."""
    runtime, client = runtime_client
    accepted = await client.post(SUBMIT_PATH.format("gpt-image-1-mini"), json={"prompt": "a kite"})
    job_id = accepted.json()["id"]
    queue = QueueClient.from_connection_string(azurite.connection_string, runtime.settings.queue_name)
    message = queue.receive_message()
    assert message is not None
    sim.configure(fail_next=1, fail_status=503)  # the first attempt gets a 503 (a job waits for the queue, not in a retry loop)
    with pytest.raises(JobRetry):
        await runtime.jobs.handle(message.content, message.id, 1)
    failed = [n for n in blob_names(azurite) if n.startswith(f"jobs/{job_id}/")]
    assert len(failed) == 1 and failed[0].rsplit("/", 1)[1].startswith("failed-")
    done = await runtime.jobs.handle(message.content, message.id, 2)  # the host's redelivery
    assert done.action == "succeeded" and sim.stats()["generations"] == 1
    view = (await client.get(accepted.headers["Operation-Location"])).json()
    assert view["status"] == "succeeded" and len(view["result"]["data"]) == 1
    queue.delete_message(message)


async def test_a_submitted_job_and_a_synchronous_edit_name_their_caller_as_a_generation_does(
    runtime_client: tuple[Runtime, httpx.AsyncClient], azurite: Azurite, sim: SimControl
) -> None:
    runtime, client = runtime_client
    accepted = await client.post(SUBMIT_PATH.format("gpt-image-1"), json={"prompt": "a kite", "user": "user-42"}, headers=CALLER)
    assert accepted.status_code == 202, accepted.text
    stored = await runtime.jobs.store.get(accepted.json()["id"])
    assert stored is not None and stored.record.caller == EXPECTED_CALLER
    queue = QueueClient.from_connection_string(azurite.connection_string, runtime.settings.queue_name)
    message = queue.receive_message()
    assert message is not None
    assert (await runtime.jobs.handle(message.content, message.id, 1)).action == "succeeded"
    queue.delete_message(message)
    view = (await client.get(accepted.headers["Operation-Location"])).json()
    assert_names_the_key_holder(record_for(azurite, view["result"]["data"][0]["name"]))

    edited = await client.post(
        "/openai/deployments/gpt-image-1/images/edits?api-version=2025-04-01-preview",
        data={"prompt": "a brighter kite", "user": "user-42"},
        files={"image": ("kite.png", _encoded("PNG", (64, 48)), "image/png")},
        headers=CALLER,
    )
    assert edited.status_code == 200, edited.text
    assert_names_the_key_holder(record_for(azurite, blob_name_from_url(edited.json()["data"][0]["url"])))
