"""The model key: from a setting (:class:`KeyAuth`) or read from Key Vault (:class:`KeyVaultAuth`).

The Key Vault key is cached for :data:`KEY_CACHE_SECONDS`. The first :meth:`~KeyVaultAuth.headers`
call fetches; concurrent callers wait for that one fetch instead of starting their own, and
callers that were waiting for a fetch that failed share its error. After an upstream 401 the
client calls :meth:`~KeyVaultAuth.refresh` with the refused headers: the cache is dropped only
if it still holds them, so N concurrent 401s cause one refetch (the key rotation path).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared.credentials.identity import ERROR_CODE, FETCH_TIMEOUT_SECONDS, IdentityUnavailable, NamedCredential
from shared.errors import ServiceError
from shared.redaction import reason, remember_secret

log = logging.getLogger(__name__)

CONFIG_ERROR_CODE = "ConfigurationError"
# How long a key read from Key Vault is used before it is read again: bounds how
# late a rotation is noticed when nothing forces it (an upstream 401 refetches at once).
KEY_CACHE_SECONDS = 300.0
# If the vault cannot be reached when the cached key is due, the old key keeps
# being used (it is very likely still valid; a 401 would drop it) for this long,
# so a Key Vault outage does not take the service down with it.
KEY_STALE_GRACE_SECONDS = 3600.0
# While a cached value is served after a failed refetch, the next attempt waits this long,
# so every request does not stand in line behind a vault that does not answer.
RETRY_AFTER_FAILURE_SECONDS = 30.0

# SecretClient options. The SDK's defaults (10 retries, 300 s timeouts) suit batch
# tools, not a request path; three quick retries then a clear 503 suit this app.
# Read-only: tests and the local stack add theirs (``connection_verify`` for the
# stand-in's CA, ``verify_challenge_resource=False``) through ``key_vault_options``;
# production never turns the challenge check off.
KEY_VAULT_CLIENT_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {
        "retry_total": 3,
        "retry_backoff_factor": 0.5,
        "retry_backoff_max": 4,
        "connection_timeout": 10,
        "read_timeout": 20,
    }
)


class KeyAuth:
    """The key from a setting: nothing to fetch, nothing to refresh."""

    def __init__(self, key: str, api_style: str = "deployment") -> None:
        self._headers = _key_headers(key, api_style)
        self.description = "the key from AZURE_OPENAI_API_KEY"
        remember_secret(key)

    async def headers(self) -> dict[str, str]:
        """The setting's key as a header."""
        return dict(self._headers)

    async def refresh(self, stale: dict[str, str]) -> None:
        """Nothing to refetch: a setting cannot change under a running process."""
        # The platform restarts the app when the setting (or the Key Vault reference behind it) changes.
        if stale == self._headers:
            log.warning("The model service refused the key from AZURE_OPENAI_API_KEY; update the setting (the app restarts).")

    async def close(self) -> None:
        """Nothing to close."""


def _key_headers(key: str, api_style: str) -> dict[str, str]:
    # Azure takes keys in api-key; OpenAI's own API takes them as a bearer token.
    return {"Authorization": f"Bearer {key}"} if api_style == "openai" else {"api-key": key}


@dataclass
class _Entry:
    headers: dict[str, str]
    fresh_until: float  # on the auth's clock: served without asking until then
    usable_until: float  # on the auth's clock: may be served past fresh_until if a refetch fails transiently


def _copy(error: ServiceError) -> ServiceError:
    return ServiceError(
        error.status,
        error.code,
        error.message,
        param=error.param,
        retry_after=error.retry_after,
        transient=error.transient,
        extra=error.extra,
    )


class KeyVaultAuth:
    """The key read from a Key Vault secret with the app's identity, cached for ``ttl`` seconds.

    One fetch at a time, shared by concurrent callers (and so is its failure); while the
    vault is unreachable a due key keeps serving for ``stale_grace`` seconds. ``clock``
    (seconds, monotonic) is what the cache's ages are measured with.
    """

    def __init__(
        self,
        vault_url: str,
        secret_name: str,
        credential: AsyncTokenCredential,
        *,
        identity: str,
        api_style: str = "deployment",
        ttl: float = KEY_CACHE_SECONDS,
        stale_grace: float = KEY_STALE_GRACE_SECONDS,
        key_vault_options: Mapping[str, Any] | None = None,
        owns_credential: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.vault_url = vault_url.rstrip("/")
        self.secret_name = secret_name
        self.ttl = ttl
        self.stale_grace = stale_grace
        self.description = f"Key Vault {self.vault_url} (secret '{secret_name}')"
        self._api_style = api_style
        self._credential = credential
        self._named = NamedCredential(credential, identity)
        self._owns_credential = owns_credential
        self._options = {**KEY_VAULT_CLIENT_OPTIONS, **(key_vault_options or {})}
        self._clock = clock
        self._client: Any = None  # SecretClient, made on first use inside the running loop
        self._entry: _Entry | None = None
        self._lock = asyncio.Lock()
        self._generation = 0  # fetches finished; tells a waiter that a fetch ended while it waited
        self._failure: ServiceError | None = None  # the last fetch's error, shared with its waiters

    def _fresh(self) -> dict[str, str] | None:
        entry = self._entry
        return dict(entry.headers) if entry is not None and self._clock() < entry.fresh_until else None

    async def headers(self) -> dict[str, str]:
        """The cached headers while fresh; otherwise one fetch that every concurrent caller awaits."""
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        generation = self._generation
        async with self._lock:
            fresh = self._fresh()
            if fresh is not None:
                return fresh
            if self._generation != generation and self._failure is not None:
                # The fetch this caller waited for failed: share its answer instead of queueing another try.
                raise _copy(self._failure)
            try:
                async with asyncio.timeout(FETCH_TIMEOUT_SECONDS):
                    entry = await self._fetch()
            except TimeoutError:
                failure = ServiceError(
                    503, ERROR_CODE, f"{self.description} did not answer within {FETCH_TIMEOUT_SECONDS:g} s.", transient=True
                )
            except ServiceError as exc:
                failure = exc
            else:
                self._generation += 1
                self._failure, self._entry = None, entry
                return dict(entry.headers)
            self._generation += 1
            return self._stale_or_raise(failure)

    def _stale_or_raise(self, failure: ServiceError) -> dict[str, str]:
        """After a failed fetch: the due key while its grace lasts and the failure is transient, else the failure."""
        entry, now = self._entry, self._clock()
        if failure.transient and entry is not None and now < entry.usable_until:
            wait = min(RETRY_AFTER_FAILURE_SECONDS, entry.usable_until - now)
            entry.fresh_until = now + wait
            self._failure = None
            log.warning("%s Using the cached credential; next try in %.0f s.", failure.message, wait)
            return dict(entry.headers)
        self._failure = failure
        raise failure

    async def refresh(self, stale: dict[str, str]) -> None:
        """Drop the cache if it still holds ``stale`` (refused upstream); a newer value is kept."""
        async with self._lock:
            if self._entry is not None and self._entry.headers == stale:
                self._entry = None
                log.info("The model service refused the cached credential (%s); it will be fetched again.", self.description)

    def _secret_client(self) -> Any:
        if self._client is None:
            from azure.keyvault.secrets.aio import SecretClient

            self._client = SecretClient(self.vault_url, credential=self._named, **self._options)
        return self._client

    def _unavailable(self, what: str) -> ServiceError:
        return ServiceError(503, ERROR_CODE, f"Could not read the model key from {self.description}: {what}", transient=True)

    def _misconfigured(self, what: str) -> ServiceError:
        return ServiceError(500, CONFIG_ERROR_CODE, f"{self.description}: {what}", transient=False)

    async def _fetch(self) -> _Entry:
        try:
            secret = await self._secret_client().get_secret(self.secret_name)
        except IdentityUnavailable as exc:
            raise self._unavailable(str(exc.message)) from None
        except ResourceNotFoundError:
            raise self._misconfigured(
                "the secret does not exist; store the model key in it or correct AZURE_OPENAI_API_KEY_SECRET_NAME."
            ) from None
        except HttpResponseError as exc:
            raise self._refused(exc) from None
        except Exception as exc:
            raise self._unavailable(reason(exc)) from None
        key = (secret.value or "").strip()  # `az keyvault secret set --file` keeps a trailing newline
        if not key:
            raise self._misconfigured("the secret is empty; store the model key in it.")
        remember_secret(key)
        log.info("Read the model key from %s, version %s.", self.description, secret.properties.version)
        now = self._clock()
        return _Entry(_key_headers(key, self._api_style), now + self.ttl, now + self.ttl + self.stale_grace)

    def _refused(self, exc: HttpResponseError) -> ServiceError:
        inner = getattr(getattr(exc, "error", None), "innererror", None) or {}
        if exc.status_code == 403 and isinstance(inner, dict) and inner.get("code") == "SecretDisabled":
            return self._misconfigured("the secret is disabled; enable it or store the key in an enabled version.")
        hint = ""
        if exc.status_code in (401, 403):
            # Role assignments take minutes to propagate after a deployment: worth retrying, hence 503.
            hint = " (the app's identity needs the role 'Key Vault Secrets User' on the vault)"
        return self._unavailable(reason(exc) + hint)

    async def close(self) -> None:
        """Close the SecretClient, and the credential if this object made it."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        if self._owns_credential:
            await self._credential.close()
