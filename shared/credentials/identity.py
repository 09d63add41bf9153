"""The process's identity: which token credential, how it is named in errors, and its failures.

One credential per process (per event loop) serves Key Vault, the model token and
storage; azure-identity caches its tokens. Nothing here does I/O at construction.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ClientAuthenticationError

from shared.redaction import reason, strip_query
from shared.settings import Settings

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"

# The error code of every "the credential could not be had" answer (503, transient).
ERROR_CODE = "CredentialUnavailable"
# Upper bound on one fetch, retries included: a hung vault or identity endpoint must not hold a
# synchronous request (Azure cuts HTTP at 230 s) or every waiting caller.
FETCH_TIMEOUT_SECONDS = 30.0


def describe_identity(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """Which identity :func:`create_token_credential` uses here, in words for an error message."""
    env = os.environ if environ is None else environ
    who = f" (user-assigned identity {settings.client_id})" if settings.client_id else ""
    for variable in ("IDENTITY_ENDPOINT", "MSI_ENDPOINT"):
        if env.get(variable):
            return f"the managed identity endpoint {strip_query(env[variable])}{who}"
    if env.get("WEBSITE_INSTANCE_ID"):
        return f"the managed identity of this app{who} (no IDENTITY_ENDPOINT: is an identity assigned to the app?)"
    return f"DefaultAzureCredential{who} (managed identity, workload identity, environment or developer login such as az login)"


def resource_of(scopes: tuple[str, ...]) -> str:
    """The resource a token is asked for, from its scopes (``https://x/.default`` -> ``https://x``)."""
    scope = scopes[0] if scopes else ""
    return scope[: -len("/.default")] if scope.endswith("/.default") else scope


def _running_with_managed_identity(env: Mapping[str, str]) -> bool:
    # App Service, Functions and Container Apps set IDENTITY_ENDPOINT (older hosts MSI_ENDPOINT) when
    # an identity is assigned; WEBSITE_INSTANCE_ID says "App Service" even when none is, and then a
    # managed identity error is the helpful one, not a list of developer tools that are not there.
    return any(env.get(v) for v in ("IDENTITY_ENDPOINT", "MSI_ENDPOINT", "WEBSITE_INSTANCE_ID"))


def create_token_credential(settings: Settings, *, client_id: str | None = None, **options: Any) -> AsyncTokenCredential:
    """The process's identity: ManagedIdentityCredential in Azure, else DefaultAzureCredential.

    ``AZURE_CLIENT_ID`` (or ``client_id``, e.g. ``settings.storage.client_id`` when
    storage names another identity) selects a user-assigned identity. No I/O happens
    here; azure-identity caches tokens per credential, so create one per process (per
    event loop) and share it with Key Vault, the model token and storage.
    ``options`` go to the credential (e.g. retry settings in tests).
    """
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    chosen = client_id or settings.client_id or None
    if _running_with_managed_identity(os.environ):
        return ManagedIdentityCredential(client_id=chosen, **options)
    # DefaultAzureCredential tries managed identity via IMDS (VMs, AKS) too, then a developer's login.
    return DefaultAzureCredential(managed_identity_client_id=chosen, **options)


class IdentityUnavailable(ClientAuthenticationError):
    """A token request failed. Raised inside SDK pipelines: being a ClientAuthenticationError
    stops their retry policies from repeating it, and its type tells the caller that the
    identity failed, not the service that asked for the token."""

    def __init__(self, resource: str, identity: str, cause: BaseException) -> None:
        self.resource = resource
        self.identity = identity
        self.reason = reason(cause)
        super().__init__(message=f"no token for {resource} from {identity}: {self.reason}")


class NamedCredential:
    """Passes token requests to the shared credential and names the identity when one fails."""

    def __init__(self, inner: AsyncTokenCredential, identity: str) -> None:
        self._inner = inner
        self._identity = identity

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """The inner credential's token; IdentityUnavailable naming the identity if it fails."""
        try:
            return await self._inner.get_token(*scopes, **kwargs)
        except Exception as exc:
            raise IdentityUnavailable(resource_of(scopes), self._identity, exc) from None

    async def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        """As :meth:`get_token`, in the newer protocol (the SDKs prefer it when it exists)."""
        try:
            get_token_info = getattr(self._inner, "get_token_info", None)
            if get_token_info is not None:
                info: AccessTokenInfo = await get_token_info(*scopes, options=options)
                return info
            kwargs: dict[str, Any] = dict(options or {})
            token = await self._inner.get_token(*scopes, **kwargs)
            return AccessTokenInfo(token.token, token.expires_on)
        except Exception as exc:
            raise IdentityUnavailable(resource_of(scopes), self._identity, exc) from None

    async def close(self) -> None:
        """Nothing: the shared credential belongs to whoever created it."""

    async def __aenter__(self) -> NamedCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None
