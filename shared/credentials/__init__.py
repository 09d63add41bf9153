"""Where the model key or token comes from.

Three ways, chosen by ``AZURE_OPENAI_AUTH`` (see docs/credentials.md):

- ``key``: the key from ``AZURE_OPENAI_API_KEY`` (the platform may resolve a Key
  Vault reference into it) — :class:`~shared.credentials.keys.KeyAuth`;
- ``keyvault``: the key read from Key Vault (``AZURE_KEY_VAULT_ENDPOINT``,
  ``AZURE_OPENAI_API_KEY_SECRET_NAME``) with the app's identity, cached for
  :data:`KEY_CACHE_SECONDS` — :class:`~shared.credentials.keys.KeyVaultAuth`;
- ``entra``: no key; a Microsoft Entra token for
  ``https://cognitiveservices.azure.com/.default`` from the same identity, through
  azure-identity's bearer token provider — :class:`~shared.credentials.entra.EntraAuth`.

Nothing here does I/O at import or construction: the first ``headers()`` call fetches.
After an upstream 401 the client calls ``refresh()`` with the refused headers; the cache
is dropped only if it still holds them, so N concurrent 401s cause one refetch.

Failures are :class:`~shared.errors.ServiceError`: the vault or the identity
unreachable or refusing is 503 ``CredentialUnavailable`` (transient: queue jobs
retry later) naming what failed; a missing, empty or disabled secret is 500
``ConfigurationError`` (not transient). Messages never carry a key or token: SDK
exception text goes through :func:`shared.redaction.reason` first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from azure.core.credentials_async import AsyncTokenCredential

from shared.credentials.entra import EntraAuth
from shared.credentials.identity import (
    COGNITIVE_SERVICES_SCOPE,
    ERROR_CODE,
    FETCH_TIMEOUT_SECONDS,
    IdentityUnavailable,
    create_token_credential,
    describe_identity,
)
from shared.credentials.keys import (
    CONFIG_ERROR_CODE,
    KEY_CACHE_SECONDS,
    KEY_STALE_GRACE_SECONDS,
    KEY_VAULT_CLIENT_OPTIONS,
    RETRY_AFTER_FAILURE_SECONDS,
    KeyAuth,
    KeyVaultAuth,
)
from shared.settings import Settings

__all__ = [
    "COGNITIVE_SERVICES_SCOPE",
    "CONFIG_ERROR_CODE",
    "ERROR_CODE",
    "FETCH_TIMEOUT_SECONDS",
    "KEY_CACHE_SECONDS",
    "KEY_STALE_GRACE_SECONDS",
    "KEY_VAULT_CLIENT_OPTIONS",
    "RETRY_AFTER_FAILURE_SECONDS",
    "EntraAuth",
    "IdentityUnavailable",
    "KeyAuth",
    "KeyVaultAuth",
    "UpstreamAuth",
    "create_token_credential",
    "create_upstream_auth",
    "describe_identity",
]


@runtime_checkable
class UpstreamAuth(Protocol):
    """What the upstream client needs: headers for a call, and a way to say they were refused."""

    async def headers(self) -> dict[str, str]:
        """``{"api-key": key}`` or ``{"Authorization": "Bearer ..."}``, fetched or cached."""
        ...

    async def refresh(self, stale: dict[str, str]) -> None:
        """Forget ``stale`` (the headers upstream refused with 401) if still cached; the next headers() refetches."""
        ...

    async def close(self) -> None:
        """Release clients this object made."""
        ...


def create_upstream_auth(
    settings: Settings,
    credential: AsyncTokenCredential | None = None,
    *,
    key_vault_options: Mapping[str, Any] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> UpstreamAuth:
    """The upstream auth the settings ask for. No I/O here: the first headers() call fetches.

    Pass the process's shared ``credential`` (see :func:`create_token_credential`);
    without one, one is created and closed with the returned object.
    ``key_vault_options`` are extra SecretClient options (tests: the stand-in's CA);
    ``clock`` measures the age of the Key Vault key (tests advance it instead of waiting).
    """
    if settings.auth_mode == "key":
        return KeyAuth(settings.api_key, settings.api_style)
    owns = credential is None
    credential = credential or create_token_credential(settings)
    identity = describe_identity(settings)
    if settings.auth_mode == "keyvault":
        return KeyVaultAuth(
            settings.key_vault_url,
            settings.key_secret_name,
            credential,
            identity=identity,
            api_style=settings.api_style,
            key_vault_options=key_vault_options,
            owns_credential=owns,
            clock=clock,
        )
    return EntraAuth(credential, identity=identity, owns_credential=owns)
