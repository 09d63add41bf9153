"""A stand-in of the App Service managed identity endpoint (API version 2019-08-01).

App Service, Functions and Container Apps give a process with a managed identity
two environment variables: ``IDENTITY_ENDPOINT`` (a loopback URL) and
``IDENTITY_HEADER`` (a per-instance secret). azure-identity's
``ManagedIdentityCredential`` then asks::

    GET {IDENTITY_ENDPOINT}?resource=https://vault.azure.net&api-version=2019-08-01[&client_id=...]
    X-IDENTITY-HEADER: {IDENTITY_HEADER}

and gets ``{"access_token", "expires_on", "resource", "token_type", "client_id"}``.
This module speaks exactly that, so the real SDK runs unchanged against it
(``env()`` gives the two variables to set).

Tokens are JWT-shaped like Entra ID's v1 tokens (``aud``, ``iss``
``https://sts.windows.net/<tenant>/``, ``oid``, ``tid``, ``appid``, ``iat``,
``nbf``, ``exp``), so Azurite's ``--oauth basic`` mode accepts them and its Get
User Delegation Key can read ``oid``/``tid``. They are signed with HMAC-SHA256
under a per-issuer random secret: :meth:`TokenIssuer.validate` lets the Key Vault
stand-in and the images simulator check them as a real service would check an
Entra signature. Never deployed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local.servers import ServerThread, serve_in_thread

API_VERSION = "2019-08-01"
TOKEN_PATH = "/msi/token"  # noqa: S105  # a URL path, not a password


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _same_resource(a: str, b: str) -> bool:
    # Entra treats "https://vault.azure.net" and "https://vault.azure.net/" as one resource.
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def decode_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT-shaped token, without checking anything (for test assertions)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(_b64url_decode(payload))
    except (IndexError, ValueError) as exc:
        raise ValueError("not a JWT-shaped token") from exc
    if not isinstance(claims, dict):
        raise ValueError("not a JWT-shaped token")
    return claims


class TokenIssuer:
    """Issues and checks JWT-shaped access tokens for one tenant's identities.

    ``client_id``/``object_id`` are the system-assigned identity; add
    user-assigned ones with :meth:`add_identity`. ``lifetime`` is the lifetime of
    new tokens in seconds (Entra gives managed identities about 24 h).
    """

    def __init__(
        self,
        *,
        tenant_id: str | None = None,
        client_id: str | None = None,
        object_id: str | None = None,
        lifetime: float = 24 * 3600,
    ) -> None:
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.client_id = client_id or str(uuid.uuid4())
        self.object_id = object_id or str(uuid.uuid4())
        self.lifetime = lifetime
        self._secret = secrets.token_bytes(32)
        self._identities: dict[str, str] = {self.client_id: self.object_id}  # client id -> object id
        self._lock = threading.Lock()
        self.issued = 0
        self.recent_tokens: deque[str] = deque(maxlen=1000)  # for tests that assert no token leaked

    @property
    def issuer(self) -> str:
        return f"https://sts.windows.net/{self.tenant_id}/"

    @property
    def authority(self) -> str:
        """What Key Vault names in its challenge: the login endpoint of the tenant."""
        return f"https://login.microsoftonline.com/{self.tenant_id}"

    def add_identity(self, client_id: str | None = None, object_id: str | None = None) -> tuple[str, str]:
        """Register a user-assigned identity; return its (client_id, object_id)."""
        pair = (client_id or str(uuid.uuid4()), object_id or str(uuid.uuid4()))
        with self._lock:
            self._identities[pair[0]] = pair[1]
        return pair

    def knows(self, client_id: str) -> bool:
        return client_id in self._identities

    def object_id_of(self, client_id: str) -> str:
        return self._identities[client_id]

    def issue(self, audience: str, client_id: str | None = None, lifetime: float | None = None) -> tuple[str, int]:
        """A signed token for ``audience`` and the identity ``client_id``; returns (token, expires_on)."""
        client_id = client_id or self.client_id
        now = int(time.time())
        expires_on = now + round(self.lifetime if lifetime is None else lifetime)
        claims = {
            "aud": audience,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": expires_on,
            "oid": self._identities[client_id],
            "sub": self._identities[client_id],
            "tid": self.tenant_id,
            "appid": client_id,
            "appidacr": "2",
            "idtyp": "app",
            "ver": "1.0",
            "uti": _b64url(secrets.token_bytes(16)),  # makes every token unique, as Entra's are
        }
        header = {"alg": "HS256", "typ": "JWT"}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        signature = hmac.new(self._secret, signing_input.encode("ascii"), hashlib.sha256).digest()
        token = f"{signing_input}.{_b64url(signature)}"
        with self._lock:
            self.issued += 1
            self.recent_tokens.append(token)
        return token, expires_on

    def claims(self, token: str, audience: str | None = None) -> dict[str, Any] | None:
        """The claims of a token this issuer signed, still valid and (if given) for ``audience``; else None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = hmac.new(self._secret, f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256).digest()
        try:
            signature = _b64url_decode(parts[2])
            claims = decode_claims(token)
        except ValueError:
            return None
        if not hmac.compare_digest(signature, expected):
            return None
        now = time.time()
        if claims.get("iss") != self.issuer or not claims.get("nbf", now + 1) <= now < claims.get("exp", 0):
            return None
        if audience is not None and not _same_resource(str(claims.get("aud", "")), audience):
            return None
        return claims

    def validate(self, token: str, audience: str) -> bool:
        """True if ``token`` was signed by this issuer, is within its lifetime and is for ``audience``."""
        return self.claims(token, audience) is not None

    def validator(self, audience: str) -> Callable[[str], bool]:
        """``validate`` bound to one audience: a bearer check for a service that accepts only it."""
        return lambda token: self.validate(token, audience)


class IdentityEndpoint:
    """The App Service managed identity endpoint, with controls for tests.

    Controls (safe to change from the test thread while the server runs):
    ``status`` (None: healthy; e.g. 503: every token request gets that status),
    ``lifetime`` (seconds, for new tokens), ``requests`` (count of token requests,
    answered or not) and ``resources`` (a Counter of requested resources).
    ``stop()`` makes the port refuse connections.
    """

    def __init__(self, issuer: TokenIssuer | None = None, *, header_secret: str | None = None) -> None:
        self.issuer = issuer or TokenIssuer()
        self.header_secret = header_secret or secrets.token_urlsafe(24)
        self.status: int | None = None
        self.lifetime: float | None = None  # None: the issuer's lifetime
        self.requests = 0
        self.resources: Counter[str] = Counter()
        self.client_ids: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: ServerThread | None = None
        self.app = Starlette(routes=[Route(TOKEN_PATH, self._token, methods=["GET"])])

    # -- running -----------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1") -> IdentityEndpoint:
        """Serve on a free loopback port (plain HTTP, as App Service does on its loopback address)."""
        self._server = serve_in_thread(self.app, host=host)
        return self

    def stop(self) -> None:
        """Stop serving: later token requests meet a refused connection."""
        if self._server is not None:
            self._server.stop()

    @property
    def url(self) -> str:
        """The ``IDENTITY_ENDPOINT`` value."""
        if self._server is None:
            raise RuntimeError("IdentityEndpoint is not started")
        return self._server.url + TOKEN_PATH

    def env(self) -> dict[str, str]:
        """The environment App Service gives a process with a managed identity."""
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.header_secret}

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = 0
            self.resources.clear()
            self.client_ids.clear()

    # -- protocol ------------------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        q = request.query_params
        resource = q.get("resource", "")
        client_id = q.get("client_id", "")
        with self._lock:
            self.requests += 1
            self.resources[resource] += 1
            self.client_ids[client_id] += 1
        if self.status is not None:
            return _error(self.status, "The managed identity endpoint is unavailable (stand-in set to fail).")
        if not hmac.compare_digest(request.headers.get("x-identity-header", ""), self.header_secret):
            return _error(401, "The X-IDENTITY-HEADER header is missing or wrong.")
        if q.get("api-version") != API_VERSION:
            return _error(400, f"api-version must be {API_VERSION}, got {q.get('api-version')!r}.")
        if not resource:
            return _error(400, "The 'resource' parameter is required.")
        if any(q.get(p) for p in ("principal_id", "object_id", "mi_res_id")):
            return _error(400, "This stand-in selects user-assigned identities by client_id only.")
        if client_id and not self.issuer.knows(client_id):
            # App Service's words when the app has no identity with that client id.
            return _error(400, "Unable to load the proper Managed Identity.")
        token, expires_on = self.issuer.issue(resource, client_id or None, self.lifetime)
        return JSONResponse(
            {
                "access_token": token,
                "expires_on": str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id or self.issuer.client_id,
            }
        )


def _error(status: int, message: str) -> Response:
    # App Service's own shape for identity endpoint errors.
    return JSONResponse({"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}, status_code=status)


def start_identity_endpoint(issuer: TokenIssuer | None = None, user_assigned: Iterable[str] = ()) -> IdentityEndpoint:
    """An identity endpoint on a free loopback port; ``user_assigned`` client ids are known identities too."""
    endpoint = IdentityEndpoint(issuer)
    for client_id in user_assigned:
        endpoint.issuer.add_identity(client_id)
    return endpoint.start()
