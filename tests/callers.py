"""Callers for tests: Entra principals as App Service authentication names them, and the records they own.

In entra mode the platform validates the caller's token and sets ``X-MS-CLIENT-PRINCIPAL`` (base64
JSON of the token's claims, mapped to the .NET claim types) and ``X-MS-CLIENT-PRINCIPAL-ID``/``-IDP``/
``-NAME``; the app reads them only when the platform says its authentication is on
(``WEBSITE_AUTH_ENABLED``). In-process tests set them as the platform would; the local stack's front
(local/easyauth.py) does it from a real token.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

from local.azurite import Azurite
from local.easyauth import principal_headers
from shared.callers import CALLER_ROLE, OPERATOR_ROLE
from tests.test_api import blob_name_from_url, record_for

ENTRA = {"IMAGES_CALLER_AUTH": "entra", "WEBSITE_AUTH_ENABLED": "true"}


def entra(**env: str) -> dict[str, str]:
    """Settings overrides for entra mode (as when App Service authentication is on), and ``env``."""
    return {**ENTRA, **env}


def principal(oid: str, *roles: str, name: str | None = None) -> dict[str, str]:
    """The headers App Service authentication sets for the principal ``oid`` with ``roles`` (default: the caller role),
    named ``name`` (default: ``oid``), mapped as local/easyauth.py maps a validated token."""
    found = principal_headers({"oid": oid, "roles": list(roles or (CALLER_ROLE,)), "name": name or oid})
    return {key.decode(): value.decode() for key, value in found}


def operator(oid: str = "operator") -> dict[str, str]:
    """An operator's headers."""
    return principal(oid, OPERATOR_ROLE)


def records_of(azurite: Azurite, answers: Iterable[httpx.Response]) -> list[dict[str, Any]]:
    """The archive records of synchronous answers, as the service wrote them (default images container)."""
    return [record_for(azurite, blob_name_from_url(answer.json()["data"][0]["url"])) for answer in answers]
