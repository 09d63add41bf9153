"""Where the model key or token comes from, and how secrets stay out of logs.

Three ways, chosen by ``AZURE_OPENAI_AUTH`` (see docs/credentials.md):

- ``key``: the key from ``AZURE_OPENAI_API_KEY`` (the platform may resolve a Key
  Vault reference into it);
- ``keyvault``: the key read from Key Vault (``AZURE_KEY_VAULT_ENDPOINT``,
  ``AZURE_OPENAI_API_KEY_SECRET_NAME``) with the app's identity, cached for
  :data:`KEY_CACHE_SECONDS`;
- ``entra``: no key; a Microsoft Entra token for
  ``https://cognitiveservices.azure.com/.default`` from the same identity, cached
  until shortly before it expires.

Nothing here does I/O at import or construction. The first :meth:`headers` call
fetches; concurrent callers wait for that one fetch instead of starting their
own, and callers that were waiting for a fetch that failed share its error. After
an upstream 401 the client calls :meth:`refresh` with the refused headers: the
cache is dropped only if it still holds them, so N concurrent 401s cause one
refetch (the key rotation path).

Failures are :class:`~shared.errors.ServiceError`: the vault or the identity
unreachable or refusing is 503 ``CredentialUnavailable`` (transient: queue jobs
retry later) naming what failed; a missing, empty or disabled secret is 500
``ConfigurationError`` (not transient). Messages never carry a key or token, and
SDK exception text is passed through :func:`redact` first.

:class:`RedactSecrets` is the logging filter the app installs on its handlers
(:func:`install_log_hygiene`); it removes key, token and SAS signature shapes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)

from shared.errors import ServiceError
from shared.settings import Settings

log = logging.getLogger(__name__)

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"

# How long a key read from Key Vault is used before it is read again: bounds how
# late a rotation is noticed when nothing forces it (an upstream 401 refetches at once).
KEY_CACHE_SECONDS = 300.0
# If the vault cannot be reached when the cached key is due, the old key keeps
# being used (it is very likely still valid; a 401 would drop it) for this long,
# so a Key Vault outage does not take the service down with it.
KEY_STALE_GRACE_SECONDS = 3600.0
# Tokens are fetched again this long before they expire (azure-identity uses the same 5 minutes).
TOKEN_REFRESH_MARGIN_SECONDS = 300.0
# While a cached value is served after a failed refetch, the next attempt waits this long,
# so every request does not stand in line behind a vault that does not answer.
RETRY_AFTER_FAILURE_SECONDS = 30.0
# Upper bound on one fetch, retries included: a hung vault must not hold a
# synchronous request (Azure cuts HTTP at 230 s) or every waiting caller.
FETCH_TIMEOUT_SECONDS = 30.0

ERROR_CODE = "CredentialUnavailable"
CONFIG_ERROR_CODE = "ConfigurationError"

# SecretClient options. The SDK's defaults (10 retries, 300 s timeouts) suit batch
# tools, not a request path; three quick retries then a clear 503 suit this app.
# Tests and the local stack add ``connection_verify`` (the stand-in's CA) and
# ``verify_challenge_resource=False`` through ``key_vault_options``; production
# never turns the challenge check off.
DEFAULT_KEY_VAULT_OPTIONS: dict[str, Any] = {
    "retry_total": 3,
    "retry_backoff_factor": 0.5,
    "retry_backoff_max": 4,
    "connection_timeout": 10,
    "read_timeout": 20,
}


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


# --------------------------------------------------------------------------------------------
# Redaction


_KNOWN_SECRETS: tuple[str, ...] = ()  # replaced, never mutated: read by logging threads without a lock
_MAX_KNOWN_SECRETS = 16
_MIN_SECRET_LENGTH = 8  # shorter values would redact ordinary words

_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # JWTs anywhere (Entra access tokens, id tokens): header.payload.signature, both JSON objects.
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "***"),
    # Bearer <token>; 16+ characters so "Bearer authorization=..." in a challenge header stays readable.
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]{16,}=*"), r"\1***"),
    # Authorization: SharedKey account:signature, Basic ..., anything but Bearer (handled above).
    # Only the header form "authorization:": the challenge's authorization="https://login..." is an address.
    (re.compile(r"(?i)(authorization[\"']?\s*:\s*[\"']?)(?!\s|bearer\s)[^\"'\r\n,}]+"), r"\1***"),
    # Header- and setting-shaped keys: api-key: X, "api-key": "X", AZURE_OPENAI_API_KEY=X, AccountKey=X, ...
    (
        re.compile(
            r"(?i)((?:api[-_]?key|ocp-apim-subscription-key|x-identity-header|x-functions-key|client[-_]?secret"
            r"|accountkey|sharedaccesskey|password)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,;&}\]]+"
        ),
        r"\1***",
    ),
    # SAS signatures in URLs and SAS connection strings.
    (re.compile(r"(?i)(\bsig=)[^&\s\"'#;]+"), r"\1***"),
    (re.compile(r"(?i)(SharedAccessSignature=)[^;\s\"']+"), r"\1***"),
    # OAuth token responses: "access_token": "...", refresh_token=...
    (re.compile(r"(?i)([\"']?(?:access_token|refresh_token|id_token)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,}&]+"), r"\1***"),
)


def remember_secret(value: str) -> None:
    """Redact this exact value from logs from now on (the key read from the vault or a setting)."""
    global _KNOWN_SECRETS
    if len(value) >= _MIN_SECRET_LENGTH and value not in _KNOWN_SECRETS:
        _KNOWN_SECRETS = (value, *_KNOWN_SECRETS)[:_MAX_KNOWN_SECRETS]


def redact(text: str) -> str:
    """``text`` with every known secret and every key, token or signature shape replaced by ``***``."""
    for secret in _KNOWN_SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """A handler filter that rewrites each record with :func:`redact` (message, arguments, traceback).

    Install it on handlers, not loggers: a logger's filters do not see records
    that propagate from child loggers such as ``azure.*``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler's error path
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters cache the formatted traceback here and reuse it, so redacting it once is enough.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


AZURE_HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"


def install_log_hygiene(*loggers: logging.Logger | str, azure_http_level: int = logging.WARNING) -> RedactSecrets:
    """Put :class:`RedactSecrets` on every handler of the root logger (and of ``loggers``); quiet azure HTTP logs.

    The azure-core HTTP logging policy logs every request and response at INFO;
    it is set to ``azure_http_level`` unless someone already chose its level.
    Call it once at start, after the host has installed its handlers.
    """
    chosen = [logging.getLogger()] + [logging.getLogger(x) if isinstance(x, str) else x for x in loggers]
    found = next((f for lg in chosen for h in lg.handlers for f in h.filters if isinstance(f, RedactSecrets)), None)
    redactor = found or RedactSecrets()
    for logger in chosen:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(redactor)
    http_logger = logging.getLogger(AZURE_HTTP_LOGGER)
    if http_logger.level == logging.NOTSET:
        http_logger.setLevel(azure_http_level)
    return redactor


# --------------------------------------------------------------------------------------------
# Describing failures without leaking


def _strip_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        inner = getattr(current, "inner_exception", None)  # azure-core keeps the transport's error here
        context = None if current.__suppress_context__ else current.__context__
        current = current.__cause__ or (inner if isinstance(inner, BaseException) else None) or context


def reason(exc: BaseException, limit: int = 300) -> str:
    """A short, redacted explanation of ``exc`` for an error message or a log line."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "TLS certificate not trusted: " + redact(str(cause.verify_message or cause))[:limit]
        if isinstance(cause, ConnectionRefusedError) or (isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED):
            return "connection refused"
        if cause.__class__.__name__ == "gaierror":
            return "host name not found"
        if isinstance(cause, TimeoutError):
            return "timed out"
    if isinstance(exc, HttpResponseError) and exc.status_code:
        error = getattr(exc, "error", None)
        code = getattr(error, "code", None) or exc.reason or ""
        message = getattr(error, "message", None) or (exc.message or "").split("\n", 1)[0]
        if message and message.startswith(f"({code}) "):  # azure-core prefixes "(code) " to the message
            message = message[len(code) + 3 :]
        text = f"HTTP {exc.status_code}" + (f" {code}" if code and code != "None" else "") + (f": {message}" if message else "")
    else:
        text = (exc.message if isinstance(exc, AzureError) and exc.message else str(exc)) or type(exc).__name__
    text = re.sub(r"\bssl:(<[^>]*>|default)\s*", "", text)  # aiohttp's connector repr says nothing useful
    text = re.sub(r"https?://[^\s'\"<>]+", lambda m: _strip_query(m.group(0)), text)  # query strings may hold SAS
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_identity(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """Which identity :func:`create_token_credential` uses here, in words for an error message."""
    env = os.environ if environ is None else environ
    who = f" (user-assigned identity {settings.client_id})" if settings.client_id else ""
    for variable in ("IDENTITY_ENDPOINT", "MSI_ENDPOINT"):
        if env.get(variable):
            return f"the managed identity endpoint {_strip_query(env[variable])}{who}"
    if env.get("WEBSITE_INSTANCE_ID"):
        return f"the managed identity of this app{who} (no IDENTITY_ENDPOINT: is an identity assigned to the app?)"
    return f"DefaultAzureCredential{who} (managed identity, workload identity, environment or developer login such as az login)"


def _resource(scopes: tuple[str, ...]) -> str:
    scope = scopes[0] if scopes else ""
    return scope[: -len("/.default")] if scope.endswith("/.default") else scope


# --------------------------------------------------------------------------------------------
# The token credential


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


class _NamedCredential:
    """Passes token requests to the shared credential and names the identity when one fails."""

    def __init__(self, inner: AsyncTokenCredential, identity: str) -> None:
        self._inner = inner
        self._identity = identity

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        try:
            return await self._inner.get_token(*scopes, **kwargs)
        except Exception as exc:
            raise IdentityUnavailable(_resource(scopes), self._identity, exc) from None

    async def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        try:
            get_token_info = getattr(self._inner, "get_token_info", None)
            if get_token_info is not None:
                info: AccessTokenInfo = await get_token_info(*scopes, options=options)
                return info
            kwargs: dict[str, Any] = dict(options or {})
            token = await self._inner.get_token(*scopes, **kwargs)
            return AccessTokenInfo(token.token, token.expires_on)
        except Exception as exc:
            raise IdentityUnavailable(_resource(scopes), self._identity, exc) from None

    async def close(self) -> None:
        """Nothing: the shared credential belongs to whoever created it."""

    async def __aenter__(self) -> _NamedCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


# --------------------------------------------------------------------------------------------
# The three ways


class KeyAuth:
    """The key from a setting: nothing to fetch, nothing to refresh."""

    def __init__(self, key: str, api_style: str = "deployment") -> None:
        self._headers = _key_headers(key, api_style)
        self.description = "the key from AZURE_OPENAI_API_KEY"
        remember_secret(key)

    async def headers(self) -> dict[str, str]:
        return dict(self._headers)

    async def refresh(self, stale: dict[str, str]) -> None:
        # A setting cannot change under a running process: the platform restarts the app when
        # the setting (or the Key Vault reference behind it) changes.
        if stale == self._headers:
            log.warning("The model service refused the key from AZURE_OPENAI_API_KEY; update the setting (the app restarts).")

    async def close(self) -> None:
        return None


def _key_headers(key: str, api_style: str) -> dict[str, str]:
    # Azure takes keys in api-key; OpenAI's own API takes them as a bearer token.
    return {"Authorization": f"Bearer {key}"} if api_style == "openai" else {"api-key": key}


@dataclass
class _Entry:
    headers: dict[str, str]
    fresh_until: float  # time.monotonic(): served without asking until then
    usable_until: float  # time.monotonic(): may be served past fresh_until if a refetch fails transiently


class _CachedAuth:
    """One fetch at a time, shared by concurrent callers; cache with freshness and a grace period."""

    description = ""

    def __init__(self) -> None:
        self._entry: _Entry | None = None
        self._lock = asyncio.Lock()
        self._generation = 0  # fetches finished; tells a waiter that a fetch ended while it waited
        self._failure: ServiceError | None = None  # the last fetch's error, shared with its waiters
        self.fetch_count = 0

    async def _fetch(self) -> _Entry:
        raise NotImplementedError

    def _timed_out(self) -> ServiceError:
        return ServiceError(
            503, ERROR_CODE, f"{self.description} did not answer within {FETCH_TIMEOUT_SECONDS:g} s.", transient=True
        )

    async def headers(self) -> dict[str, str]:
        """The cached headers while fresh; otherwise one fetch that every concurrent caller awaits."""
        entry = self._entry
        if entry is not None and time.monotonic() < entry.fresh_until:
            return dict(entry.headers)
        generation = self._generation
        async with self._lock:
            entry = self._entry
            now = time.monotonic()
            if entry is not None and now < entry.fresh_until:
                return dict(entry.headers)
            if self._generation != generation and self._failure is not None:
                # The fetch this caller waited for failed: share its answer instead of queueing another try.
                raise _copy(self._failure)
            self.fetch_count += 1
            try:
                async with asyncio.timeout(FETCH_TIMEOUT_SECONDS):
                    fresh = await self._fetch()
            except TimeoutError:
                failure = self._timed_out()
            except ServiceError as exc:
                failure = exc
            else:
                self._generation += 1
                self._failure = None
                self._entry = fresh
                return dict(fresh.headers)
            self._generation += 1
            now = time.monotonic()
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


class KeyVaultAuth(_CachedAuth):
    """The key read from a Key Vault secret with the app's identity, cached for ``ttl`` seconds."""

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
    ) -> None:
        super().__init__()
        self.vault_url = vault_url.rstrip("/")
        self.secret_name = secret_name
        self.ttl = ttl
        self.stale_grace = stale_grace
        self.description = f"Key Vault {self.vault_url} (secret '{secret_name}')"
        self._api_style = api_style
        self._credential = credential
        self._named = _NamedCredential(credential, identity)
        self._owns_credential = owns_credential
        self._options = {**DEFAULT_KEY_VAULT_OPTIONS, **(key_vault_options or {})}
        self._client: Any = None  # SecretClient, made on first use inside the running loop

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
            inner = getattr(getattr(exc, "error", None), "innererror", None) or {}
            if exc.status_code == 403 and isinstance(inner, dict) and inner.get("code") == "SecretDisabled":
                raise self._misconfigured("the secret is disabled; enable it or store the key in an enabled version.") from None
            hint = ""
            if exc.status_code in (401, 403):
                # Role assignments take minutes to propagate after a deployment: worth retrying, hence 503.
                hint = " (the app's identity needs the role 'Key Vault Secrets User' on the vault)"
            raise self._unavailable(reason(exc) + hint) from None
        except Exception as exc:
            raise self._unavailable(reason(exc)) from None
        key = (secret.value or "").strip()  # `az keyvault secret set --file` keeps a trailing newline
        if not key:
            raise self._misconfigured("the secret is empty; store the model key in it.")
        remember_secret(key)
        log.info("Read the model key from %s, version %s.", self.description, secret.properties.version)
        now = time.monotonic()
        return _Entry(_key_headers(key, self._api_style), now + self.ttl, now + self.ttl + self.stale_grace)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        if self._owns_credential:
            await self._credential.close()


class EntraAuth(_CachedAuth):
    """A Microsoft Entra bearer token for the model service, cached until shortly before it expires."""

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        identity: str,
        scope: str = COGNITIVE_SERVICES_SCOPE,
        refresh_margin: float = TOKEN_REFRESH_MARGIN_SECONDS,
        owns_credential: bool = False,
    ) -> None:
        super().__init__()
        self.scope = scope
        self.refresh_margin = refresh_margin
        self.description = identity
        self._credential = credential
        self._owns_credential = owns_credential

    async def _fetch(self) -> _Entry:
        resource = _resource((self.scope,))
        try:
            token = await self._credential.get_token(self.scope)
        except Exception as exc:
            raise ServiceError(
                503,
                ERROR_CODE,
                f"Could not get a Microsoft Entra token for {resource} from {self.description}: {reason(exc)}",
                transient=True,
            ) from None
        remaining = token.expires_on - time.time()
        if remaining <= 0:
            raise ServiceError(503, ERROR_CODE, f"{self.description} gave an expired token for {resource}.", transient=True)
        # Half the remaining lifetime at most: a short-lived token (or the same token handed back
        # by azure-identity's cache near its end) is asked for again at halving intervals, not per call.
        margin = min(self.refresh_margin, remaining / 2)
        now = time.monotonic()
        log.info("Got a token for %s from %s, valid for %.0f s.", resource, self.description, remaining)
        return _Entry({"Authorization": f"Bearer {token.token}"}, now + remaining - margin, now + remaining)

    async def close(self) -> None:
        if self._owns_credential:
            await self._credential.close()


def create_upstream_auth(
    settings: Settings,
    credential: AsyncTokenCredential | None = None,
    *,
    key_vault_options: Mapping[str, Any] | None = None,
) -> UpstreamAuth:
    """The upstream auth the settings ask for. No I/O here: the first headers() call fetches.

    Pass the process's shared ``credential`` (see :func:`create_token_credential`);
    without one, one is created and closed with the returned object.
    ``key_vault_options`` are extra SecretClient options (tests: the stand-in's CA).
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
        )
    return EntraAuth(credential, identity=identity, owns_credential=owns)
