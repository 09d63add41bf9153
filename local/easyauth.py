"""The local stand-in of App Service authentication ("Easy Auth"): in front of the app, as the platform is.

What the platform does for an app with ``requireAuthentication`` and ``Return401``, done here
for every HTTP request before the app sees it:

1. every ``X-MS-CLIENT-PRINCIPAL*`` and ``X-MS-TOKEN-*`` header a client sent is removed;
2. paths under ``/.auth/`` belong to the platform, never to the app: here they serve the
   local identity stand-in (local/identity.py: its token endpoint, its keys, the managed
   identity endpoint);
3. an excluded path (``/healthz``) goes through anonymously;
4. otherwise the request needs ``Authorization: Bearer <token>``: signed by a key of the
   issuer's JWKS, from that issuer, within ``nbf``/``exp``, for one of the app's audiences.
   Missing or invalid: 401 with ``WWW-Authenticate: Bearer``. A valid token of an identity
   outside ``allowed_principals`` (when given): 403, as the platform's allowed identities do;
5. then it sets ``X-MS-CLIENT-PRINCIPAL`` (base64 JSON of the claims, mapped as the platform
   maps them), ``-ID`` (the object id), ``-NAME`` and ``-IDP`` (``aad``), and passes the request on.

For a browser (the gallery), ``/.auth/login/local?principal=X&roles=R&post_login_redirect_uri=/gallery``
stands in for the platform's sign-in (``/.auth/login/aad``): it keeps the token in the session
cookie ``AppServiceAuthSession``, which the front reads when a request carries no bearer token;
``/.auth/logout`` ends it.

The app cannot tell this front from the platform: it reads the same headers either way
(shared/callers/principal.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from local.identity import IdentityEndpoint, verify

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

AUTH_PREFIX = "/.auth"
IDENTITY_PREFIX = "/.auth/local"
EXCLUDED_PATHS = ("/healthz",)
SESSION_COOKIE = "AppServiceAuthSession"  # the platform's session cookie name
# Claim mapping as App Service applies it to X-MS-CLIENT-PRINCIPAL (the .NET claim type URIs).
_MAPPED = {
    "oid": "http://schemas.microsoft.com/identity/claims/objectidentifier",
    "tid": "http://schemas.microsoft.com/identity/claims/tenantid",
    "upn": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "sub": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
}
_NAME_TYPE = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
_ROLE_TYPE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
_NAME_CLAIMS = ("preferred_username", "upn", "unique_name", "name", "app_displayname", "appid")


class EasyAuthFront:
    """An ASGI app that authenticates each request as App Service authentication would, then calls ``app``."""

    def __init__(
        self, app: ASGIApp, identity: IdentityEndpoint, *, audiences: Iterable[str], allowed_principals: Iterable[str] | None = None
    ) -> None:
        self.app = app
        self.identity = identity
        self.audiences = list(audiences)
        self.allowed = None if allowed_principals is None else frozenset(allowed_principals)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan (and anything else) is the app's own
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path == AUTH_PREFIX or path.startswith(AUTH_PREFIX + "/"):
            await self._platform(scope, receive, send, path)
            return
        headers = [(k, v) for k, v in scope["headers"] if not _platform_header(k)]
        if path in EXCLUDED_PATHS:
            await self.app({**scope, "headers": headers}, receive, send)
            return
        token = _bearer(headers) or _session(headers)
        claims = verify(token, self.identity.issuer.jwks(), self.identity.issuer.issuer, self.audiences) if token else None
        if claims is None:
            why = "no bearer token" if not token else "the bearer token is not valid for this app (signature, issuer, audience or lifetime)"
            await _refuse(send, 401, f"Unauthorized: {why}.", {"www-authenticate": f'Bearer realm="{_host(scope)}"'})
            return
        if self.allowed is not None and claims.get("oid") not in self.allowed:
            await _refuse(send, 403, "Forbidden: this identity is not among the app's allowed client identities.", {})
            return
        await self.app({**scope, "headers": headers + principal_headers(claims)}, receive, send)

    async def _platform(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        if path.startswith(IDENTITY_PREFIX + "/"):
            inner = {**scope, "path": path.removeprefix(IDENTITY_PREFIX), "root_path": scope.get("root_path", "") + IDENTITY_PREFIX}
            await self.identity.app(inner, receive, send)
            return
        if path == "/.auth/login/local":
            await self._login(scope, send)
            return
        if path == "/.auth/logout":
            await _redirect(send, "/", f"{SESSION_COOKIE}=; Path=/; Max-Age=0")
            return
        await _refuse(send, 404, "Not found: /.auth/ belongs to the platform (locally: /.auth/local/, /.auth/login/local).", {})

    async def _login(self, scope: Scope, send: Send) -> None:
        """A session for a browser: a token for ``principal`` with ``roles`` in the session cookie, then on to a local path."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        principal = (query.get("principal") or [""])[0]
        roles = [r for r in (query.get("roles") or [""])[0].split(",") if r]
        target = (query.get("post_login_redirect_uri") or ["/"])[0]
        if not principal or not principal.isprintable() or len(principal) > 128:
            await _refuse(send, 404, "Not found: give ?principal=NAME&roles=Images.Operator (and post_login_redirect_uri=/gallery).", {})
            return
        client_id, _ = self.identity.issuer.add_principal(principal, roles, self.audiences[0])
        token, _ = self.identity.issuer.issue(self.audiences[0], client_id, 8 * 3600)
        local = target if target.startswith("/") and not target.startswith("//") and target.isprintable() else "/"
        await _redirect(send, local, f"{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax")


def principal_headers(claims: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The headers App Service sets for a validated token: X-MS-CLIENT-PRINCIPAL (base64 JSON), -ID, -NAME, -IDP."""
    mapped: list[dict[str, str]] = []
    for typ, value in claims.items():
        for one in value if isinstance(value, list) else [value]:
            mapped.append({"typ": _ROLE_TYPE if typ == "roles" else _MAPPED.get(typ, typ), "val": str(one)})
    name = next((str(claims[c]) for c in _NAME_CLAIMS if claims.get(c)), "")
    if name:
        mapped.append({"typ": _NAME_TYPE, "val": name})
    principal = {"auth_typ": "aad", "claims": mapped, "name_typ": _NAME_TYPE, "role_typ": _ROLE_TYPE}
    encoded = base64.b64encode(json.dumps(principal).encode()).decode()
    found = [(b"x-ms-client-principal", encoded), (b"x-ms-client-principal-id", str(claims.get("oid", ""))), (b"x-ms-client-principal-idp", "aad")]
    if name:
        found.append((b"x-ms-client-principal-name", name))
    return [(k, v.encode("latin-1", "replace")) for k, v in found]


def _platform_header(name: bytes) -> bool:
    lowered = name.lower()
    return lowered.startswith((b"x-ms-client-principal", b"x-ms-token-"))


def _bearer(headers: list[tuple[bytes, bytes]]) -> str:
    value = next((v.decode("latin-1") for k, v in headers if k.lower() == b"authorization"), "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _session(headers: list[tuple[bytes, bytes]]) -> str:
    """The token a browser's session cookie holds (:meth:`EasyAuthFront._login`), or ""."""
    cookies: SimpleCookie = SimpleCookie()
    for key, value in headers:
        if key.lower() == b"cookie":
            try:
                cookies.load(value.decode("latin-1"))
            except Exception:  # noqa: S112  # a malformed cookie header is no session
                continue
    morsel = cookies.get(SESSION_COOKIE)
    return morsel.value if morsel is not None else ""


async def _redirect(send: Send, location: str, cookie: str) -> None:
    headers = [(b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode("latin-1")), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 302, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _host(scope: Scope) -> str:
    host = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"host"), "localhost")
    return host.replace('"', "")


async def _refuse(send: Send, status: int, message: str, headers: dict[str, str]) -> None:
    code = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}[status]
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
