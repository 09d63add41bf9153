"""Upstream credentials over real HTTP: the key way, Key Vault through the managed identity, Entra ID.

The real SDKs (azure-identity's ManagedIdentityCredential, azure-keyvault-secrets'
SecretClient, azure-storage-blob) run against local stand-ins that speak the real
protocols on loopback: the App Service identity endpoint (local/identity.py) and a
TLS Key Vault with the challenge flow (local/keyvault.py). No mocks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import re
import secrets
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trustme
from azure.core.exceptions import AzureError
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

from local.azurite import ACCOUNT, Azurite, start_azurite
from local.identity import IdentityEndpoint, TokenIssuer, decode_claims
from local.keyvault import KeyVaultStandIn
from local.servers import ServerThread, serve_in_thread
from shared.credentials import (
    COGNITIVE_SERVICES_SCOPE,
    KEY_CACHE_SECONDS,
    KEY_STALE_GRACE_SECONDS,
    RETRY_AFTER_FAILURE_SECONDS,
    EntraAuth,
    KeyAuth,
    KeyVaultAuth,
    UpstreamAuth,
    create_token_credential,
    create_upstream_auth,
    describe_identity,
)
from shared.errors import ServiceError
from shared.redaction import AZURE_HTTP_LOGGER, RedactSecrets, install_log_hygiene, reason, redact, remember_secret
from shared.settings import Settings

SECRET_NAME = "azure-openai-api-key"
COGNITIVE = "https://cognitiveservices.azure.com"
VAULT = "https://vault.azure.net"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
FAST: dict[str, Any] = {"retry_backoff_factor": 0.01}  # the SDKs' retries, without their seconds of backoff
BASE_ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://contoso.openai.azure.com",
    "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1-mini",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}


def make_settings(**env: str) -> Settings:
    return Settings.from_env({**BASE_ENV, **env})


def new_key() -> str:
    return "kv-" + secrets.token_hex(16)


class ManualClock:
    """The Key Vault cache's clock, moved by the test instead of waited for."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingCredential:
    """The real credential, with a count of the token requests that reach it (the cache in front is what is tested)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.calls += 1
        return await self.inner.get_token(*scopes, **kwargs)

    async def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        self.calls += 1
        return await self.inner.get_token_info(*scopes, options=options)

    async def close(self) -> None:
        await self.inner.close()


def assert_clean(text: str, *values: str) -> None:
    """No given secret and no JWT in ``text``."""
    for value in values:
        assert value not in text
    assert not JWT.search(text), text


# --------------------------------------------------------------------------- stand-ins


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer()


@pytest.fixture(scope="module")
def identity_server(issuer: TokenIssuer) -> Iterator[IdentityEndpoint]:
    endpoint = IdentityEndpoint(issuer).start()
    yield endpoint
    endpoint.stop()


@pytest.fixture()
def identity(identity_server: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch) -> IdentityEndpoint:
    """The identity endpoint, healthy, counts zeroed, and this process configured as App Service configures it."""
    identity_server.status = None
    identity_server.lifetime = None
    identity_server.reset_counts()
    for name, value in identity_server.env().items():
        monkeypatch.setenv(name, value)
    for name in ("MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "WEBSITE_INSTANCE_ID", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    return identity_server


@pytest.fixture(scope="module")
def vault_server(issuer: TokenIssuer) -> Iterator[KeyVaultStandIn]:
    vault = KeyVaultStandIn(issuer).start()
    yield vault
    vault.close()


@pytest.fixture()
def vault(vault_server: KeyVaultStandIn, identity: IdentityEndpoint) -> KeyVaultStandIn:
    """The vault, healthy, open to any valid token, counts zeroed."""
    vault_server.status = None
    vault_server.allowed_object_ids = None
    vault_server.reset_counts()
    return vault_server


@pytest.fixture()
def model_key(vault: KeyVaultStandIn) -> str:
    """A fresh model key stored in the vault under the default secret name."""
    key = new_key()
    vault.set_secret(SECRET_NAME, key)
    return key


@pytest.fixture()
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture()
async def make_auth(vault: KeyVaultStandIn, clock: ManualClock) -> AsyncIterator[Callable[..., Any]]:
    """Build auth objects the way the app does (one shared credential, the Key Vault cache on ``clock``), closing them afterwards."""
    made: list[tuple[UpstreamAuth, Any]] = []

    def make(mode: str = "keyvault", *, credential: Any = None, **env: str) -> Any:
        if mode == "keyvault":
            env.setdefault("AZURE_KEY_VAULT_ENDPOINT", vault.url)
        settings = make_settings(AZURE_OPENAI_AUTH=mode, **env)
        credential = credential or create_token_credential(settings, **FAST)
        auth = create_upstream_auth(settings, credential, key_vault_options={**vault.client_options(), **FAST}, clock=clock)
        made.append((auth, credential))
        return auth

    yield make
    for auth, credential in made:
        await auth.close()
        await credential.close()


async def failure_of(auth: UpstreamAuth) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        await auth.headers()
    return caught.value


# --------------------------------------------------------------------------- the key way


async def test_key_way_sends_the_setting_as_api_key_or_bearer_for_openai() -> None:
    key = new_key()
    azure = create_upstream_auth(make_settings(AZURE_OPENAI_API_KEY=key))
    assert isinstance(azure, KeyAuth)
    assert await azure.headers() == {"api-key": key}
    await azure.refresh({"api-key": key})  # nothing to refetch: still the setting
    assert await azure.headers() == {"api-key": key}
    openai = create_upstream_auth(make_settings(AZURE_OPENAI_ENDPOINT="https://api.openai.com", AZURE_OPENAI_API_KEY=key))
    assert await openai.headers() == {"Authorization": f"Bearer {key}"}
    await azure.close()
    await openai.close()


async def test_keyvault_way_with_openai_style_sends_the_vault_key_as_bearer(
    make_auth: Callable[..., Any], model_key: str
) -> None:
    auth = make_auth(AZURE_OPENAI_ENDPOINT="https://api.openai.com")
    assert await auth.headers() == {"Authorization": f"Bearer {model_key}"}


# --------------------------------------------------------------------------- Key Vault through the identity


async def test_nothing_is_fetched_until_headers_are_asked_for(
    make_auth: Callable[..., Any], identity: IdentityEndpoint, vault: KeyVaultStandIn, model_key: str
) -> None:
    auth = make_auth()
    assert isinstance(auth, KeyVaultAuth)
    assert identity.requests == 0 and vault.requests == 0
    assert await auth.headers() == {"api-key": model_key}


async def test_key_is_read_from_the_vault_through_the_managed_identity(identity: IdentityEndpoint, issuer: TokenIssuer) -> None:
    # A vault of its own: the SDK remembers a vault's challenge per process, and this test watches the challenge.
    vault = KeyVaultStandIn(issuer).start()
    key = new_key()
    vault.set_secret(SECRET_NAME, key)
    settings = make_settings(AZURE_OPENAI_AUTH="keyvault", AZURE_KEY_VAULT_ENDPOINT=vault.url)
    auth = create_upstream_auth(settings, key_vault_options=vault.client_options())  # production retry options
    try:
        assert await auth.headers() == {"api-key": key}
    finally:
        await auth.close()
        vault.close()
    # App Service protocol: one token for the vault's resource, asked for with the identity header.
    assert identity.resources == {VAULT: 1}
    assert identity.client_ids == {"": 1}  # system-assigned: no client_id parameter
    # Key Vault protocol: the unauthenticated request drew the challenge, then the bearer request read it.
    assert vault.challenges == 1
    assert vault.requests == 2
    assert vault.reads == {SECRET_NAME: 1}


async def test_user_assigned_identity_is_selected_by_azure_client_id(
    make_auth: Callable[..., Any], identity: IdentityEndpoint, vault: KeyVaultStandIn, model_key: str
) -> None:
    client_id, object_id = identity.issuer.add_identity()
    vault.allowed_object_ids = {object_id}  # only the user-assigned identity holds the vault role
    auth = make_auth(AZURE_CLIENT_ID=client_id)
    assert await auth.headers() == {"api-key": model_key}
    assert identity.client_ids == {client_id: 1}


async def test_unknown_user_assigned_identity_is_a_503_naming_the_identity(
    make_auth: Callable[..., Any], identity: IdentityEndpoint, model_key: str
) -> None:
    error = await failure_of(make_auth(AZURE_CLIENT_ID="00000000-0000-0000-0000-000000000000"))
    assert error.status == 503 and error.transient
    assert identity.url in error.message
    assert "00000000-0000-0000-0000-000000000000" in error.message
    assert "Unable to load the proper Managed Identity" in error.message


async def test_concurrent_callers_share_one_fetch(
    make_auth: Callable[..., Any], identity: IdentityEndpoint, vault: KeyVaultStandIn, model_key: str
) -> None:
    auth = make_auth()
    results = await asyncio.gather(*(auth.headers() for _ in range(50)))
    assert all(r == {"api-key": model_key} for r in results)
    assert identity.requests == 1
    assert vault.reads == {SECRET_NAME: 1}


async def test_the_key_is_read_again_after_its_ttl(
    make_auth: Callable[..., Any], identity: IdentityEndpoint, vault: KeyVaultStandIn, model_key: str, clock: ManualClock
) -> None:
    auth = make_auth()
    assert await auth.headers() == {"api-key": model_key}
    rotated = new_key()
    vault.set_secret(SECRET_NAME, rotated)
    clock.advance(KEY_CACHE_SECONDS - 1)
    assert await auth.headers() == {"api-key": model_key}  # still cached
    assert vault.reads == {SECRET_NAME: 1}
    clock.advance(1)
    assert await auth.headers() == {"api-key": rotated}
    assert vault.reads == {SECRET_NAME: 2}
    assert identity.requests == 1  # the vault token is still good: only the secret was read again


async def test_rotation_one_refetch_for_many_401s_and_a_stale_refresh_keeps_the_new_key(
    make_auth: Callable[..., Any], vault: KeyVaultStandIn, model_key: str
) -> None:
    auth = make_auth()
    old = await auth.headers()
    rotated = new_key()
    vault.set_secret(SECRET_NAME, rotated)
    # Many requests were refused with the old key at once: they all report it.
    await asyncio.gather(*(auth.refresh(old) for _ in range(10)))
    results = await asyncio.gather(*(auth.headers() for _ in range(10)))
    assert all(r == {"api-key": rotated} for r in results)
    assert vault.reads == {SECRET_NAME: 2}
    # A late 401 for the old key must not throw away the new one.
    await auth.refresh(old)
    assert await auth.headers() == {"api-key": rotated}
    assert vault.reads == {SECRET_NAME: 2}


async def test_stale_key_is_kept_while_the_vault_is_down_but_not_after_a_401(
    make_auth: Callable[..., Any], vault: KeyVaultStandIn, model_key: str, caplog: pytest.LogCaptureFixture, clock: ManualClock
) -> None:
    auth = make_auth()
    assert await auth.headers() == {"api-key": model_key}
    vault.status = 503
    clock.advance(KEY_CACHE_SECONDS)
    with caplog.at_level(logging.WARNING, logger="shared.credentials"):
        assert await auth.headers() == {"api-key": model_key}  # due, vault down: the old key still serves
    assert any("Using the cached credential" in r.getMessage() and vault.url in r.getMessage() for r in caplog.records)
    asked = vault.requests
    clock.advance(RETRY_AFTER_FAILURE_SECONDS - 1)
    assert await auth.headers() == {"api-key": model_key}
    assert vault.requests == asked  # no new attempt until RETRY_AFTER_FAILURE_SECONDS
    clock.advance(1)
    assert await auth.headers() == {"api-key": model_key}
    assert vault.requests > asked  # asked again, still down, still the old key
    await auth.refresh({"api-key": model_key})  # upstream refused it: no grace for a refused key
    error = await failure_of(auth)
    assert error.status == 503
    assert_clean(error.message, model_key)


async def test_stale_key_serves_no_longer_than_its_grace(
    make_auth: Callable[..., Any], vault: KeyVaultStandIn, model_key: str, clock: ManualClock
) -> None:
    auth = make_auth()
    assert await auth.headers() == {"api-key": model_key}
    vault.status = 503
    clock.advance(KEY_CACHE_SECONDS + KEY_STALE_GRACE_SECONDS - 1)
    assert await auth.headers() == {"api-key": model_key}  # one second of grace left
    clock.advance(RETRY_AFTER_FAILURE_SECONDS)
    error = await failure_of(auth)
    assert error.status == 503 and error.transient
    assert_clean(error.message, model_key)


async def test_waiters_share_a_failed_fetch_instead_of_queueing_more(
    make_auth: Callable[..., Any], vault: KeyVaultStandIn, model_key: str
) -> None:
    vault.status = 503
    await failure_of(make_auth())
    one_fetch = vault.requests  # the SDK's own retries included
    vault.reset_counts()
    auth = make_auth()
    outcomes = await asyncio.gather(*(auth.headers() for _ in range(20)), return_exceptions=True)
    assert all(isinstance(o, ServiceError) and o.status == 503 for o in outcomes)
    assert vault.requests == one_fetch


# --------------------------------------------------------------------------- failures


async def test_vault_answering_503_is_a_transient_503_naming_the_vault(
    make_auth: Callable[..., Any], vault: KeyVaultStandIn, model_key: str
) -> None:
    vault.status = 503
    error = await failure_of(make_auth())
    assert (error.status, error.code, error.transient) == (503, "CredentialUnavailable", True)
    assert vault.url in error.message and SECRET_NAME in error.message
    assert "HTTP 503" in error.message
    assert_clean(error.message, model_key)
    assert error.body()["error"]["code"] == "CredentialUnavailable"


async def test_vault_refusing_connections_is_a_503_saying_so(identity: IdentityEndpoint, issuer: TokenIssuer) -> None:
    gone = KeyVaultStandIn(issuer).start()
    url, options = gone.url, gone.client_options()
    gone.stop()
    settings = make_settings(AZURE_OPENAI_AUTH="keyvault", AZURE_KEY_VAULT_ENDPOINT=url)
    auth = create_upstream_auth(settings, key_vault_options={**options, **FAST})
    try:
        error = await failure_of(auth)
    finally:
        await auth.close()
        gone.close()
    assert error.status == 503 and error.transient
    assert error.message == f"Could not read the model key from Key Vault {url} (secret '{SECRET_NAME}'): connection refused"


async def test_identity_without_the_vault_role_is_a_503_with_the_role_to_grant(
    make_auth: Callable[..., Any], vault: KeyVaultStandIn, model_key: str
) -> None:
    vault.allowed_object_ids = {"someone-else"}
    error = await failure_of(make_auth())
    assert error.status == 503 and error.transient  # role assignments take minutes to propagate: retry
    assert "HTTP 403 Forbidden" in error.message
    assert "Key Vault Secrets User" in error.message
    assert_clean(error.message, model_key)


async def test_identity_endpoint_failing_is_a_503_naming_it_and_the_vault(
    make_auth: Callable[..., Any], identity: IdentityEndpoint, vault: KeyVaultStandIn, model_key: str
) -> None:
    identity.status = 503
    error = await failure_of(make_auth())
    assert error.status == 503 and error.transient
    assert vault.url in error.message
    assert f"no token for {VAULT} from the managed identity endpoint {identity.url}" in error.message
    assert vault.reads == {}
    assert_clean(error.message, model_key, identity.header_secret)


async def test_identity_endpoint_refusing_connections_in_entra_mode(
    issuer: TokenIssuer, identity: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = IdentityEndpoint(issuer).start()
    url = gone.url
    gone.stop()
    monkeypatch.setenv("IDENTITY_ENDPOINT", url)
    settings = make_settings(AZURE_OPENAI_AUTH="entra")
    credential = create_token_credential(settings, **FAST)
    auth = create_upstream_auth(settings, credential)
    assert isinstance(auth, EntraAuth)
    try:
        error = await failure_of(auth)
    finally:
        await auth.close()
        await credential.close()
    assert error.status == 503 and error.transient and error.code == "CredentialUnavailable"
    assert error.message == (
        f"Could not get a Microsoft Entra token for {COGNITIVE} from the managed identity endpoint {url}: connection refused"
    )


async def test_missing_secret_is_a_configuration_error(make_auth: Callable[..., Any], vault: KeyVaultStandIn) -> None:
    error = await failure_of(make_auth(AZURE_OPENAI_API_KEY_SECRET_NAME="no-such-secret"))
    assert (error.status, error.code, error.transient) == (500, "ConfigurationError", False)
    assert vault.url in error.message and "'no-such-secret'" in error.message
    assert "does not exist" in error.message


@pytest.mark.parametrize("value", ["", "   \n"])
async def test_empty_secret_is_a_configuration_error(make_auth: Callable[..., Any], vault: KeyVaultStandIn, value: str) -> None:
    vault.set_secret("empty-secret", value)
    error = await failure_of(make_auth(AZURE_OPENAI_API_KEY_SECRET_NAME="empty-secret"))
    assert (error.status, error.code, error.transient) == (500, "ConfigurationError", False)
    assert "'empty-secret'" in error.message and "empty" in error.message


async def test_disabled_secret_is_a_configuration_error(make_auth: Callable[..., Any], vault: KeyVaultStandIn) -> None:
    vault.set_secret("disabled-secret", new_key())
    vault.set_enabled("disabled-secret", False)
    error = await failure_of(make_auth(AZURE_OPENAI_API_KEY_SECRET_NAME="disabled-secret"))
    assert (error.status, error.code, error.transient) == (500, "ConfigurationError", False)
    assert "disabled" in error.message


async def test_trailing_newline_of_a_secret_set_from_a_file_is_dropped(
    make_auth: Callable[..., Any], vault: KeyVaultStandIn
) -> None:
    key = new_key()
    vault.set_secret("from-file", key + "\n")
    assert await make_auth(AZURE_OPENAI_API_KEY_SECRET_NAME="from-file").headers() == {"api-key": key}


# --------------------------------------------------------------------------- Entra ID


async def test_entra_token_has_the_model_audience_and_is_cached(
    make_auth: Callable[..., Any], identity: IdentityEndpoint
) -> None:
    auth = make_auth("entra")
    results = await asyncio.gather(*(auth.headers() for _ in range(20)))
    assert len({r["Authorization"] for r in results}) == 1
    scheme, token = results[0]["Authorization"].split(" ")
    assert scheme == "Bearer"
    assert identity.issuer.validate(token, COGNITIVE)
    assert not identity.issuer.validate(token, VAULT)
    assert decode_claims(token)["appid"] == identity.issuer.client_id
    assert identity.resources == {COGNITIVE: 1}
    assert await auth.headers() == results[0]
    assert identity.requests == 1


def counting_credential() -> CountingCredential:
    return CountingCredential(create_token_credential(make_settings(), **FAST))


async def test_entra_token_near_expiry_is_asked_for_again_and_an_expired_one_never_served(
    make_auth: Callable[..., Any], identity: IdentityEndpoint
) -> None:
    # The token's lifetime is the input: inside the provider's refresh window (5 minutes) it asks the
    # credential on every call; azure-identity's own cache answers with the same, unexpired token.
    identity.lifetime = 120
    counting = counting_credential()
    auth = make_auth("entra", credential=counting)
    first = await auth.headers()
    assert await auth.headers() == first
    assert counting.calls == 2
    assert identity.resources == {COGNITIVE: 1}
    # A token that has expired is never handed out again: the next call gets a new one from the endpoint.
    identity.lifetime = -1
    expired = make_auth("entra", credential=counting_credential())
    one, two = await expired.headers(), await expired.headers()
    assert one != two
    assert identity.resources == {COGNITIVE: 3}


async def test_entra_token_far_from_expiry_is_served_from_the_provider_cache(
    make_auth: Callable[..., Any], identity: IdentityEndpoint
) -> None:
    counting = counting_credential()
    auth = make_auth("entra", credential=counting)
    first = await auth.headers()
    assert [await auth.headers() for _ in range(3)] == [first] * 3
    assert counting.calls == 1


async def test_entra_refresh_drops_the_cached_token(make_auth: Callable[..., Any], identity: IdentityEndpoint) -> None:
    counting = counting_credential()
    auth = make_auth("entra", credential=counting)
    first = await auth.headers()
    await auth.refresh({"Authorization": "Bearer something-else-entirely"})
    await auth.headers()
    assert counting.calls == 1  # a refusal of another token keeps this one
    await auth.refresh(first)
    assert await auth.headers() == first  # azure-identity's own cache may answer with the same token
    assert counting.calls == 2


async def test_identity_endpoint_503_in_entra_mode_names_it(make_auth: Callable[..., Any], identity: IdentityEndpoint) -> None:
    identity.status = 503
    error = await failure_of(make_auth("entra"))
    assert (error.status, error.code, error.transient) == (503, "CredentialUnavailable", True)
    assert identity.url in error.message and COGNITIVE in error.message
    assert_clean(error.message, identity.header_secret)


# --------------------------------------------------------------------------- the credential


async def test_token_credential_is_managed_identity_on_app_service_else_default(
    identity: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    credential = create_token_credential(settings)
    assert isinstance(credential, ManagedIdentityCredential)
    assert describe_identity(settings) == f"the managed identity endpoint {identity.url}"
    await credential.close()
    assert identity.requests == 0  # no I/O at construction

    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
        monkeypatch.delenv(name)
    settings = make_settings(AZURE_CLIENT_ID="11111111-2222-3333-4444-555555555555")
    credential = create_token_credential(settings)
    assert isinstance(credential, DefaultAzureCredential)
    assert describe_identity(settings).startswith("DefaultAzureCredential (user-assigned identity 11111111-")
    await credential.close()

    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc")
    credential = create_token_credential(settings)
    assert isinstance(credential, ManagedIdentityCredential)  # on App Service: say "managed identity", not "az login"
    await credential.close()


async def test_one_shared_credential_serves_the_vault_and_the_model_token(
    identity: IdentityEndpoint, vault: KeyVaultStandIn, model_key: str
) -> None:
    settings = make_settings(AZURE_OPENAI_AUTH="keyvault", AZURE_KEY_VAULT_ENDPOINT=vault.url)
    credential = create_token_credential(settings)
    kv = create_upstream_auth(settings, credential, key_vault_options=vault.client_options())
    entra = create_upstream_auth(make_settings(AZURE_OPENAI_AUTH="entra"), credential)
    assert await kv.headers() == {"api-key": model_key}
    await entra.headers()
    await kv.close()
    await entra.close()
    assert await credential.get_token(COGNITIVE_SERVICES_SCOPE)  # the owner still can use it: not closed by the auths
    assert identity.resources == {VAULT: 1, COGNITIVE: 1}
    await credential.close()


# --------------------------------------------------------------------------- log hygiene


@pytest.fixture()
def redacting_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_redact_secrets_filter_removes_every_known_shape(
    redacting_log: tuple[logging.Logger, io.StringIO], issuer: TokenIssuer
) -> None:
    log, stream = redacting_log
    key = new_key()
    jwt, _ = issuer.issue(COGNITIVE)
    opaque = "opaque." + secrets.token_urlsafe(30)
    account_key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    sig = "abcDEF%2B1234567890%3D"
    log.info("calling with headers %s", {"api-key": key, "Content-Type": "application/json"})
    log.info("raw header api-key: %s", key)
    log.info("AZURE_OPENAI_API_KEY=%s", key)
    log.info("Authorization: Bearer %s", opaque)
    log.info("token %s", jwt)
    log.info("GET https://acct.blob.core.windows.net/images/a.png?sv=2024-08-04&se=2026-01-01&sr=b&sp=r&sig=%s done", sig)
    log.info("conn DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=%s;EndpointSuffix=core.windows.net", account_key)
    log.info("conn BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=sv=2024&sig=%s", sig)
    log.info('identity said {"access_token": "%s", "expires_on": "1"}', opaque)
    log.info("x-identity-header: %s", "hdr-" + key)
    log.info("Authorization: SharedKey devstoreaccount1:%s", sig)
    try:
        raise RuntimeError(f"upstream refused {{'api-key': '{key}'}} with token {jwt}")
    except RuntimeError:
        log.exception("failed")
    out = stream.getvalue()
    for value in (key, jwt, opaque, account_key, sig):
        assert value not in out, value
    assert out.count("***") >= 12
    # Readable things stay readable.
    log.info("Read the model key from Key Vault https://v.vault.azure.net (secret 'azure-openai-api-key'), version 1.")
    log.info('WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/t", resource="https://vault.azure.net"')
    tail = stream.getvalue()[len(out) :]
    assert "(secret 'azure-openai-api-key'), version 1." in tail
    assert 'Bearer authorization="https://login.microsoftonline.com/t"' in tail


def test_a_remembered_secret_is_redacted_in_any_shape(redacting_log: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = redacting_log
    key = new_key()
    remember_secret(key)
    log.warning("odd place: value<%s>", key)
    assert key not in stream.getvalue()
    assert redact(f"x{key}y") == "x***y"


def test_install_log_hygiene_filters_root_handlers_once_and_quiets_azure_http() -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    http_logger = logging.getLogger(AZURE_HTTP_LOGGER)
    saved = http_logger.level
    http_logger.setLevel(logging.NOTSET)
    try:
        install_log_hygiene()
        install_log_hygiene()
        assert sum(isinstance(f, RedactSecrets) for f in handler.filters) == 1
        assert http_logger.level == logging.WARNING
        http_logger.setLevel(logging.DEBUG)  # an operator's explicit choice is kept
        install_log_hygiene()
        assert http_logger.level == logging.DEBUG
    finally:
        root.removeHandler(handler)
        for h in root.handlers:
            for f in [f for f in h.filters if isinstance(f, RedactSecrets)]:
                h.removeFilter(f)
        http_logger.setLevel(saved)


def test_reason_strips_query_strings_and_secret_shapes() -> None:
    text = reason(
        AzureError("failed GET https://a.blob.core.windows.net/c/b.png?sv=2024&sig=SECRETSIGNATURE with api-key: k-1234567890")
    )
    assert "SECRETSIGNATURE" not in text and "k-1234567890" not in text
    assert "https://a.blob.core.windows.net/c/b.png" in text
    assert len(reason(RuntimeError("x" * 1000))) == 300


# --------------------------------------------------------------------------- identity-based storage on Azurite


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ca = trustme.CA()
    folder = tmp_path_factory.mktemp("azurite-tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    return files


@pytest.fixture(scope="module")
def oauth_azurite(tls_files: dict[str, Path]) -> Iterator[Azurite]:
    instance = start_azurite(extra_args=["--oauth", "basic", "--cert", str(tls_files["cert"]), "--key", str(tls_files["key"])])
    yield instance
    instance.stop()


async def test_storage_with_the_identity_on_azurite_oauth_and_user_delegation_sas(
    oauth_azurite: Azurite, tls_files: dict[str, Path], identity: IdentityEndpoint
) -> None:
    """No account key anywhere: blob and queue with the managed identity's token, links by user delegation SAS."""
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas
    from azure.storage.blob.aio import BlobServiceClient
    from azure.storage.queue.aio import QueueServiceClient

    blob_url = f"https://127.0.0.1:{oauth_azurite.blob_port}/{ACCOUNT}"
    queue_url = f"https://127.0.0.1:{oauth_azurite.queue_port}/{ACCOUNT}"
    settings = make_settings(
        AzureWebJobsStorage="", AzureWebJobsStorage__blobServiceUri=blob_url, AzureWebJobsStorage__queueServiceUri=queue_url
    )
    assert settings.storage.uses_identity
    credential = create_token_credential(settings)
    verify = str(tls_files["ca"])
    trust = ssl.create_default_context(cafile=verify)
    try:
        async with BlobServiceClient(settings.storage.blob_url, credential=credential, connection_verify=verify) as blobs:
            container = blobs.get_container_client("identity-images")
            if not await container.exists():
                await container.create_container()
            await container.upload_blob("a/image.png", b"\x89PNG\r\n\x1a\nfake", overwrite=True)
            now = dt.datetime.now(dt.UTC)
            delegation_key = await blobs.get_user_delegation_key(now - dt.timedelta(minutes=5), now + dt.timedelta(hours=1))
            assert delegation_key.signed_oid == identity.issuer.object_id
            assert delegation_key.signed_tid == identity.issuer.tenant_id
            sas = generate_blob_sas(
                ACCOUNT,
                "identity-images",
                "a/image.png",
                user_delegation_key=delegation_key,
                permission=BlobSasPermissions(read=True),
                expiry=now + dt.timedelta(hours=1),
            )
        link = f"{blob_url}/identity-images/a/image.png?{sas}"
        assert "skoid=" in link  # a user delegation SAS, not an account-key one
        with httpx.Client(verify=trust) as http:
            assert http.get(link).content.startswith(b"\x89PNG")
            tampered = link.replace("sig=", "sig=AAAA")
            assert http.get(tampered).status_code == 403
            assert http.get(f"{blob_url}/identity-images/a/image.png").status_code in (401, 403, 404)
        async with QueueServiceClient(settings.storage.queue_url, credential=credential, connection_verify=verify) as queues:
            queue = queues.get_queue_client("identity-jobs")
            try:
                await queue.create_queue()
            except AzureError:
                pass  # exists from an earlier run of this module
            await queue.send_message('{"prompt": "x"}')
            assert [m.content async for m in queue.receive_messages()] == ['{"prompt": "x"}']
        assert identity.resources == {"https://storage.azure.com": 1}  # one token for blob and queue
    finally:
        await credential.close()


# --------------------------------------------------------------------------- end to end through the API


DEPLOYMENT_PATH = "/openai/deployments/{}/images/generations?api-version=2025-04-01-preview"


@pytest.fixture()
def own_simulator() -> Iterator[tuple[ServerThread, Any]]:
    """A simulator of our own (the shared one's auth settings belong to other tests); yields (server, Simulator)."""
    from local.simulator import SimulatorConfig, create_simulator

    app = create_simulator(SimulatorConfig(require_auth=True, prewarm=False))
    server = serve_in_thread(app)
    yield server, app.state.sim
    server.stop()


class ApiServers:
    """Starts the app over real HTTP with settings overrides; stop() returns once every server thread has ended."""

    def __init__(self, azurite: Azurite, simulator_url: str) -> None:
        self.azurite = azurite
        self.simulator_url = simulator_url
        self.started: list[tuple[ServerThread, httpx.Client]] = []

    def __call__(self, *, key_vault_options: dict[str, Any] | None = None, **env: str) -> httpx.Client:
        from shared.api import create_app
        from shared.runtime import Runtime

        settings = Settings.from_env(
            {
                "AZURE_OPENAI_ENDPOINT": self.simulator_url,
                "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1-mini",
                "IMAGES_DEPLOYMENTS": "gpt-image-1-mini=gpt-image-1-mini,dall-e-3=dall-e-3",
                "AzureWebJobsStorage": self.azurite.connection_string,
                "IMAGES_ALLOW_HTTP_UPSTREAM": "true",
                "IMAGES_RETRY_BUDGET_SECONDS": "5",
                **env,
            }
        )
        server = serve_in_thread(create_app(Runtime(settings, key_vault_options=key_vault_options)))
        client = httpx.Client(base_url=server.url, timeout=60)
        self.started.append((server, client))
        return client

    def stop(self) -> None:
        while self.started:
            server, client = self.started.pop()
            client.close()
            server.stop()


@pytest.fixture()
def start_api_with(azurite: Azurite, own_simulator: tuple[ServerThread, Any]) -> Iterator[ApiServers]:
    servers = ApiServers(azurite, own_simulator[0].url)
    yield servers
    servers.stop()


@pytest.fixture()
def vault_trust(vault: KeyVaultStandIn) -> dict[str, Any]:
    """The app builds its own SecretClient: these options make it trust the stand-in (passed to the Runtime)."""
    return {**vault.client_options(), **FAST}


def generate(client: httpx.Client, deployment: str = "gpt-image-1-mini", **body: Any) -> httpx.Response:
    return client.post(DEPLOYMENT_PATH.format(deployment), json={"prompt": "a lighthouse", "quality": "low", **body})


def test_e2e_rotation_next_request_succeeds_after_one_refresh(
    start_api_with: ApiServers,
    own_simulator: tuple[ServerThread, Any],
    vault: KeyVaultStandIn,
    model_key: str,
    vault_trust: dict[str, Any],
) -> None:
    sim = own_simulator[1]
    sim.update_config(api_keys=[model_key])
    client = start_api_with(AZURE_OPENAI_AUTH="keyvault", AZURE_KEY_VAULT_ENDPOINT=vault.url, key_vault_options=vault_trust)
    assert generate(client).status_code == 200
    assert vault.reads == {SECRET_NAME: 1}

    rotated = new_key()
    vault.set_secret(SECRET_NAME, rotated)
    sim.update_config(api_keys=[rotated])  # the model service now refuses the old key
    response = generate(client)
    assert response.status_code == 200, response.text
    stats = sim.snapshot()
    assert stats["unauthorized"] == 1  # one 401, one refresh, one successful retry
    assert stats["succeeded"] == 2
    assert vault.reads == {SECRET_NAME: 2}
    assert_clean(response.text, model_key, rotated)


def test_e2e_vault_down_gives_callers_a_503_naming_the_vault(
    start_api_with: ApiServers, vault: KeyVaultStandIn, model_key: str, vault_trust: dict[str, Any]
) -> None:
    vault.status = 503
    client = start_api_with(AZURE_OPENAI_AUTH="keyvault", AZURE_KEY_VAULT_ENDPOINT=vault.url, key_vault_options=vault_trust)
    response = generate(client)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "CredentialUnavailable"
    assert vault.url in error["message"]
    assert_clean(response.text, model_key)


def test_e2e_entra_mode_the_simulator_checks_the_bearer_token(
    start_api_with: ApiServers, own_simulator: tuple[ServerThread, Any], identity: IdentityEndpoint
) -> None:
    server, sim = own_simulator
    sim.update_config(bearer_validator=identity.issuer.validator(COGNITIVE))
    client = start_api_with(AZURE_OPENAI_AUTH="entra")
    responses = [generate(client) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200], responses[-1].text
    assert identity.resources == {COGNITIVE: 1}  # one token for all three calls
    # The check is real: a token for another audience is refused by the simulator.
    wrong, _ = identity.issuer.issue(VAULT)
    refused = httpx.post(
        server.url + DEPLOYMENT_PATH.format("gpt-image-1-mini"),
        json={"prompt": "x"},
        headers={"Authorization": f"Bearer {wrong}"},
    )
    assert refused.status_code == 401


def test_e2e_no_key_token_or_signature_in_any_log_line_of_a_full_run(
    start_api_with: ApiServers,
    own_simulator: tuple[ServerThread, Any],
    identity: IdentityEndpoint,
    vault: KeyVaultStandIn,
    model_key: str,
    vault_trust: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Everything at DEBUG, azure SDK HTTP logging included, with no redaction filter: the code itself must not log secrets."""
    sim = own_simulator[1]
    caplog.set_level(logging.DEBUG)
    for name in ("azure", AZURE_HTTP_LOGGER, "shared", "local", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    sim.update_config(api_keys=[model_key], bearer_validator=identity.issuer.validator(COGNITIVE))
    links: list[str] = []

    keyvault_client = start_api_with(AZURE_OPENAI_AUTH="keyvault", AZURE_KEY_VAULT_ENDPOINT=vault.url, key_vault_options=vault_trust)
    first = generate(keyvault_client)
    assert first.status_code == 200, first.text
    links += [item["url"] for item in first.json()["data"]]
    rotated = new_key()
    vault.set_secret(SECRET_NAME, rotated)
    sim.update_config(api_keys=[rotated])
    second = generate(keyvault_client, deployment="dall-e-3", quality="standard")  # url result: the app downloads it
    assert second.status_code == 200, second.text
    links += [item["url"] for item in second.json()["data"]]

    entra_client = start_api_with(AZURE_OPENAI_AUTH="entra")
    third = generate(entra_client)
    assert third.status_code == 200, third.text
    links += [item["url"] for item in third.json()["data"]]
    start_api_with.stop()  # every server thread has ended: its last lines are in the capture

    lines = [caplog.handler.format(r) for r in caplog.records]
    text = "\n".join(lines)
    assert "Read the model key from Key Vault" in text  # the capture did see the app's own lines
    assert "refreshing the credential once" in text
    signatures = [parse_qs(urlsplit(link).query)["sig"][0] for link in links]
    tokens = list(identity.issuer.recent_tokens)
    assert tokens and signatures
    for line in lines:
        for value in (model_key, rotated, identity.header_secret, *tokens, *signatures):
            assert value not in line, f"secret in log line: {redact(line)}"
        assert not JWT.search(line)
        assert not re.search(r"(?i)\bsig=(?!\*\*\*|REDACTED)[^&\s\"']+", line), redact(line)


def test_e2e_identity_storage_archives_and_links_with_user_delegation_sas(
    oauth_azurite: Azurite, tls_files: dict[str, Path], identity: IdentityEndpoint, own_simulator: tuple[ServerThread, Any]
) -> None:
    """The app with no storage key at all: archive over OAuth, links by user delegation SAS, jobs accepted."""
    from shared.api import create_app
    from shared.runtime import Runtime

    sim = own_simulator[1]
    sim.update_config(api_keys=["model-key-for-this-test"])
    blob_url = f"https://127.0.0.1:{oauth_azurite.blob_port}/{ACCOUNT}"
    queue_url = f"https://127.0.0.1:{oauth_azurite.queue_port}/{ACCOUNT}"
    settings = Settings.from_env(
        {
            "AZURE_OPENAI_ENDPOINT": own_simulator[0].url,
            "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1-mini",
            "AZURE_OPENAI_API_KEY": "model-key-for-this-test",
            "AzureWebJobsStorage__blobServiceUri": blob_url,
            "AzureWebJobsStorage__queueServiceUri": queue_url,
            "AzureWebJobsStorage__credential": "managedidentity",
            "IMAGES_ALLOW_HTTP_UPSTREAM": "true",
            "IMAGES_CONTAINER": "identity-archive",
            "IMAGES_JOBS_CONTAINER": "identity-jobs",
            "IMAGES_QUEUE": "identity-queue",
        }
    )
    assert settings.storage.uses_identity
    server = serve_in_thread(create_app(Runtime(settings, storage_options={"connection_verify": str(tls_files["ca"])})))
    trust = ssl.create_default_context(cafile=str(tls_files["ca"]))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            response = generate(client)
            assert response.status_code == 200, response.text
            link = response.json()["data"][0]["url"]
            assert link.startswith(blob_url) and "skoid=" in link  # user delegation, signed by the identity
            with httpx.Client(verify=trust) as http:
                assert http.get(link).content.startswith(b"\x89PNG")
            stable = client.get(f"/images/{link.split('/identity-archive/', 1)[1].split('?')[0]}", follow_redirects=False)
            assert stable.status_code == 302 and "skoid=" in stable.headers["location"]
            accepted = client.post(DEPLOYMENT_PATH.format("gpt-image-1-mini").replace("/generations", "/generations:submit"), json={"prompt": "x"})
            assert accepted.status_code == 202, accepted.text
    finally:
        server.stop()
    assert "https://storage.azure.com" in identity.resources
