"""Issue 21: who a caller is, as the platform vouches for it (shared/callers), in process and offline.

- key mode reads no header: every key holder is the one caller ``key:function-key``;
- entra mode reads the principal App Service authentication sets (``X-MS-CLIENT-PRINCIPAL``, base64
  JSON of the token's claims): the object id, a display name, the provider, the app roles; a request
  without it, or with one the app cannot use, is 401; one without an app role of this app is 403;
- entra mode does not start unless the platform says its authentication is on;
- the queue's jobs belong to a caller named for the queue;
- job ids and input names are keyed with the app's secret, which the app makes once and every
  instance reads.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from azure.storage.blob.aio import BlobServiceClient

from local.azurite import Azurite
from local.easyauth import principal_headers
from shared.callers import (
    CALLER_ROLE,
    OPERATOR_ROLE,
    Caller,
    caller_from_record,
    key_caller,
    owner_of,
    queue_caller,
    request_caller,
)
from shared.callers.scope import SECRET_BLOB, SECRET_CONTAINER, ScopeKey, input_name_for, job_id_for, keyed
from shared.errors import ServiceError
from shared.settings import Settings, SettingsError

OID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def platform_headers(oid: str = OID, roles: tuple[str, ...] = (CALLER_ROLE,), **claims: Any) -> dict[str, str]:
    """The headers App Service authentication sets for a token with these claims (local/easyauth.py maps them as it does)."""
    found = principal_headers({"oid": oid, "tid": "t", "appid": "client-app", **({"roles": list(roles)} if roles else {}), **claims})
    return {k.decode(): v.decode() for k, v in found}


def encoded(principal: object) -> str:
    return base64.b64encode(json.dumps(principal).encode()).decode()


def test_key_mode_reads_no_header_and_names_the_key_holder() -> None:
    forged = {**platform_headers(roles=()), "x-ms-client-principal-name": "ceo@contoso.com"}
    caller = request_caller("key", forged)
    assert caller == key_caller() == request_caller("key", {})
    assert caller.id == "key:function-key" and caller.is_operator  # the one caller of one trust domain
    assert "ceo@contoso.com" not in json.dumps(caller.record())


def test_entra_mode_reads_the_principal_the_platform_set() -> None:
    caller = request_caller("entra", platform_headers(app_displayname="orders-service"))
    assert caller == Caller("entra", OID, "orders-service", "aad", frozenset({CALLER_ROLE}))
    assert caller.id == f"entra:{OID}" and not caller.is_operator
    assert caller.record() == {"id": f"entra:{OID}", "mode": "entra", "principal": OID, "name": "orders-service", "idp": "aad", "roles": [CALLER_ROLE]}
    assert caller_from_record(caller.record()) == caller
    operator = request_caller("entra", platform_headers(roles=(OPERATOR_ROLE,)))
    assert operator.is_operator and operator.may_read(f"entra:{'1' * 8}") and operator.may_read(None)


def test_entra_roles_may_come_as_the_role_claim_type_or_as_roles() -> None:
    """App Service maps claim types (Learn: "Decode the client principal header"); both spellings of roles count."""
    claims = [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": OID}, {"typ": "roles", "val": OPERATOR_ROLE}]
    caller = request_caller("entra", {"x-ms-client-principal": encoded({"auth_typ": "aad", "claims": claims, "role_typ": "x:role"})})
    assert caller.is_operator and caller.principal == OID and caller.idp == "aad"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),  # no principal: the platform did not authenticate this request
        ({"x-ms-client-principal-id": OID}, 401),  # the id alone: no claims, no roles
        ({"x-ms-client-principal": "not base64!"}, 401),
        ({"x-ms-client-principal": encoded(["a list"])}, 401),
        ({"x-ms-client-principal": encoded({"claims": "none"})}, 401),
        ({"x-ms-client-principal": base64.b64encode(b'{"claims": [], "claims": []}').decode()}, 401),  # duplicate keys
        ({"x-ms-client-principal": encoded({"claims": [{"typ": "oid", "val": "a b/../c"}]})}, 401),  # not an id
        ({"x-ms-client-principal": "A" * 70000}, 401),
        (platform_headers(roles=()), 403),  # a valid identity holding no role of this app
        (platform_headers(roles=("Other.Role",)), 403),
    ],
)
def test_entra_mode_refuses_what_it_cannot_use(headers: dict[str, str], status: int) -> None:
    with pytest.raises(ServiceError) as refused:
        request_caller("entra", headers)
    assert refused.value.status == status
    assert refused.value.body()["error"]["code"] == {401: "Unauthorized", 403: "PermissionDenied"}[status]


def test_the_queue_is_a_caller_of_its_own() -> None:
    caller = queue_caller("image-jobs")
    assert caller.id == "queue:image-jobs" and not caller.is_operator and caller.may_read("queue:image-jobs")
    assert not caller.may_read("key:function-key") and not caller.may_read(None)


@pytest.mark.parametrize(
    "stored",
    [None, "x", {"name": "orders-service", "id": OID, "idp": "aad"}, {"id": "entra:x", "mode": "entra", "principal": "y"},
     {"id": "root:x", "mode": "root", "principal": "x"}, {"id": "key:k", "mode": "key", "principal": "k", "roles": "Images.Operator"}],
)  # fmt: skip
def test_records_that_name_no_caller_this_app_wrote_are_operators_only(stored: object) -> None:
    assert caller_from_record(stored) is None and owner_of({"caller": stored}) is None
    assert not request_caller("entra", platform_headers()).may_read(owner_of({"caller": stored}))


def test_entra_mode_starts_only_when_the_platform_says_authentication_is_on(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match=r"IMAGES_CALLER_AUTH=entra needs App Service authentication.*WEBSITE_AUTH_ENABLED"):
        make_settings(IMAGES_CALLER_AUTH="entra")
    with pytest.raises(SettingsError, match="WEBSITE_AUTH_ENABLED"):
        make_settings(IMAGES_CALLER_AUTH="entra", WEBSITE_AUTH_ENABLED="False")
    assert make_settings(IMAGES_CALLER_AUTH="entra", WEBSITE_AUTH_ENABLED="True").caller_auth == "entra"  # as the platform writes it
    assert make_settings().caller_auth == "key"


def test_names_are_keyed_by_caller_and_secret() -> None:
    a, b = request_caller("entra", platform_headers()), request_caller("entra", platform_headers(oid="1" * 8))
    key, other_key = b"k" * 32, b"o" * 32
    assert job_id_for(key, a, "gpt-image-2", "order-4711") != job_id_for(key, b, "gpt-image-2", "order-4711")
    assert job_id_for(key, a, "gpt-image-2", "order-4711") != job_id_for(other_key, a, "gpt-image-2", "order-4711")
    assert job_id_for(key, a, "gpt-image-2", "order-4711") != job_id_for(key, a, "gpt-image-1", "order-4711")
    assert job_id_for(key, a, "d", "k").startswith("idem-") and len(job_id_for(key, a, "d", "k")) == 45
    digest = "ab" * 32
    assert input_name_for(key, a, digest, "png") != input_name_for(key, b, digest, "png")
    assert digest not in input_name_for(key, a, digest, "png")
    with pytest.raises(ValueError, match="newline"):
        keyed(key, "a\nb")


async def test_every_instance_reads_the_one_secret_the_first_one_made(azurite: Azurite) -> None:
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as blobs:
        keys = [ScopeKey(blobs) for _ in range(4)]  # four instances starting at once
        made = await asyncio.gather(*(k.key() for k in keys))
        assert len(set(made)) == 1 and len(made[0]) == 32
        stored = await (await blobs.get_blob_client(SECRET_CONTAINER, SECRET_BLOB).download_blob()).readall()
        assert base64.b64decode(stored) == made[0]
        assert await ScopeKey(blobs).key() == made[0]  # a later start reads it
