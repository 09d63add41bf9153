"""Issue 21: each caller sees only its own, over the API in process (entra mode, and key mode forged).

In entra mode the app reads the principal App Service authentication sets; here the headers are set
as the platform sets them (local/easyauth.py maps a token's claims the same way; the local front and
its token checks are tested over real HTTP in tests/test_callers_local.py). Three callers: A and B
hold the caller role, OP the operator role.

For every read route, B gets for A's existing object exactly what it gets for a missing one: the same
status, the same body (with the name it asked for), after the same number of storage requests, and
nothing of A's is sent upstream or changed; OP gets A's.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from local.azurite import Azurite
from shared.callers import CALLER_ROLE, OPERATOR_ROLE, Caller, request_caller
from tests import scoping
from tests.conftest import SimControl
from tests.test_api import DEPLOYMENT_PATH, blob_name_from_url, container, record_for
from tests.test_callers import platform_headers
from tests.test_edits import EDITS, image_bytes, multipart

InProcess = Callable[..., Awaitable[httpx.AsyncClient]]
SUBMIT = "/openai/deployments/{}/images/generations:submit?api-version=2025-04-01-preview"
A, B, OP = (str(uuid.UUID(int=n)) for n in (0xA, 0xB, 0x0))
ROLES = {A: (CALLER_ROLE,), B: (CALLER_ROLE,), OP: (OPERATOR_ROLE,)}


@dataclass
class Storage:
    """Counts the storage requests the app makes (a raw request hook on its clients)."""

    calls: list[str] = field(default_factory=list)

    def hook(self, request: Any) -> None:
        self.calls.append(request.http_request.method)


@dataclass
class Api:
    client: httpx.AsyncClient
    storage: Storage
    azurite: Azurite
    images: str  # this test's images container

    def name(self, url: str) -> str:
        """The blob name a SAS link of this test's images container points at."""
        return urlsplit(url).path.split(f"/{self.images}/", 1)[1]

    def record(self, name: str) -> dict[str, Any]:
        """The record beside the archived blob ``name``."""
        base = name.rsplit("/", 1)[0]
        return json.loads(container(self.azurite, self.images).download_blob(f"{base}/record.json").readall())  # type: ignore[no-any-return]

    async def as_(self, who: str, method: str, url: str, **kwargs: Any) -> tuple[httpx.Response, int]:
        """One request as caller ``who``: the answer, and how many storage requests it took."""
        headers = {**platform_headers(oid=who, roles=ROLES[who]), **kwargs.pop("headers", {})}
        before = len(self.storage.calls)
        response = await self.client.request(method, url, headers=headers, **kwargs)
        return response, len(self.storage.calls) - before


@pytest.fixture()
async def api(in_process: InProcess, azurite: Azurite) -> Api:
    storage = Storage()
    suffix = uuid.uuid4().hex[:10]
    client = await in_process(
        storage_options={"raw_request_hook": storage.hook}, IMAGES_CALLER_AUTH="entra", WEBSITE_AUTH_ENABLED="True",
        IMAGES_CONTAINER=f"callers-{suffix}", IMAGES_JOBS_CONTAINER=f"callers-jobs-{suffix}", IMAGES_QUEUE=f"callers-{suffix}",
    )  # fmt: skip
    return Api(client, storage, azurite, f"callers-{suffix}")


def same_but_the_name(answer: httpx.Response, name: str, missing: httpx.Response, missing_name: str) -> None:
    """Two refusals that differ only in the name each was asked about."""
    assert answer.status_code == missing.status_code
    assert answer.text.replace(name, "NAME") == missing.text.replace(missing_name, "NAME"), (answer.text, missing.text)
    assert set(answer.headers) == set(missing.headers)


async def test_a_missing_or_invalid_principal_is_401_and_no_role_is_403(api: Api, sim: SimControl) -> None:
    """The app's own check behind the platform's: nothing runs without a principal it can use."""
    anonymous = await api.client.post(DEPLOYMENT_PATH.format("gpt-image-2"), json={"prompt": "x"})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "Unauthorized"
    bad = await api.client.get("/openai/operations/images/x", headers={"x-ms-client-principal": "%%%"})
    assert bad.status_code == 401
    no_role = await api.client.post(DEPLOYMENT_PATH.format("gpt-image-2"), json={"prompt": "x"}, headers=platform_headers(oid=A, roles=()))
    assert no_role.status_code == 403 and no_role.json()["error"]["code"] == "PermissionDenied"
    assert sim.stats()["requests"] == 0


async def test_each_read_route_answers_another_callers_object_as_a_missing_one(api: Api, azurite: Azurite, sim: SimControl) -> None:
    generated, _ = await api.as_(A, "POST", DEPLOYMENT_PATH.format("gpt-image-2"), json={"prompt": "A's lighthouse"})
    assert generated.status_code == 200, generated.text
    image = api.name(generated.json()["data"][0]["url"])
    record = image.rsplit("/", 1)[0] + "/record.json"
    assert api.record(record)["caller"]["id"] == f"entra:{A}"
    body, headers = multipart({"prompt": "A's edit"}, [("image", image_bytes())])
    edited, _ = await api.as_(A, "POST", EDITS.format("gpt-image-1"), content=body, headers=headers)
    assert edited.status_code == 200, edited.text
    [upload] = api.record(api.name(edited.json()["data"][0]["url"]))["inputs"]["image"]
    key = f"order-{uuid.uuid4().hex[:6]}"
    submitted, _ = await api.as_(A, "POST", SUBMIT.format("gpt-image-2"), json={"prompt": "A's job"}, headers={"Idempotency-Key": key})
    job = submitted.json()["id"]
    calls_upstream = sim.stats()["requests"]

    # Job status: the same 404, after the same one read, as for an id nobody used.
    unknown = job[:-4] + "0000" if not job.endswith("0000") else job[:-4] + "1111"
    for_a, reads = await api.as_(B, "GET", f"/openai/operations/images/{job}")
    missing, missing_reads = await api.as_(B, "GET", f"/openai/operations/images/{unknown}")
    assert for_a.status_code == 404 and reads == missing_reads == 1
    same_but_the_name(for_a, job, missing, unknown)

    # Stable links: an image, a record, an uploaded input.
    for name in (image, record, upload):
        absent = re.sub(r"[0-9a-f]{8}(?=[^/]*/[^/]*$|[^/]*\.\w+$)", "00000000", name, count=1)
        assert absent != name
        for_a, reads = await api.as_(B, "GET", f"/images/{name}")
        missing, missing_reads = await api.as_(B, "GET", f"/images/{absent}")
        assert for_a.status_code == 404 and reads == missing_reads == 1, name
        same_but_the_name(for_a, name, missing, absent)

    # An edit naming A's archived image (and A's upload) is refused as one naming nothing.
    for name in (image, upload):
        absent = name.replace(name.rsplit("/", 1)[-1].split(".")[0][:8], "00000000", 1) if name == upload else image.replace("/0.", "/9.")
        for_a, reads = await api.as_(B, "POST", EDITS.format("gpt-image-1"), json={"prompt": "B's edit", "image": [name]})
        missing, missing_reads = await api.as_(B, "POST", EDITS.format("gpt-image-1"), json={"prompt": "B's edit", "image": [absent]})
        assert for_a.status_code == 400 and for_a.json()["error"]["param"] == "image" and reads == missing_reads
        same_but_the_name(for_a, name, missing, absent)

    # The same Idempotency-Key is B's own job, not a 409 telling B that A used it.
    mine, _ = await api.as_(B, "POST", SUBMIT.format("gpt-image-2"), json={"prompt": "B's other job"}, headers={"Idempotency-Key": key})
    assert mine.status_code == 202 and mine.json()["id"] != job
    assert mine.json()["id"] == scoping.job_id(azurite, "gpt-image-2", key, caller=_caller(B))
    assert sim.stats()["requests"] == calls_upstream  # nothing of B's reached upstream

    # A sees its own; the operator sees A's.
    for who in (A, OP):
        view, _ = await api.as_(who, "GET", f"/openai/operations/images/{job}")
        assert view.status_code == 200 and view.json()["id"] == job
        for name in (image, record, upload):
            link, _ = await api.as_(who, "GET", f"/images/{name}")
            assert link.status_code == 302, (who, name)
    by_operator, _ = await api.as_(OP, "POST", EDITS.format("gpt-image-1"), json={"prompt": "the operator's edit", "image": [image]})
    assert by_operator.status_code == 200, by_operator.text
    assert api.record(api.name(by_operator.json()["data"][0]["url"]))["caller"]["id"] == f"entra:{OP}"


async def test_key_mode_ignores_principal_headers_a_client_sends(in_process: InProcess, azurite: Azurite, sim: SimControl) -> None:
    """Anyone with the function key could send X-MS-CLIENT-PRINCIPAL*: in key mode it changes nothing stored or scoped."""
    client = await in_process(IMAGES_QUEUE=f"forged-{uuid.uuid4().hex[:10]}")
    key = f"order-{uuid.uuid4().hex[:6]}"
    plain = await client.post(SUBMIT.format("gpt-image-2"), json={"prompt": "x"}, headers={"Idempotency-Key": key})
    forged_headers = {**platform_headers(oid=B, roles=(OPERATOR_ROLE,)), "x-ms-client-principal-name": "ceo@contoso.com", "Idempotency-Key": key}
    forged = await client.post(SUBMIT.format("gpt-image-2"), json={"prompt": "x"}, headers=forged_headers)
    assert plain.json()["id"] == forged.json()["id"] == scoping.job_id(azurite, "gpt-image-2", key)
    made = await client.post(DEPLOYMENT_PATH.format("gpt-image-2"), json={"prompt": "x"}, headers=forged_headers)
    record = record_for(azurite, blob_name_from_url(made.json()["data"][0]["url"]))
    assert record["caller"]["id"] == "key:function-key" and "ceo@contoso.com" not in made.text + str(record) and B not in str(record)


def _caller(oid: str) -> Caller:
    return request_caller("entra", platform_headers(oid=oid, roles=ROLES[oid]))
