"""Every setting the app reads, in one place, typed and checked once at start.

The names follow what Azure OpenAI SDKs, azd templates and the Functions host
already use (``AZURE_OPENAI_*``, ``AzureWebJobsStorage``); the app's own knobs
start with ``IMAGES_``. ``SETTINGS`` is the catalogue: the README table and the
infrastructure consistency test are both checked against it, so the code, the
docs and Bicep/Terraform cannot drift apart.

Nothing here touches the network or a credential: reading settings is pure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from shared.models import FAMILIES, family_for_name

ApiStyle = Literal["deployment", "v1", "openai"]
AuthMode = Literal["key", "keyvault", "entra"]

MAX_LINK_TTL_SECONDS = 7 * 24 * 3600  # user delegation keys and SAS links: 7 days at most
DEFAULT_API_VERSION = "2025-04-01-preview"  # gpt-image needs a preview version on the deployment path


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Setting:
    """One entry of the catalogue: name, default (None: no default), what it does."""

    name: str
    default: str | None
    doc: str
    # Where infrastructure sets it: "app" (every deployment sets it), "optional"
    # (set only for some choices, e.g. the key way), "local" (never in Azure).
    deploy: Literal["app", "optional", "local"] = "app"


SETTINGS: tuple[Setting, ...] = (
    Setting("AZURE_OPENAI_ENDPOINT", None, "Model endpoint, e.g. https://NAME.openai.azure.com (or https://api.openai.com)."),
    Setting("AZURE_OPENAI_DEPLOYMENT", "", "Default deployment; its family is inferred from its name when it is named like one (e.g. gpt-image-1-mini)."),
    Setting("AZURE_OPENAI_API_VERSION", DEFAULT_API_VERSION, "api-version sent on the deployment-scoped path."),
    Setting("AZURE_OPENAI_API_KEY", "", "Model key (the key way; may be a Key Vault reference resolved by the platform).", "optional"),
    Setting("AZURE_OPENAI_AUTH", "", "key, keyvault or entra. Empty: key if AZURE_OPENAI_API_KEY is set, keyvault if AZURE_KEY_VAULT_ENDPOINT is set, else entra."),
    Setting("AZURE_KEY_VAULT_ENDPOINT", "", "Vault URL holding the model key (the keyvault way).", "optional"),
    Setting("AZURE_OPENAI_API_KEY_SECRET_NAME", "azure-openai-api-key", "Name of the secret holding the model key (the keyvault way).", "optional"),
    Setting("AZURE_CLIENT_ID", "", "Client id of the user-assigned managed identity (empty: system identity or developer login)."),
    Setting("AzureWebJobsStorage", "", "Storage connection string (local, Azurite). In Azure use the identity-based AzureWebJobsStorage__* form.", "local"),
    Setting("AzureWebJobsStorage__blobServiceUri", "", "Identity-based storage: blob endpoint."),
    Setting("AzureWebJobsStorage__queueServiceUri", "", "Identity-based storage: queue endpoint."),
    Setting("AzureWebJobsStorage__accountName", "", "Identity-based storage: account name, standing for both default endpoints."),
    Setting("AzureWebJobsStorage__credential", "", "Identity-based storage: 'managedidentity'."),
    Setting("AzureWebJobsStorage__clientId", "", "Identity-based storage: client id of the user-assigned identity."),
    Setting("IMAGES_DEPLOYMENTS", "", "Allowed deployments and their model family: 'name=family,...' (family one of " + ", ".join(sorted(FAMILIES)) + ")."),
    Setting("IMAGES_API_STYLE", "", "deployment (/openai/deployments/{d}/...), v1 (/openai/v1/...) or openai (api.openai.com). Empty: openai for api.openai.com, else deployment."),
    Setting("IMAGES_CONTAINER", "images", "Private container for archived images and their JSON records."),
    Setting("IMAGES_JOBS_CONTAINER", "image-jobs", "Private container for job records of background generation."),
    Setting("IMAGES_QUEUE", "image-jobs", "Queue the background trigger reads (its poison queue is <name>-poison)."),
    Setting("IMAGES_RESULTS_QUEUE", "", "Optional queue that receives {id, status, result|error} for each finished job. Empty: off."),
    Setting("IMAGES_LINK_TTL_SECONDS", str(MAX_LINK_TTL_SECONDS), "Lifetime of the read-only SAS links returned in data[].url (at most 7 days)."),
    Setting("IMAGES_UPSTREAM_TIMEOUT_SECONDS", "600", "Timeout of one upstream generation for background jobs (image models take minutes)."),
    Setting("IMAGES_SYNC_TIMEOUT_SECONDS", "220", "Timeout of one upstream generation for synchronous HTTP calls (Azure's front end cuts at 230 s)."),
    Setting("IMAGES_RETRY_BUDGET_SECONDS", "90", "Total time a synchronous call may spend waiting on 429 Retry-After and 5xx backoff."),
    Setting("IMAGES_MAX_RETRIES", "3", "Retries of a throttled, 5xx or unconnected upstream call within the budget."),
    Setting("IMAGES_MAX_BODY_BYTES", "262144", "Largest accepted request body."),
    Setting("IMAGES_MAX_IMAGE_BYTES", "52428800", "Largest image accepted from upstream (base64 decoded or downloaded)."),
    Setting("IMAGES_MAX_CONCURRENT_UPSTREAM", "32", "Per-instance cap on upstream calls in flight (HTTP and queue together; about 2x the image size of memory each)."),
    Setting("IMAGES_ALLOW_HTTP_UPSTREAM", "false", "Allow plain-http endpoints and image URLs (local simulator only).", "local"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def setting_names() -> list[str]:
    """Names of every setting the app reads."""
    return [s.name for s in SETTINGS]


@dataclass(frozen=True)
class StorageSettings:
    """Where Blob and Queue storage live and how to authenticate to them."""

    connection_string: str = ""
    blob_url: str = ""
    queue_url: str = ""
    client_id: str = ""

    @property
    def uses_identity(self) -> bool:
        return not self.connection_string


@dataclass(frozen=True)
class Settings:
    """The app's configuration, read from the environment by :meth:`from_env`."""

    endpoint: str
    api_style: ApiStyle
    api_version: str
    default_deployment: str
    deployments: Mapping[str, str]  # deployment name -> model family
    auth_mode: AuthMode
    api_key: str
    key_vault_url: str
    key_secret_name: str
    client_id: str
    storage: StorageSettings
    images_container: str
    jobs_container: str
    queue_name: str
    results_queue: str
    link_ttl_seconds: int
    upstream_timeout_seconds: float
    sync_timeout_seconds: float
    retry_budget_seconds: float
    max_retries: int
    max_body_bytes: int
    max_image_bytes: int
    max_concurrent_upstream: int
    allow_http_upstream: bool

    @property
    def poison_queue_name(self) -> str:
        return f"{self.queue_name}-poison"

    def family_of(self, deployment: str) -> str | None:
        """Model family of an allowed deployment, or None if it is not allowed."""
        return self.deployments.get(deployment)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting; raise SettingsError naming the bad one."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            value = env.get(name)
            if value is None or value.strip() == "":
                default = _BY_NAME[name].default
                return "" if default is None else default
            return value.strip()

        def integer(name: str, low: int, high: int | None = None) -> int:
            raw = get(name)
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
            if value < low or (high is not None and value > high):
                bound = f"between {low} and {high}" if high is not None else f"at least {low}"
                raise SettingsError(f"{name} must be {bound}, got {value}")
            return value

        def number(name: str, low: float) -> float:
            raw = get(name)
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
            if value < low:
                raise SettingsError(f"{name} must be at least {low}, got {value}")
            return value

        def boolean(name: str) -> bool:
            raw = get(name).lower()
            if raw in ("1", "true", "yes", "on"):
                return True
            if raw in ("0", "false", "no", "off", ""):
                return False
            raise SettingsError(f"{name} must be true or false, got {raw!r}")

        allow_http = boolean("IMAGES_ALLOW_HTTP_UPSTREAM")
        endpoint = get("AZURE_OPENAI_ENDPOINT").rstrip("/")
        if not endpoint:
            raise SettingsError("AZURE_OPENAI_ENDPOINT is required (e.g. https://NAME.openai.azure.com)")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise SettingsError(f"AZURE_OPENAI_ENDPOINT must be an https URL, got {endpoint!r}")
        if parts.scheme == "http" and not allow_http:
            raise SettingsError("AZURE_OPENAI_ENDPOINT must use https (set IMAGES_ALLOW_HTTP_UPSTREAM=true only for the local simulator)")

        style = get("IMAGES_API_STYLE").lower()
        if not style:
            style = "openai" if parts.hostname == "api.openai.com" else "deployment"
        if style not in ("deployment", "v1", "openai"):
            raise SettingsError(f"IMAGES_API_STYLE must be deployment, v1 or openai, got {style!r}")

        deployments: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in get("IMAGES_DEPLOYMENTS").split(","))):
            name, sep, family = (x.strip() for x in item.partition("="))
            if not name:
                raise SettingsError(f"IMAGES_DEPLOYMENTS has an entry without a name: {item!r}")
            family = family if sep else (family_for_name(name) or "")
            if family not in FAMILIES:
                raise SettingsError(
                    f"IMAGES_DEPLOYMENTS: deployment {name!r} needs a model family "
                    f"(name={'|'.join(sorted(FAMILIES))}), got {family or 'none'!r}"
                )
            deployments[name] = family
        default_deployment = get("AZURE_OPENAI_DEPLOYMENT")
        if default_deployment and default_deployment not in deployments:
            inferred = family_for_name(default_deployment)
            if inferred is None:
                raise SettingsError(
                    f"AZURE_OPENAI_DEPLOYMENT {default_deployment!r} is not named like a model family; "
                    "give its family in IMAGES_DEPLOYMENTS (name=family)"
                )
            deployments[default_deployment] = inferred
        if not deployments:
            raise SettingsError("Set AZURE_OPENAI_DEPLOYMENT or IMAGES_DEPLOYMENTS: no deployment is allowed")

        api_key = get("AZURE_OPENAI_API_KEY")
        vault = get("AZURE_KEY_VAULT_ENDPOINT").rstrip("/")
        auth = get("AZURE_OPENAI_AUTH").lower()
        if not auth:
            auth = "key" if api_key else ("keyvault" if vault else "entra")
        if auth not in ("key", "keyvault", "entra"):
            raise SettingsError(f"AZURE_OPENAI_AUTH must be key, keyvault or entra, got {auth!r}")
        if auth == "key" and not api_key:
            raise SettingsError("AZURE_OPENAI_API_KEY is required when AZURE_OPENAI_AUTH=key")
        if auth == "keyvault":
            if not vault:
                raise SettingsError("AZURE_KEY_VAULT_ENDPOINT is required when AZURE_OPENAI_AUTH=keyvault")
            if urlsplit(vault).scheme != "https":
                raise SettingsError("AZURE_KEY_VAULT_ENDPOINT must be an https URL")
        if style == "openai" and auth == "entra":
            raise SettingsError("IMAGES_API_STYLE=openai needs a key (AZURE_OPENAI_API_KEY or the keyvault way)")

        storage = StorageSettings(
            connection_string=get("AzureWebJobsStorage"),
            blob_url=get("AzureWebJobsStorage__blobServiceUri").rstrip("/"),
            queue_url=get("AzureWebJobsStorage__queueServiceUri").rstrip("/"),
            client_id=get("AzureWebJobsStorage__clientId") or get("AZURE_CLIENT_ID"),
        )
        account = get("AzureWebJobsStorage__accountName")
        if not storage.connection_string and account:
            # The host's shorthand: an account name stands for both default endpoints.
            storage = StorageSettings(
                blob_url=storage.blob_url or f"https://{account}.blob.core.windows.net",
                queue_url=storage.queue_url or f"https://{account}.queue.core.windows.net",
                client_id=storage.client_id,
            )
        if not storage.connection_string and not (storage.blob_url and storage.queue_url):
            raise SettingsError(
                "AzureWebJobsStorage is required: a connection string, or the identity-based "
                "AzureWebJobsStorage__blobServiceUri and AzureWebJobsStorage__queueServiceUri"
            )

        queue_name = get("IMAGES_QUEUE")
        for name in ("IMAGES_CONTAINER", "IMAGES_JOBS_CONTAINER", "IMAGES_QUEUE", "IMAGES_RESULTS_QUEUE"):
            _check_storage_name(name, get(name), optional=name == "IMAGES_RESULTS_QUEUE")

        return cls(
            endpoint=endpoint,
            api_style=style,  # type: ignore[arg-type]
            api_version=get("AZURE_OPENAI_API_VERSION"),
            default_deployment=default_deployment,
            deployments=deployments,
            auth_mode=auth,  # type: ignore[arg-type]
            api_key=api_key,
            key_vault_url=vault,
            key_secret_name=get("AZURE_OPENAI_API_KEY_SECRET_NAME"),
            client_id=get("AZURE_CLIENT_ID"),
            storage=storage,
            images_container=get("IMAGES_CONTAINER"),
            jobs_container=get("IMAGES_JOBS_CONTAINER"),
            queue_name=queue_name,
            results_queue=get("IMAGES_RESULTS_QUEUE"),
            link_ttl_seconds=integer("IMAGES_LINK_TTL_SECONDS", 60, MAX_LINK_TTL_SECONDS),
            upstream_timeout_seconds=number("IMAGES_UPSTREAM_TIMEOUT_SECONDS", 1),
            sync_timeout_seconds=number("IMAGES_SYNC_TIMEOUT_SECONDS", 1),
            retry_budget_seconds=number("IMAGES_RETRY_BUDGET_SECONDS", 0),
            max_retries=integer("IMAGES_MAX_RETRIES", 0, 20),
            max_body_bytes=integer("IMAGES_MAX_BODY_BYTES", 1024),
            max_image_bytes=integer("IMAGES_MAX_IMAGE_BYTES", 1024),
            max_concurrent_upstream=integer("IMAGES_MAX_CONCURRENT_UPSTREAM", 1, 1000),
            allow_http_upstream=allow_http,
        )


def _check_storage_name(setting: str, value: str, optional: bool = False) -> None:
    """Containers and queues: 3-63 lowercase letters, digits and single hyphens."""
    if optional and not value:
        return
    ok = (
        3 <= len(value) <= 63
        and value[0].isalnum()
        and value[-1].isalnum()
        and "--" not in value
        and all(c.islower() or c.isdigit() or c == "-" for c in value)
    )
    if not ok:
        raise SettingsError(f"{setting} must be a storage name (3-63 lowercase letters, digits, single hyphens), got {value!r}")
