"""A stand-in of Microsoft Entra ID for the local stack: the managed identity endpoint, a
token endpoint for named principals with app roles, and the signing keys (JWKS).

App Service, Functions and Container Apps give a process with a managed identity
two environment variables: ``IDENTITY_ENDPOINT`` (a loopback URL) and
``IDENTITY_HEADER`` (a per-instance secret). azure-identity's
``ManagedIdentityCredential`` then asks::

    GET {IDENTITY_ENDPOINT}?resource=https://vault.azure.net&api-version=2019-08-01[&client_id=...]
    X-IDENTITY-HEADER: {IDENTITY_HEADER}

and gets ``{"access_token", "expires_on", "resource", "token_type", "client_id"}``.
This module speaks exactly that, so the real SDK runs unchanged against it
(``env()`` gives the two variables to set).

Tokens are JWTs shaped like Entra ID's v1 access tokens (``aud``, ``iss``
``https://sts.windows.net/<tenant>/``, ``oid``, ``tid``, ``appid``, ``iat``, ``nbf``,
``exp``, and ``roles`` for a principal given app roles), signed RS256 with a key pair made
per issuer and published as a JWKS (``GET /discovery/keys``, named by
``/.well-known/openid-configuration``), as Entra publishes its keys. Azurite's ``--oauth
basic`` mode accepts them and its Get User Delegation Key reads ``oid``/``tid``; the Key
Vault stand-in, the images simulator and the local front (local/easyauth.py) check them as
a real service checks an Entra signature: from the public keys only.

``POST /token`` (under ``/.auth/local/`` in the local stack) with ``{"principal", "roles", "audience"?}`` is the one thing Entra has
no twin of: a token for a named principal holding the given app roles (Entra issues roles
from app role assignments; locally you say which). ``python3 dev.py token`` asks it. Never
deployed.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local.servers import ServerThread, serve_in_thread

API_VERSION = "2019-08-01"
TOKEN_PATH = "/msi/token"  # noqa: S105  # a URL path, not a password
LOCAL_TOKEN_PATH = "/token"  # noqa: S105  # a URL path, not a password
KEYS_PATH = "/discovery/keys"
LOCAL_AUDIENCE = "api://images-local"  # the local stack's stand-in of the app registration's Application ID URI
MAX_LOCAL_TOKEN_SECONDS = 24 * 3600


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


# Names for local principals: the same name always gets the same ids (so a budget or a record written
# for "orders-service" yesterday names the same caller today).
_PRINCIPALS = uuid.UUID("6f1c8c57-2f44-4a49-9d0b-7c3b3e0e6a11")


def principal_ids(principal: str) -> tuple[str, str]:
    """(client id, object id) of a local principal: a GUID is its own object id; a name maps to fixed GUIDs."""
    try:
        object_id = str(uuid.UUID(principal))
    except ValueError:
        object_id = str(uuid.uuid5(_PRINCIPALS, f"object:{principal}"))
    return str(uuid.uuid5(_PRINCIPALS, f"client:{principal}")), object_id


class TokenIssuer:
    """Issues and checks signed access tokens (RS256, a JWKS) for one tenant's identities.

    ``client_id``/``object_id`` are the system-assigned identity; add user-assigned ones with
    :meth:`add_identity`, named principals holding app roles with :meth:`add_principal`.
    ``lifetime`` is the lifetime of new tokens in seconds (Entra gives managed identities about 24 h).
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
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = secrets.token_hex(8)
        self._identities: dict[str, str] = {self.client_id: self.object_id}  # client id -> object id
        self._principals: dict[str, tuple[str, frozenset[str], str]] = {}  # client id -> (name, roles, audience)
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

    def add_principal(self, principal: str, roles: Iterable[str], audience: str) -> tuple[str, str]:
        """A named principal whose tokens for ``audience`` carry ``roles`` (as Entra's carry assigned app roles).

        Returns its (client id, object id) (:func:`principal_ids`); registering it again replaces its roles."""
        client_id, object_id = principal_ids(principal)
        with self._lock:
            self._identities[client_id] = object_id
            self._principals[client_id] = (principal, frozenset(roles), audience)
        return client_id, object_id

    def knows(self, client_id: str) -> bool:
        return client_id in self._identities

    def object_id_of(self, client_id: str) -> str:
        return self._identities[client_id]

    def issue(self, audience: str, client_id: str | None = None, lifetime: float | None = None) -> tuple[str, int]:
        """A signed token for ``audience`` and the identity ``client_id``; returns (token, expires_on)."""
        client_id = client_id or self.client_id
        now = int(time.time())
        expires_on = now + round(self.lifetime if lifetime is None else lifetime)
        claims: dict[str, Any] = {
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
        named = self._principals.get(client_id)
        if named is not None:
            name, roles, for_audience = named
            claims["app_displayname"] = name
            if roles and _same_resource(audience, for_audience):
                claims["roles"] = sorted(roles)
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id, "typ": "JWT"})
        with self._lock:
            self.issued += 1
            self.recent_tokens.append(token)
        return token, expires_on

    def jwks(self) -> dict[str, Any]:
        """The public signing keys, as Entra publishes them (``{"keys": [{"kty", "use", "kid", "n", "e"}]}``)."""
        key = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        return {"keys": [{**key, "use": "sig", "kid": self.key_id, "alg": "RS256", "issuer": self.issuer}]}

    def claims(self, token: str, audience: str | None = None) -> dict[str, Any] | None:
        """The claims of a token this issuer signed, still valid and (if given) for ``audience``; else None."""
        return verify(token, self.jwks(), self.issuer, [audience] if audience is not None else None)

    def validate(self, token: str, audience: str) -> bool:
        """True if ``token`` was signed by this issuer, is within its lifetime and is for ``audience``."""
        return self.claims(token, audience) is not None

    def validator(self, audience: str) -> Callable[[str], bool]:
        """``validate`` bound to one audience: a bearer check for a service that accepts only it."""
        return lambda token: self.validate(token, audience)


def verify(token: str, jwks: dict[str, Any], issuer: str, audiences: list[str] | None) -> dict[str, Any] | None:
    """What a resource server checks, from the public keys only: the signature (RS256, the key the
    token names), the issuer, ``nbf``/``exp``, and (when given) an audience among ``audiences``."""
    try:
        keys = jwt.PyJWKSet.from_dict(jwks)
        kid = jwt.get_unverified_header(token).get("kid")
        key = next(k for k in keys.keys if k.key_id == kid)
        claims: dict[str, Any] = jwt.decode(
            token, key.key, algorithms=["RS256"], issuer=issuer, options={"verify_aud": False, "require": ["exp", "nbf", "iss", "aud"]}
        )
    except (jwt.PyJWTError, StopIteration, ValueError):
        return None
    if audiences is not None and not any(_same_resource(str(claims.get("aud", "")), a) for a in audiences):
        return None
    return claims


class IdentityEndpoint:
    """The App Service managed identity endpoint, with controls for tests.

    Controls (safe to change from the test thread while the server runs):
    ``status`` (None: healthy; e.g. 503: every token request gets that status),
    ``lifetime`` (seconds, for new tokens), ``requests`` (count of token requests,
    answered or not) and ``resources`` (a Counter of requested resources).
    ``stop()`` makes the port refuse connections.
    """

    def __init__(self, issuer: TokenIssuer | None = None, *, header_secret: str | None = None, api_audience: str = LOCAL_AUDIENCE) -> None:
        self.issuer = issuer or TokenIssuer()
        self.api_audience = api_audience  # the audience of POST /token when none is asked for
        self.header_secret = header_secret or secrets.token_urlsafe(24)
        self.status: int | None = None
        self.lifetime: float | None = None  # None: the issuer's lifetime
        self.requests = 0
        self.resources: Counter[str] = Counter()
        self.client_ids: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: ServerThread | None = None
        self.app = Starlette(
            routes=[
                Route(TOKEN_PATH, self._token, methods=["GET"]),
                Route(LOCAL_TOKEN_PATH, self._local_token, methods=["POST"]),
                Route(KEYS_PATH, self._keys, methods=["GET"]),
                Route("/.well-known/openid-configuration", self._openid_configuration, methods=["GET"]),
            ]
        )

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


    async def _local_token(self, request: Request) -> Response:
        """``{"principal", "roles"?, "audience"?, "lifetime"?}`` -> a token for that principal holding those app roles."""
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _error(400, 'The body must be a JSON object: {"principal": "...", "roles": ["..."]}.')
        principal, roles = body.get("principal"), body.get("roles", [])
        audience, lifetime = body.get("audience") or self.api_audience, body.get("lifetime", 3600)
        if not isinstance(principal, str) or not 1 <= len(principal) <= 128 or not principal.isprintable() or principal.strip() != principal:
            return _error(400, "'principal' must be a name or an object id (1-128 printable characters).")
        if not isinstance(roles, list) or not all(isinstance(r, str) and r and r.isprintable() for r in roles):
            return _error(400, "'roles' must be a list of app role values, e.g. [\"Images.Caller\"].")
        if not isinstance(audience, str) or not isinstance(lifetime, int | float) or not 60 <= lifetime <= MAX_LOCAL_TOKEN_SECONDS:
            return _error(400, f"'audience' must be a string and 'lifetime' 60-{MAX_LOCAL_TOKEN_SECONDS} seconds.")
        client_id, object_id = self.issuer.add_principal(principal, roles, audience)
        token, expires_on = self.issuer.issue(audience, client_id, lifetime)
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_on": expires_on, "expires_in": round(lifetime),
             "principal": principal, "object_id": object_id, "client_id": client_id, "roles": sorted(set(roles)), "audience": audience}
        )  # fmt: skip

    async def _keys(self, request: Request) -> Response:
        return JSONResponse(self.issuer.jwks())

    async def _openid_configuration(self, request: Request) -> Response:
        base = str(request.url).removesuffix("/.well-known/openid-configuration")
        return JSONResponse(
            {"issuer": self.issuer.issuer, "jwks_uri": base + KEYS_PATH, "token_endpoint": base + LOCAL_TOKEN_PATH, "id_token_signing_alg_values_supported": ["RS256"]}
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
