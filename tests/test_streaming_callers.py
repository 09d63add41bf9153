"""Streams and callers (issues 21 and 22): a stream carries the caller the platform vouches for.

- In entra mode (in process, the principal headers set as App Service authentication sets them), a
  streamed image is archived as its caller's: the record names the caller, every blob carries its id,
  and another caller reading the completed event's ``url`` gets what a missing image gets; a cut
  stream's failure record names and belongs to the caller too; a streamed edit cannot name another
  caller's archived image.
- Over real HTTP through the local front that stands in for App Service authentication
  (local/easyauth.py, in front of the app as the Functions worker serves it): the front refuses a
  request without a token as JSON, and passes a stream through as it is made: the first partial image
  reaches the caller while upstream still holds the rest back.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient

from local.azurite import Azurite
from local.easyauth import EasyAuthFront
from local.functions_worker import hosted
from local.identity import LOCAL_AUDIENCE, IdentityEndpoint, TokenIssuer
from local.servers import ServerThread, serve_in_thread
from shared.archive import OWNER_METADATA
from shared.callers import CALLER_ROLE, OPERATOR_ROLE
from shared.callers.ledger import Book, Ledger
from shared.index import caller_key
from shared.models import parse_request
from shared.models.edits import form_values, parse_edit
from shared.pricing import cost, streamed_cost, worst_case
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import SimControl
from tests.test_callers import platform_headers
from tests.test_edits import multipart
from tests.test_streaming import events_of, png

InProcess = Callable[..., Awaitable[httpx.AsyncClient]]
API_VERSION = "2025-04-01-preview"
GENERATE = f"/openai/deployments/gpt-image-2/images/generations?api-version={API_VERSION}"
EDIT = f"/openai/deployments/gpt-image-1.5/images/edits?api-version={API_VERSION}"
A, B, OP = (str(uuid.UUID(int=n)) for n in (0xA1, 0xB1, 0x01))
ROLES = {A: (CALLER_ROLE,), B: (CALLER_ROLE,), OP: (OPERATOR_ROLE,)}


def entra(suffix: str) -> dict[str, str]:
    """Entra mode with this test's own containers and queue."""
    return {
        "IMAGES_CALLER_AUTH": "entra", "WEBSITE_AUTH_ENABLED": "True", "IMAGES_CONTAINER": f"streams-{suffix}",
        "IMAGES_JOBS_CONTAINER": f"streams-jobs-{suffix}", "IMAGES_QUEUE": f"streams-{suffix}",
    }  # fmt: skip


def as_(who: str) -> dict[str, str]:
    return platform_headers(oid=who, roles=ROLES[who])


class Blobs:
    def __init__(self, azurite: Azurite, container: str) -> None:
        self.container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)

    def owner(self, name: str) -> str | None:
        return self.container.get_blob_client(name).get_blob_properties().metadata.get(OWNER_METADATA)

    def json(self, name: str) -> dict[str, Any]:
        return json.loads(self.container.download_blob(name).readall())  # type: ignore[no-any-return]

    def under(self, request_id: str) -> list[str]:
        return [b.name for b in self.container.list_blobs() if f"/{request_id}/" in b.name]


async def test_a_streamed_image_is_its_callers_and_another_caller_reads_it_as_a_missing_one(
    in_process: InProcess, azurite: Azurite, sim: SimControl
) -> None:
    suffix = uuid.uuid4().hex[:10]
    client, blobs = await in_process(**entra(suffix)), Blobs(azurite, f"streams-{suffix}")
    response = await client.post(GENERATE, json={"prompt": "A's lighthouse", "stream": True, "partial_images": 1}, headers=as_(A))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    kind, completed = events_of(response)[-1]
    assert kind == "image_generation.completed"
    name, request_id = completed["name"], response.headers["x-request-id"]
    assert completed["url"].endswith(f"/images/{name}")
    record = blobs.json(f"{name.rsplit('/', 1)[0]}/record.json")
    assert record["caller"]["id"] == f"entra:{A}" and record["stream"] == {"partial_images": {"asked": 1, "sent": 1}}
    assert {blobs.owner(blob) for blob in blobs.under(request_id)} == {f"entra:{A}"}  # the image and its record alike
    assert sorted(blob.rsplit("/", 1)[1] for blob in blobs.under(request_id)) == ["0.png", "record.json"]  # partial images: not by default

    link = "/images/" + name
    absent = link.replace(request_id, uuid.uuid4().hex)
    by_b, missing = await client.get(link, headers=as_(B)), await client.get(absent, headers=as_(B))
    assert by_b.status_code == missing.status_code == 404
    assert by_b.text.replace(link.removeprefix("/images/"), "NAME") == missing.text.replace(absent.removeprefix("/images/"), "NAME")
    for who in (A, OP):
        assert (await client.get(link, headers=as_(who))).status_code == 302, who

    # B's streamed edit naming A's image is refused as one naming nothing, before upstream.
    edits_before = sim.stats()["edits"]
    refused = await client.post(EDIT, json={"prompt": "B's edit", "image": [name], "stream": True}, headers=as_(B))
    assert refused.status_code == 400 and refused.headers["content-type"].startswith("application/json")
    assert refused.json()["error"]["param"] == "image" and sim.stats()["edits"] == edits_before


async def test_a_cut_streams_failure_record_names_its_caller_and_is_theirs(in_process: InProcess, azurite: Azurite, sim: SimControl) -> None:
    suffix = uuid.uuid4().hex[:10]
    client, blobs = await in_process(**entra(suffix)), Blobs(azurite, f"streams-{suffix}")
    response = await client.post(GENERATE, json={"prompt": "otter [[stream-cut:1]]", "stream": True, "partial_images": 2}, headers=as_(A))
    assert [kind for kind, _ in events_of(response)] == ["image_generation.partial_image", "error"]
    (failure,) = blobs.under(response.headers["x-request-id"])
    assert blobs.json(failure)["caller"]["id"] == f"entra:{A}" and blobs.owner(failure) == f"entra:{A}"
    assert sim.stats()["generations"] == 1


async def test_with_the_setting_partial_images_are_archived_as_the_callers_and_named_in_the_record(
    in_process: InProcess, azurite: Azurite, sim: SimControl
) -> None:
    suffix = uuid.uuid4().hex[:10]
    client = await in_process(IMAGES_ARCHIVE_PARTIAL_IMAGES="true", **entra(suffix))
    blobs = Blobs(azurite, f"streams-{suffix}")
    response = await client.post(GENERATE, json={"prompt": "A's lighthouse", "stream": True, "partial_images": 2}, headers=as_(A))
    events = events_of(response)
    assert [kind for kind, _ in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    name = events[-1][1]["name"]
    record = blobs.json(f"{name.rsplit('/', 1)[0]}/record.json")
    partials = record["stream"]["partial_images"]["archived"]
    assert {k: v for k, v in record["stream"]["partial_images"].items() if k != "archived"} == {"asked": 2, "sent": 2}
    assert [p.rsplit("/", 1)[1] for p in partials] == ["partial-0.png", "partial-1.png"]
    for partial, (_, event) in zip(partials, events, strict=False):  # the bytes the caller was sent, the caller's
        assert blobs.container.download_blob(partial).readall() == base64.b64decode(event["b64_json"])
        assert blobs.owner(partial) == f"entra:{A}"
        assert (await client.get(f"/images/{partial}", headers=as_(A))).status_code == 302
        assert (await client.get(f"/images/{partial}", headers=as_(B))).status_code == 404

    # A stream cut after them leaves its partial images, named in the failure record.
    cut = await client.post(GENERATE, json={"prompt": "otter [[stream-cut:2]]", "stream": True, "partial_images": 3}, headers=as_(A))
    assert [kind for kind, _ in events_of(cut)] == ["image_generation.partial_image"] * 2 + ["error"]
    leaves = {blob.rsplit("/", 1)[1]: blob for blob in blobs.under(cut.headers["x-request-id"])}
    (failure,) = [blobs.json(blob) for leaf, blob in leaves.items() if leaf.startswith("failed-")]
    assert failure["stream"] is True and failure["partial_images_archived"] == [leaves["partial-0.png"], leaves["partial-1.png"]]
    assert sim.stats()["generations"] == 2


# ---------------------------------------------------------------- the caller's limits (IMAGES_CALLER_LIMITS)

STREAM = {"prompt": "a lighthouse at dawn", "size": "1024x1024", "quality": "low", "stream": True, "partial_images": 2}


async def book_of(azurite: Azurite, jobs: str, who: str) -> Book:
    """The caller's ledger for today, as a third instance reads it."""
    async with AsyncBlobServiceClient.from_connection_string(azurite.connection_string) as service:
        return await Ledger(service.get_container_client(jobs)).book(caller_key(f"entra:{who}"))


async def limited(in_process: InProcess, limits: dict[str, Any]) -> tuple[httpx.AsyncClient, str]:
    """The app in entra mode with ``limits``: the client and the jobs container, where the ledger lives."""
    suffix = uuid.uuid4().hex[:10]
    return await in_process(IMAGES_CALLER_LIMITS=json.dumps(limits), **entra(suffix)), f"streams-jobs-{suffix}"


async def test_a_stream_over_the_callers_limit_is_refused_as_json_before_upstream(in_process: InProcess, sim: SimControl) -> None:
    client, _ = await limited(in_process, {"callers": {A: {"images_per_minute": 1}, B: {"usd_per_day": 0}}})
    first = await client.post(GENERATE, json=STREAM, headers=as_(A))
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/event-stream")
    assert first.headers["x-ratelimit-limit-images"] == "1" and first.headers["x-ratelimit-remaining-images"] == "0"  # this stream counted
    second = await client.post(GENERATE, json=STREAM, headers=as_(A))
    assert second.status_code == 429 and second.headers["content-type"].startswith("application/json")
    assert second.json()["error"]["code"] == "RateLimited" and int(second.headers["Retry-After"]) >= 1
    assert second.headers["x-ratelimit-remaining-images"] == "0" and "x-should-retry" not in second.headers  # a minute cures it
    spent = await client.post(GENERATE, json=STREAM, headers=as_(B))
    assert spent.status_code == 429 and spent.json()["error"]["code"] == "BudgetExceeded" and spent.headers["x-should-retry"] == "false"
    assert sim.stats()["generations"] == 1  # the refused streams never went upstream


async def test_a_stream_settles_at_its_cost_with_its_partial_images_and_a_cut_one_at_its_worst_case(
    in_process: InProcess, azurite: Azurite, sim: SimControl
) -> None:
    client, jobs = await limited(in_process, {"callers": {A: {"usd_per_day": 10}}})
    request = parse_request(STREAM, "gpt-image-2", "gpt-image-2")
    worst = worst_case("gpt-image-2", parse_request({**STREAM, "prompt": "otter [[stream-cut:1]]"}, "gpt-image-2", "gpt-image-2").upstream_body)
    assert worst is not None
    made = await client.post(GENERATE, json=STREAM, headers=as_(A))
    completed = events_of(made)[-1][1]
    plain = cost("gpt-image-2", completed["usage"], request.upstream_body, 1)["usd"]
    assert completed["cost"]["usd"] == streamed_cost("gpt-image-2", completed["usage"], request.upstream_body, 2)["usd"] > plain  # partials priced
    book = await book_of(azurite, jobs, A)
    assert book.spent == pytest.approx(completed["cost"]["usd"]) and book.held == {} and book.images == 1

    cut = await client.post(GENERATE, json={**STREAM, "prompt": "otter [[stream-cut:1]]"}, headers=as_(A))  # its worst case: above
    assert [kind for kind, _ in events_of(cut)] == ["image_generation.partial_image", "error"]
    book = await book_of(azurite, jobs, A)  # the cut stream may have been billed whole: its worst case is charged
    assert book.spent == pytest.approx(completed["cost"]["usd"] + worst) and book.held == {}

    filtered = await client.post(GENERATE, json={**STREAM, "prompt": "x [[filter:prompt]]"}, headers=as_(A))
    assert filtered.status_code == 400 and filtered.json()["error"]["code"] == "contentFilter"  # refused before any work: given back
    assert (await book_of(azurite, jobs, A)).spent == pytest.approx(completed["cost"]["usd"] + worst)
    assert sim.stats()["generations"] == 2


async def test_a_streamed_edit_holds_its_inputs_in_the_callers_budget(in_process: InProcess, sim: SimControl) -> None:
    fields = {"prompt": "paint it", "stream": "true", "partial_images": "1"}
    sent = parse_edit(form_values(fields), ["image"], None, "gpt-image-1.5", "gpt-image-1.5", image_param="image").upstream_body
    without_inputs, with_inputs = worst_case("gpt-image-1.5", sent), worst_case("gpt-image-1.5", sent, [1024 * 1024])
    assert without_inputs is not None and with_inputs is not None and with_inputs > without_inputs
    client, _ = await limited(in_process, {"callers": {A: {"usd_per_day": (without_inputs + with_inputs) / 2}, B: {"usd_per_day": with_inputs}}})
    body, headers = multipart(fields, [("image", png((20, 90, 200)))])
    refused = await client.post(EDIT, content=body, headers={**headers, **as_(A)})  # enough for the prompt alone, not with the image
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "BudgetExceeded" and sim.stats()["edits"] == 0
    granted = await client.post(EDIT, content=body, headers={**headers, **as_(B)})
    assert granted.status_code == 200 and events_of(granted)[-1][0] == "image_edit.completed" and sim.stats()["edits"] == 1


# ---------------------------------------------------------------- through the local stand-in of App Service authentication


@pytest.fixture()
def front(make_settings: Callable[..., Settings]) -> Iterator[tuple[ServerThread, IdentityEndpoint]]:
    """The app as the worker serves it, behind the front, over real HTTP: as `dev.py serve` runs it in entra mode."""
    identity = IdentityEndpoint(TokenIssuer(lifetime=3600))
    app = hosted(Runtime(make_settings(**entra(uuid.uuid4().hex[:10]))))
    server = serve_in_thread(EasyAuthFront(app, identity, audiences=[LOCAL_AUDIENCE]))
    yield server, identity
    server.stop()


def bearer(identity: IdentityEndpoint, principal: str) -> dict[str, str]:
    client_id, _ = identity.issuer.add_principal(principal, (CALLER_ROLE,), LOCAL_AUDIENCE)
    token, _ = identity.issuer.issue(LOCAL_AUDIENCE, client_id, 3600)
    return {"Authorization": f"Bearer {token}"}


def test_the_local_front_passes_a_stream_through_as_it_is_made(front: tuple[ServerThread, IdentityEndpoint], sim: SimControl) -> None:
    server, identity = front
    body = {"prompt": "otter [[stream-stall:1]]", "stream": True, "partial_images": 2}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        refused = client.post(GENERATE, json=body)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "Unauthorized" and sim.stats()["requests"] == 0
        with client.stream("POST", GENERATE, json=body, headers=bearer(identity, "orders-service")) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            received = b""
            chunks = response.iter_bytes()
            while b"\n\n" not in received:  # the first event, while upstream holds the rest back (a buffer would wait here)
                received += next(chunks)
            assert received.startswith(b"event: image_generation.partial_image\ndata: ")
            assert sim.release() == 1  # upstream was still stalled after its first event
            rest = b"".join(chunks)
    assert b"event: error" in rest and b"image_generation.completed" not in rest
