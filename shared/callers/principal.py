"""Entra mode: the caller App Service authentication names in the headers it sets.

With authentication on, the platform validates the caller's bearer token (issuer, audience,
signature, expiry, the allowed client identities), refuses the request with 401 when it fails,
removes any ``X-MS-CLIENT-PRINCIPAL*`` header a client sent, and sets them from the token
(Learn: "Work with user identities in Azure App Service authentication"):

- ``X-MS-CLIENT-PRINCIPAL``: base64 of ``{"auth_typ", "claims": [{"typ", "val"}], "name_typ", "role_typ"}``;
- ``X-MS-CLIENT-PRINCIPAL-ID``, ``-NAME``, ``-IDP``: the caller's id, a readable name, the provider.

The principal is the token's object id (``oid``, which claim mapping may spell as the
``objectidentifier`` URI), else ``X-MS-CLIENT-PRINCIPAL-ID``; roles are the claims of type
``role_typ`` (or ``roles``). These headers are read only in entra mode, and entra mode starts
only when the platform says its authentication is on (``WEBSITE_AUTH_ENABLED``, settings).
A request without them, or with a principal this app cannot use, is 401; one without
:data:`CALLER_ROLE` or :data:`OPERATOR_ROLE` is 403.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from typing import Any

import pybase64

from shared.callers.identity import CALLER_ROLE, OPERATOR_ROLE, Caller, key_caller
from shared.errors import ServiceError
from shared.strictjson import JSONRefused, loads

PRINCIPAL_HEADER = "x-ms-client-principal"
ID_HEADER = "x-ms-client-principal-id"
NAME_HEADER = "x-ms-client-principal-name"
IDP_HEADER = "x-ms-client-principal-idp"
PRINCIPAL_HEADERS = (PRINCIPAL_HEADER, ID_HEADER, NAME_HEADER, IDP_HEADER)

_MAX_PRINCIPAL_CHARS = 64 * 1024  # a token's claims, base64: a few KB; a group-heavy user tens of KB
_MAX_VALUE_CHARS = 256
# Object ids are GUIDs; other providers' ids are printable: kept to what a blob's metadata can carry.
_PRINCIPAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_OID = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
_ROLE = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
_NAMES = ("preferred_username", "upn", "name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn", "appid", "azp")


def unauthorized(message: str) -> ServiceError:
    """401 in the Azure error shape (App Service answers an anonymous call before the app sees it)."""
    return ServiceError(401, "Unauthorized", message)


def entra_caller(headers: Mapping[str, str]) -> Caller:
    """The caller App Service authentication set the headers for; 401 without them, 403 without a role."""
    claims = _claims(headers.get(PRINCIPAL_HEADER, ""))
    principal = _first(claims["claims"], _OID) or headers.get(ID_HEADER, "").strip()
    if not _PRINCIPAL.fullmatch(principal):
        raise unauthorized("The platform named no caller this service can use (no object id in X-MS-CLIENT-PRINCIPAL).")
    role_types = {str(claims.get("role_typ") or ""), *_ROLE} - {""}
    roles = frozenset(_short(v) for t, v in claims["claims"] if t in role_types)
    name = _short(headers.get(NAME_HEADER, "")) or _first(claims["claims"], (str(claims.get("name_typ") or ""), *_NAMES))
    idp = _short(headers.get(IDP_HEADER, "")) or _short(str(claims.get("auth_typ") or ""))
    caller = Caller("entra", principal, name or None, idp or None, roles)
    if not roles & {CALLER_ROLE, OPERATOR_ROLE}:
        raise ServiceError(
            403, "PermissionDenied", f"The caller {principal} holds neither app role {CALLER_ROLE} nor {OPERATOR_ROLE}: ask the owner to assign one."
        )
    return caller


def _claims(header: str) -> dict[str, Any]:
    """The decoded ``X-MS-CLIENT-PRINCIPAL``, its claims as ``[(typ, val)]``; 401 when absent or malformed."""
    if not header:
        raise unauthorized("No caller: App Service authentication set no X-MS-CLIENT-PRINCIPAL (send a bearer token for this app).")
    if len(header) > _MAX_PRINCIPAL_CHARS:
        raise unauthorized("X-MS-CLIENT-PRINCIPAL is larger than this service reads.")
    try:
        decoded: Any = loads(pybase64.b64decode(header, validate=True).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError, JSONRefused):
        raise unauthorized("X-MS-CLIENT-PRINCIPAL is not base64 JSON as App Service sets it.") from None
    raw = decoded.get("claims") if isinstance(decoded, dict) else None
    if not isinstance(raw, list):
        raise unauthorized("X-MS-CLIENT-PRINCIPAL carries no claims.")
    pairs = [(c["typ"], c["val"]) for c in raw if isinstance(c, dict) and isinstance(c.get("typ"), str) and isinstance(c.get("val"), str)]
    return {**decoded, "claims": pairs}


def _first(claims: list[tuple[str, str]], types: tuple[str, ...]) -> str:
    """The first claim value of the first type in ``types`` that the claims hold; "" when none."""
    for wanted in types:
        for typ, value in claims:
            if typ == wanted and value.strip():
                return _short(value)
    return ""


def _short(value: str) -> str:
    """A header or claim value as stored: trimmed, printable, bounded."""
    value = value.strip()
    return value[:_MAX_VALUE_CHARS] if value.isprintable() else ""


def request_caller(mode: str, headers: Mapping[str, str]) -> Caller:
    """The caller of an HTTP request in ``mode`` (IMAGES_CALLER_AUTH): key mode never reads a header."""
    return entra_caller(headers) if mode == "entra" else key_caller()
