"""Streamed generations and edits through the service (shared/streaming.py), with the openai SDK unchanged.

The API runs as the Functions worker serves it (local/functions_worker.py), over real HTTP, against
the simulator's streams (local/sim_stream.py) and real Azurite. What the tests read back (records,
failure records, archived bytes) is what the service itself wrote.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import httpx
import openai
import pytest
from azure.storage.blob import BlobServiceClient
from PIL import Image

from local.azurite import Azurite
from local.servers import ServerThread
from shared import streaming
from shared.callers import key_caller
from shared.deadline import Deadline
from shared.models import ImageRequest, parse_request
from shared.pricing import PARTIAL_IMAGE_OUTPUT_TOKENS
from shared.runtime import Runtime
from shared.service import new_generation_id, sync_prefix
from tests.conftest import SimControl

API_VERSION = "2025-04-01-preview"


def azure(api: ServerThread) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=api.url, api_key="unused-locally", api_version=API_VERSION, max_retries=0, timeout=60)


def v1(api: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.url}/openai/v1", api_key="unused-locally", max_retries=0, timeout=60)


def blobs(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def read_json(azurite: Azurite, name: str) -> dict[str, Any]:
    return json.loads(blobs(azurite).get_blob_client("images", name).download_blob().readall())  # type: ignore[no-any-return]


def failure_records(azurite: Azurite, request_id: str) -> list[dict[str, Any]]:
    container = blobs(azurite).get_container_client("images")
    names = [b.name for b in container.list_blobs() if f"/{request_id}/failed-" in b.name]
    return [read_json(azurite, name) for name in names]


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1024, 1024), colour).save(out, "PNG")
    return out.getvalue()


async def opened(runtime: Runtime, request: ImageRequest, generation_id: str | None = None, deadline: Deadline | None = None) -> streaming.Streamed:
    """A stream opened in process, as the routes open one: one deadline for the wait, the opening and the stream."""
    deadline = deadline or Deadline(60)
    return await streaming.open_streamed(
        runtime.service, request, streaming.generation_send(deadline), generation_id=generation_id or new_generation_id(), prefix=sync_prefix(),
        deadline=deadline, budget=0, caller=key_caller(),
    )  # fmt: skip


def events_of(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """(event type, data) of a text/event-stream body."""
    found = []
    for block in response.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


@pytest.mark.parametrize("client", [azure, v1], ids=["AzureOpenAI", "OpenAI-v1"])
def test_the_sdk_streams_a_generation_through_the_service(api: ServerThread, sim: SimControl, azurite: Azurite, client: Any) -> None:
    stream = client(api).images.generate(model="gpt-image-1.5", prompt="a lighthouse", size="1024x1024", quality="low", stream=True, partial_images=2)
    events = list(stream)
    assert [(e.type, getattr(e, "partial_image_index", None)) for e in events] == [
        ("image_generation.partial_image", 0), ("image_generation.partial_image", 1), ("image_generation.completed", None)
    ]  # fmt: skip
    completed = events[-1].model_dump()
    image = base64.b64decode(completed["b64_json"])
    assert Image.open(io.BytesIO(image)).size == (1024, 1024)
    assert completed["url"] == f"{api.url}/images/{completed['name']}"  # the stable link
    assert httpx.get(completed["url"], follow_redirects=True).content == image  # serves the archived bytes
    record = read_json(azurite, completed["name"].rsplit("/", 1)[0] + "/record.json")
    assert record["stream"] == {"partial_images": {"asked": 2, "sent": 2}}
    assert completed["cost"] == record["cost"] and "2 partial images x 100" in record["cost"]["basis"]
    assert completed["usage"]["output_tokens"] == record["usage"]["output_tokens"]
    assert sim.stats()["generations"] == 1


@pytest.mark.parametrize("client", [azure, v1], ids=["AzureOpenAI", "OpenAI-v1"])
def test_the_sdk_streams_an_edit_through_the_service(api: ServerThread, sim: SimControl, azurite: Azurite, client: Any) -> None:
    events = list(client(api).images.edit(model="gpt-image-1.5", image=("in.png", png((20, 90, 200)), "image/png"), prompt="paint", stream=True, partial_images=1))
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    completed = events[-1].model_dump()
    image = base64.b64decode(completed["b64_json"])
    assert Image.open(io.BytesIO(image)).getpixel((512, 512)) == (20, 90, 200)
    assert httpx.get(completed["url"], follow_redirects=True).content == image
    record = read_json(azurite, completed["name"].rsplit("/", 1)[0] + "/record.json")
    assert record["operation"] == "edit" and record["stream"] == {"partial_images": {"asked": 1, "sent": 1}}
    assert sim.stats()["edits"] == 1


def test_a_cut_stream_is_one_upstream_call_an_error_event_and_a_failure_record(client: httpx.Client, sim: SimControl, azurite: Azurite) -> None:
    url = f"/openai/deployments/gpt-image-1.5/images/generations?api-version={API_VERSION}"
    response = client.post(url, json={"prompt": "otter [[stream-cut:1]]", "stream": True, "partial_images": 2})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response)
    assert [kind for kind, _ in events] == ["image_generation.partial_image", "error"]
    error = events[-1][1]
    assert error["type"] == "error" and error["error"]["code"] == "UpstreamError"
    assert sim.stats()["generations"] == 1  # never repeated, never failed over
    (failure,) = failure_records(azurite, response.headers["x-request-id"])
    assert failure["stream"] is True and failure["error"]["code"] == "UpstreamError" and failure["outcome"] == "failed"


def test_an_error_event_from_upstream_reaches_the_sdk_as_an_api_error(api: ServerThread, sim: SimControl) -> None:
    seen = []
    with pytest.raises(openai.APIError, match="The server had an error"):
        for event in azure(api).images.generate(model="gpt-image-2", prompt="otter [[stream-error:1]]", stream=True, partial_images=3):
            seen.append(event.type)
    assert seen == ["image_generation.partial_image"]
    assert sim.stats()["generations"] == 1


@pytest.mark.parametrize(
    ("deployment", "body", "param"),
    [
        ("gpt-image-2", {"stream": True, "partial_images": 4}, "partial_images"),
        ("gpt-image-2", {"partial_images": 2}, "partial_images"),
        ("gpt-image-2", {"stream": True, "n": 2}, "n"),
        ("dall-e-3", {"stream": True}, "stream"),
    ],
)
def test_refusals_are_json_400s_naming_the_parameter_before_upstream(client: httpx.Client, sim: SimControl, deployment: str, body: dict[str, Any], param: str) -> None:
    response = client.post(f"/openai/deployments/{deployment}/images/generations?api-version={API_VERSION}", json={"prompt": "x", **body})
    assert response.status_code == 400 and response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["param"] == param
    assert sim.stats()["generations"] == 0


def test_an_upstream_refusal_before_the_stream_is_a_json_error(client: httpx.Client, sim: SimControl) -> None:
    response = client.post(f"/openai/deployments/gpt-image-2/images/generations?api-version={API_VERSION}", json={"prompt": "x [[filter:prompt]]", "stream": True})
    assert response.status_code == 400 and response.json()["error"]["code"] == "contentFilter"


@pytest.mark.parametrize("route", [":submit", ""])
def test_a_queued_request_cannot_stream(client: httpx.Client, sim: SimControl, route: str) -> None:
    response = client.post(
        f"/openai/deployments/gpt-image-2/images/generations{route}?api-version={API_VERSION}",
        json={"prompt": "x", "stream": True}, headers={"Prefer": "respond-async"},
    )  # fmt: skip
    assert response.status_code == 400 and response.json()["error"]["param"] == "stream"
    assert sim.stats()["generations"] == 0


def test_partial_images_are_priced_by_the_published_rule() -> None:
    from shared.pricing import cost, streamed_cost

    usage = {"input_tokens": 10, "input_tokens_details": {"text_tokens": 10, "image_tokens": 0}, "output_tokens": 272, "total_tokens": 282}
    plain, streamed = cost("gpt-image-2", usage, {}, 1), streamed_cost("gpt-image-2", usage, {}, 3)
    assert streamed["usd"] == pytest.approx(plain["usd"] + 3 * PARTIAL_IMAGE_OUTPUT_TOKENS * 30 / 1_000_000)
    assert streamed_cost("gpt-image-2", usage, {}, 0) == plain


async def test_a_caller_who_leaves_mid_stream_still_gets_the_image_archived(make_settings: Any, sim: SimControl, azurite: Azurite) -> None:
    """The caller goes away after the first piece (the server closes the relay, as Starlette does on a disconnect);
    the relay's reader runs on alone and archives the image upstream made."""
    async with Runtime(make_settings()) as runtime:
        request = parse_request({"prompt": "otter", "stream": True, "partial_images": 3}, "gpt-image-2", "gpt-image-2")
        generation_id, left_running = new_generation_id(), set[asyncio.Task[None]]()
        streamed = await opened(runtime, request, generation_id)
        relay = streaming.relay(runtime.service, streamed, lambda name: name, unattended=left_running)
        first = bytes(await anext(relay))
        await relay.aclose()  # the caller left
        assert left_running  # the reader was not done: it runs on
        await asyncio.gather(*left_running)
    assert first == b"event: image_generation.partial_image\ndata: "
    names = [b.name for b in blobs(azurite).get_container_client("images").list_blobs() if f"/{generation_id}/" in b.name]
    assert any(name.endswith("/record.json") for name in names) and any(name.endswith("/0.png") for name in names)
    assert sim.stats()["generations"] == 1


def test_a_partial_image_that_is_not_base64_ends_the_stream_with_an_error(client: httpx.Client, sim: SimControl, azurite: Azurite) -> None:
    url = f"/openai/deployments/gpt-image-2/images/generations?api-version={API_VERSION}"
    response = client.post(url, json={"prompt": "otter [[stream-garbage:1]]", "stream": True, "partial_images": 3})
    kinds = [block.split("\n", 1)[0] for block in response.text.split("\n\n") if block.startswith("event: ")]
    assert kinds == ["event: image_generation.partial_image", "event: image_generation.partial_image", "event: error"]
    assert events_of(response)[-1][1]["error"]["message"].startswith("The model service streamed a partial image that is not valid base64")
    (failure,) = failure_records(azurite, response.headers["x-request-id"])
    assert failure["error"]["code"] == "UpstreamError" and sim.stats()["generations"] == 1


async def test_a_stream_stalled_past_the_deadline_ends_with_a_timeout_event(in_process: Any, sim: SimControl, azurite: Azurite) -> None:
    """The deadline is the synchronous one (IMAGES_SYNC_TIMEOUT_SECONDS), here 1 s; the stall would hold 600 s."""
    client = await in_process(IMAGES_SYNC_TIMEOUT_SECONDS="1")
    url = f"/openai/deployments/gpt-image-2/images/generations?api-version={API_VERSION}"
    response = await client.post(url, json={"prompt": "otter [[stream-stall:1]]", "stream": True, "partial_images": 2})
    events = events_of(response)
    assert [kind for kind, _ in events] == ["image_generation.partial_image", "error"]
    assert events[-1][1]["error"]["code"] == "UpstreamTimeout"
    (failure,) = failure_records(azurite, response.headers["x-request-id"])
    assert failure["error"]["code"] == "UpstreamTimeout" and sim.stats()["generations"] == 1


async def test_a_silent_upstream_gets_keep_alive_comments_to_the_caller_between_events(make_settings: Any, sim: SimControl) -> None:
    """Upstream stalls after one partial image (until the test releases it); the caller hears comments meanwhile."""
    async with Runtime(make_settings()) as runtime:
        request = parse_request({"prompt": "otter [[stream-stall:1]]", "stream": True, "partial_images": 2}, "gpt-image-2", "gpt-image-2")
        streamed = await opened(runtime, request)
        pieces, released = [], False
        async for piece in streaming.relay(runtime.service, streamed, lambda name: name, heartbeat=0.05):
            pieces.append(bytes(piece))
            if piece == streaming.HEARTBEAT and not released:
                released = await asyncio.to_thread(sim.release) == 1  # the stall ends: the stream closes without its image
    text = b"".join(pieces)
    assert text.startswith(b"event: image_generation.partial_image\ndata: ")
    assert streaming.HEARTBEAT in pieces and released
    assert text.index(streaming.HEARTBEAT) > text.index(b"\n\n")  # after the partial image's event, never inside it
    assert b"event: error" in pieces[-1]


async def test_a_stream_reads_its_events_within_the_one_deadline_it_was_opened_with(make_settings: Any, sim: SimControl, azurite: Azurite) -> None:
    """No fresh timeout once the stream started: what the wait for a backend and the opening took is gone (here all of it)."""
    now = [0.0]
    deadline = Deadline(60, clock=lambda: now[0])
    async with Runtime(make_settings()) as runtime:
        request = parse_request({"prompt": "otter", "stream": True, "partial_images": 2}, "gpt-image-2", "gpt-image-2")
        streamed = await opened(runtime, request, deadline=deadline)
        now[0] = 60.0  # the request's time is spent
        pieces = b"".join([bytes(piece) async for piece in streaming.relay(runtime.service, streamed, lambda name: name)])
    assert b"image_generation.completed" not in pieces and pieces.endswith(b"\n\n")
    error = json.loads(pieces.rsplit(b"event: error\ndata: ", 1)[1])
    assert error["error"]["code"] == "UpstreamTimeout" and "(60 s)" in error["error"]["message"]
    (failure,) = failure_records(azurite, streamed.generation_id)
    assert failure["error"]["code"] == "UpstreamTimeout" and sim.stats()["generations"] == 1
