"""A stand-in of the Azure Key Vault secrets endpoint, over TLS, with the real challenge flow.

What ``azure.keyvault.secrets.aio.SecretClient`` does against a vault, and what
this server answers:

1. The first request goes without a token; the vault answers ``401`` with
   ``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
   resource="https://vault.azure.net"``.
2. The SDK asks its credential for a token for ``https://vault.azure.net/.default``
   (the managed identity stand-in, :mod:`local.identity`, issues it) and repeats
   the request with ``Authorization: Bearer <token>``; this server checks the token
   with :meth:`local.identity.TokenIssuer.validate` (signature, lifetime, audience)
   and, when ``allowed_object_ids`` is set, the caller's role (403 ``ForbiddenByRbac``).
3. ``GET /secrets/{name}[/{version}]?api-version=...`` answers
   ``{"value", "id", "attributes", "tags"}``; an unknown name answers 404
   ``SecretNotFound`` in Key Vault's error shape. ``PUT /secrets/{name}`` sets a
   new version, as ``set_secret`` does.

TLS: a throwaway certificate authority (trustme) signs the server certificate for
127.0.0.1 and localhost; :attr:`KeyVaultStandIn.ca_path` is its PEM file. How to
make the SDK trust it: azure-core's aiohttp transport honours the client option
``connection_verify=<path to CA PEM>`` (per client or per call). It does *not*
read ``REQUESTS_CA_BUNDLE`` (only the requests transport does), and
``SSL_CERT_FILE`` works only when set before aiohttp is imported, because aiohttp
builds its default SSL context at import time.

Challenge resource: the SDK checks that the vault's host is a subdomain of the
challenge resource (``x.vault.azure.net`` under ``vault.azure.net``).
``https://127.0.0.1:port`` cannot pass that check, and ``*.localhost`` names do
not resolve everywhere, so tests pass the client option
``verify_challenge_resource=False`` (:meth:`KeyVaultStandIn.client_options`
gives both options). The app never sets it: production keeps the check.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local.identity import TokenIssuer
from local.servers import ServerThread, serve_in_thread

VAULT_RESOURCE = "https://vault.azure.net"


@dataclass
class _Version:
    value: str
    version: str
    created: int
    enabled: bool = True
    content_type: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


class KeyVaultStandIn:
    """A Key Vault that holds secrets in memory and serves them over HTTPS.

    Controls (safe to change from the test thread while the server runs):
    :meth:`set_secret` (also rotates: adds a version), :meth:`delete_secret`,
    ``status`` (None: healthy; e.g. 503: every request gets that status),
    ``allowed_object_ids`` (None: any valid token may read; else only these
    identities, others get 403), ``stop()`` (connections are refused).
    Counters: ``requests`` (every request), ``challenges`` (401 answers),
    ``reads`` (a Counter of secret names served).
    """

    def __init__(self, issuer: TokenIssuer, *, resource: str = VAULT_RESOURCE) -> None:
        self.issuer = issuer
        self.resource = resource
        self.status: int | None = None
        self.allowed_object_ids: set[str] | None = None
        self.requests = 0
        self.challenges = 0
        self.reads: Counter[str] = Counter()
        self._secrets: dict[str, list[_Version]] = {}
        self._lock = threading.Lock()
        self._server: ServerThread | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="keyvault-standin-"))
        self.ca = trustme.CA()
        self.ca_path = self._dir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        server_cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self._cert_path = self._dir / "server.pem"
        self._key_path = self._dir / "server.key"
        server_cert.cert_chain_pems[0].write_to_path(str(self._cert_path))
        for extra in server_cert.cert_chain_pems[1:]:
            extra.write_to_path(str(self._cert_path), append=True)
        server_cert.private_key_pem.write_to_path(str(self._key_path))
        self.app = Starlette(
            routes=[
                Route("/secrets/{name}", self._secret, methods=["GET", "PUT"]),
                Route("/secrets/{name}/", self._secret, methods=["GET"]),
                Route("/secrets/{name}/{version}", self._secret, methods=["GET"]),
            ]
        )

    # -- running -----------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1") -> KeyVaultStandIn:
        """Serve HTTPS on a free loopback port."""
        self._server = serve_in_thread(self.app, host=host, ssl_certfile=str(self._cert_path), ssl_keyfile=str(self._key_path))
        return self

    def stop(self) -> None:
        """Stop serving: later requests meet a refused connection."""
        if self._server is not None:
            self._server.stop()

    def close(self) -> None:
        """Stop serving and delete the certificate files."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def url(self) -> str:
        """The vault URL (``AZURE_KEY_VAULT_ENDPOINT``): https on the loopback port."""
        if self._server is None:
            raise RuntimeError("KeyVaultStandIn is not started")
        return "https://" + self._server.url.split("://", 1)[1]

    def client_options(self) -> dict[str, Any]:
        """SecretClient options a test needs for this stand-in (trust its CA; see the module docstring)."""
        return {"connection_verify": str(self.ca_path), "verify_challenge_resource": False}

    # -- controls ------------------------------------------------------------------------------

    def set_secret(self, name: str, value: str, *, content_type: str | None = None) -> str:
        """Store a new version of ``name`` (the latest is what a versionless GET returns); return its version."""
        version = secrets.token_hex(16)
        with self._lock:
            self._secrets.setdefault(name, []).append(_Version(value, version, int(time.time()), content_type=content_type))
        return version

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Enable or disable the latest version of ``name`` (a disabled secret answers 403 SecretDisabled)."""
        with self._lock:
            self._secrets[name][-1].enabled = enabled

    def delete_secret(self, name: str) -> None:
        with self._lock:
            self._secrets.pop(name, None)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = 0
            self.challenges = 0
            self.reads.clear()

    # -- protocol ------------------------------------------------------------------------------

    def _challenge(self, code: str, message: str) -> Response:
        with self._lock:
            self.challenges += 1
        header = f'Bearer authorization="{self.issuer.authority}", resource="{self.resource}"'
        return _kv_error(401, "Unauthorized", f"{code}: {message}", headers={"WWW-Authenticate": header})

    async def _secret(self, request: Request) -> Response:
        with self._lock:
            self.requests += 1
        if self.status is not None:
            return _kv_error(self.status, "ServiceUnavailable", "The vault is unavailable (stand-in set to fail).")
        if not request.query_params.get("api-version"):
            return _kv_error(400, "BadParameter", "The request URI contains an invalid or missing api-version.")

        authorization = request.headers.get("authorization", "")
        if not authorization:
            return self._challenge("AKV10000", "Request is missing a Bearer or PoP token.")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return self._challenge("AKV10000", "Request is missing a Bearer or PoP token.")
        claims = self.issuer.claims(token.strip(), self.resource)
        if claims is None:
            return self._challenge("AKV10022", "Invalid audience, issuer, lifetime or signature.")
        if self.allowed_object_ids is not None and claims.get("oid") not in self.allowed_object_ids:
            return _kv_error(
                403,
                "Forbidden",
                "Caller is not authorized to perform action on resource.\r\n"
                f"If role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n"
                f"Caller: appid={claims.get('appid')};oid={claims.get('oid')};iss={claims.get('iss')}\r\n"
                "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'",
                inner="ForbiddenByRbac",
            )

        name = request.path_params["name"]
        if request.method == "PUT":
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("value"), str):
                return _kv_error(400, "BadParameter", "Property 'value' is required.")
            self.set_secret(name, body["value"], content_type=body.get("contentType"))
            return self._bundle(name, None)
        return self._bundle(name, request.path_params.get("version") or None)

    def _bundle(self, name: str, version: str | None) -> Response:
        with self._lock:
            versions = list(self._secrets.get(name, ()))
        found = versions[-1] if versions and version is None else next((v for v in versions if v.version == version), None)
        if found is None:
            what = name if version is None else f"{name}/{version}"
            return _kv_error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {what} was not found in this key vault. If you recently deleted this secret "
                "you may be able to recover it using the correct recovery command. For help resolving this issue, "
                "please see https://go.microsoft.com/fwlink/?linkid=2125182",
            )
        if not found.enabled:
            return _kv_error(403, "Forbidden", "Operation get is not allowed on a disabled secret.", inner="SecretDisabled")
        with self._lock:
            self.reads[name] += 1
        body: dict[str, Any] = {
            "value": found.value,
            "id": f"{self.url}/secrets/{name}/{found.version}",
            "attributes": {
                "enabled": found.enabled,
                "created": found.created,
                "updated": found.created,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": dict(found.tags),
        }
        if found.content_type:
            body["contentType"] = found.content_type
        return JSONResponse(body)


def _kv_error(
    status: int, code: str, message: str, *, inner: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def start_key_vault(issuer: TokenIssuer, secrets_: dict[str, str] | None = None) -> KeyVaultStandIn:
    """A started vault holding ``secrets_`` (name -> value)."""
    vault = KeyVaultStandIn(issuer).start()
    for name, value in (secrets_ or {}).items():
        vault.set_secret(name, value)
    return vault
