"""Every setting the app reads, declared once, typed and checked once at start.

The names follow what Azure OpenAI SDKs, azd templates and the Functions host
already use (``AZURE_OPENAI_*``, ``AzureWebJobsStorage``); the app's own knobs
start with ``IMAGES_``.

How it is built:

- :class:`Settings` is a frozen pydantic-settings model, one field per setting: its
  environment name (the alias), default, bounds, description, and where infrastructure
  sets it (``json_schema_extra={"deploy": "app" | "optional" | "yours" | "local" | "platform"}``:
  "yours" is an Azure setting the templates leave out on purpose, for the operator to set when needed).
- :meth:`Settings.from_env` reads those names from the environment, or from a given
  mapping and nothing else (no ``os.environ`` behind its back, no ``.env`` file).
  A blank value means unset, so the default applies.
- Field validators check one value; one model validator, ``_resolve``, applies the rules
  between settings and works out what they leave implicit (API style, auth mode, the
  deployments map, where storage is), exposed as read-only properties.
- pydantic's errors become :class:`SettingsError`, naming the setting by its environment name.
- ``SETTINGS`` (the catalogue the README table and the infrastructure tests read) is
  derived from the fields, so code, docs and Bicep/Terraform cannot drift apart.

Nothing here touches the network or a credential: reading settings is pure
(host.json, read once, is part of the deployed package).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal, cast, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticUndefined
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.callers.limits import CallerLimits, LimitsConfigError, parse_limits
from shared.host import host_max_dequeue_count
from shared.models import FAMILIES
from shared.pool.config import ENVIRON, Backend, PoolConfigError, parse_backends
from shared.settings_rules import ApiStyle, AuthMode, SettingsError, base_from_hostname, caller_auth, deployments, model_auth

__all__ = ["SETTINGS", "ApiStyle", "AuthMode", "Setting", "Settings", "SettingsError", "StorageSettings", "setting_names"]

Deploy = Literal["app", "optional", "yours", "local", "platform"]

MAX_LINK_TTL_SECONDS = 7 * 24 * 3600  # user delegation keys and SAS links: 7 days at most
DEFAULT_API_VERSION = "2025-04-01-preview"  # gpt-image needs a preview version on the deployment path


def _storage_name(value: str) -> str:
    """Containers and queues: 3-63 lowercase letters, digits and single hyphens."""
    ok = (
        3 <= len(value) <= 63
        and value[0].isalnum()
        and value[-1].isalnum()
        and "--" not in value
        and value.isascii()
        and all(c.islower() or c.isdigit() or c == "-" for c in value)
    )
    if not ok:
        raise ValueError(f"must be a storage name (3-63 lowercase letters, digits, single hyphens), got {value!r}")
    return value


StorageName = Annotated[str, AfterValidator(_storage_name)]
OptionalStorageName = Annotated[str, AfterValidator(lambda value: value and _storage_name(value))]  # empty: off


def _setting(
    env: str, default: Any, doc: str, deploy: Deploy = "app", *, ge: float | None = None, le: float | None = None, secret: bool = False
) -> Any:
    """One setting: its environment name, default (``...``: required), description, where it is set, bounds."""
    # A secret stays out of repr(), so a logged Settings object never carries it.
    return Field(default, alias=env, description=doc, json_schema_extra={"deploy": deploy}, ge=ge, le=le, repr=not secret)


@dataclass(frozen=True)
class StorageSettings:
    """Where Blob and Queue storage live and how to authenticate to them."""

    connection_string: str = dataclasses.field(default="", repr=False)  # may hold an account key
    blob_url: str = ""
    queue_url: str = ""
    client_id: str = ""

    @property
    def uses_identity(self) -> bool:
        """True when storage is reached with an Entra identity rather than a connection string."""
        return not self.connection_string


class Settings(BaseSettings):
    """The app's configuration, read from the environment by :meth:`from_env`.

    Frozen; ``settings.model_copy(update={...})`` gives a changed copy (by field
    name, without re-running the checks, as ``dataclasses.replace`` did).
    """

    model_config = SettingsConfigDict(frozen=True)

    endpoint: str = _setting("AZURE_OPENAI_ENDPOINT", ..., "Model endpoint, e.g. https://NAME.openai.azure.com (or https://api.openai.com).")
    default_deployment: str = _setting("AZURE_OPENAI_DEPLOYMENT", "", "Default deployment; its family is inferred from its name when it is named like one (e.g. gpt-image-2).")
    api_version: str = _setting("AZURE_OPENAI_API_VERSION", DEFAULT_API_VERSION, "api-version sent on the deployment-scoped path.")
    api_key: str = _setting("AZURE_OPENAI_API_KEY", "", "Model key (the key way; may be a Key Vault reference resolved by the platform).", "optional", secret=True)
    auth_setting: Literal["", "key", "keyvault", "entra"] = _setting("AZURE_OPENAI_AUTH", "", "key, keyvault or entra. Empty: key if AZURE_OPENAI_API_KEY is set, keyvault if AZURE_KEY_VAULT_ENDPOINT is set, else entra.")
    key_vault_url: str = _setting("AZURE_KEY_VAULT_ENDPOINT", "", "Vault URL holding the model key (the keyvault way).", "optional")
    key_secret_name: str = _setting("AZURE_OPENAI_API_KEY_SECRET_NAME", "azure-openai-api-key", "Name of the secret holding the model key (the keyvault way).", "optional")
    client_id: str = _setting("AZURE_CLIENT_ID", "", "Client id of the user-assigned managed identity (empty: system identity or developer login).")
    storage_connection_string: str = _setting("AzureWebJobsStorage", "", "Storage connection string (local, Azurite). In Azure use the identity-based AzureWebJobsStorage__* form.", "local", secret=True)
    storage_blob_uri: str = _setting("AzureWebJobsStorage__blobServiceUri", "", "Identity-based storage: blob endpoint.")
    storage_queue_uri: str = _setting("AzureWebJobsStorage__queueServiceUri", "", "Identity-based storage: queue endpoint.")
    storage_account_name: str = _setting("AzureWebJobsStorage__accountName", "", "Identity-based storage: account name, standing for both default endpoints (the templates set the two endpoints instead).", "yours")
    storage_credential: str = _setting("AzureWebJobsStorage__credential", "", "Identity-based storage: 'managedidentity'.")
    storage_client_id: str = _setting("AzureWebJobsStorage__clientId", "", "Identity-based storage: client id of the user-assigned identity.")
    deployments_setting: str = _setting("IMAGES_DEPLOYMENTS", "", "Allowed deployments and their model family: 'name=family,...' (family one of " + ", ".join(sorted(FAMILIES)) + ").")
    api_style_setting: Literal["", "deployment", "v1", "openai"] = _setting("IMAGES_API_STYLE", "", "deployment (/openai/deployments/{d}/...), v1 (/openai/v1/...) or openai (api.openai.com). Empty: openai for api.openai.com, else deployment.")
    images_container: StorageName = _setting("IMAGES_CONTAINER", "images", "Private container for archived images and their JSON records.")
    jobs_container: StorageName = _setting("IMAGES_JOBS_CONTAINER", "image-jobs", "Private container for job records of background generation.")
    queue_name: StorageName = _setting("IMAGES_QUEUE", "image-jobs", "Queue the background trigger reads (its poison queue is <name>-poison).")
    results_queue: OptionalStorageName = _setting("IMAGES_RESULTS_QUEUE", "", "Optional queue that receives {id, status, result|error} for each finished job: every job the key way, the queue's own jobs the entra way (docs/jobs.md). Empty: off.")
    retention_days: int = _setting("IMAGES_RETENTION_DAYS", 0, "Days archived images, records and job records are kept before the templates' lifecycle rule deletes them (0: kept); each record says when.", ge=0, le=36500)
    archive_partial_images: bool = _setting("IMAGES_ARCHIVE_PARTIAL_IMAGES", False, "Archive a stream's partial images too (partial-<n>.<ext> beside its final image, named in its record, the caller's like it). Off: the final image only.")
    link_ttl_seconds: int = _setting("IMAGES_LINK_TTL_SECONDS", MAX_LINK_TTL_SECONDS, "Lifetime of the read-only SAS links returned in data[].url (at most 7 days).", ge=60, le=MAX_LINK_TTL_SECONDS)
    upstream_timeout_seconds: float = _setting("IMAGES_UPSTREAM_TIMEOUT_SECONDS", 600.0, "One deadline for a background job's upstream call, every wait, attempt and read included (image models take minutes); never later than host.json's functionTimeout less 60 s for the archive.", ge=1)
    sync_timeout_seconds: float = _setting("IMAGES_SYNC_TIMEOUT_SECONDS", 220.0, "One deadline for a synchronous call from its arrival, every wait, attempt and read included (Azure's front end cuts at 230 s; at most 220, leaving time to archive and answer).", ge=1, le=220)
    retry_budget_seconds: float = _setting("IMAGES_RETRY_BUDGET_SECONDS", 90.0, "Time a synchronous call may spend waiting (429 Retry-After, 503 backoff, a pool's booked moment), within its deadline.", ge=0)
    max_retries: int = _setting("IMAGES_MAX_RETRIES", 3, "Retries of a throttled (429), unavailable (503) or unconnected upstream call within the budget.", ge=0, le=20)
    max_body_bytes: int = _setting("IMAGES_MAX_BODY_BYTES", 262144, "Largest accepted request body.", ge=1024)
    max_image_bytes: int = _setting("IMAGES_MAX_IMAGE_BYTES", 52428800, "Largest image accepted from upstream (base64 decoded or downloaded).", ge=1024)
    max_edit_file_bytes: int = _setting("IMAGES_MAX_EDIT_FILE_BYTES", 52428800, "Largest input image or mask of an edit (Azure takes each under 50 MB); refused with 413 while it streams in.", ge=1024)
    max_edit_total_bytes: int = _setting("IMAGES_MAX_EDIT_TOTAL_BYTES", 94371840, "Largest multipart edit request, all images together (below the Functions host's ~100 MB body limit); refused with 413 while it streams in.", ge=1024)
    max_concurrent_upstream: int = _setting("IMAGES_MAX_CONCURRENT_UPSTREAM", 32, "Per-instance cap on upstream calls in flight (HTTP and queue together; about 2x the image size of memory each).", ge=1, le=1000)
    allow_http_upstream: bool = _setting("IMAGES_ALLOW_HTTP_UPSTREAM", False, "Allow plain-http endpoints and image URLs (local simulator only).", "local")
    backends_setting: str = _setting("IMAGES_BACKENDS", "", "Deployment pools as JSON: {logical name: [{endpoint, deployment, rpm, priority, ...}]} (docs/pools.md). Empty: one backend, the settings above.")
    public_base_url: str = _setting("IMAGES_PUBLIC_BASE_URL", "", "Base of the URLs the app hands out (Operation-Location), e.g. https://images.example.com behind a custom domain or gateway. Empty: https://{WEBSITE_HOSTNAME}, which Azure sets; locally the address the server listens on. Never the request's Host header.", "yours")
    telemetry_prompts: bool = _setting("IMAGES_TELEMETRY_PROMPTS", False, "Put prompts and revised prompts into spans. Off: telemetry carries no prompt text.")
    telemetry_exporter: str = _setting("IMAGES_TELEMETRY_EXPORTER", "none", "Where spans and metrics are written locally: console, file:<path> (JSON lines) or none. In Azure the Functions worker sends them to Application Insights.", "local")
    caller_auth: Literal["key", "entra"] = _setting("IMAGES_CALLER_AUTH", "key", "How callers are known (docs/callers.md): key (function keys, one caller) or entra (App Service authentication with Entra ID: each calling identity is a caller, and sees only its own).")
    caller_limits_setting: str = _setting("IMAGES_CALLER_LIMITS", "", "Each caller's limits as JSON: images per minute, USD per day and the deployments it may use, for every caller and per principal (docs/callers.md). Empty: no limits.")
    platform_auth: bool = _setting("WEBSITE_AUTH_ENABLED", False, "Set by the platform, never by you: True when App Service authentication is on. IMAGES_CALLER_AUTH=entra does not start without it.", "platform")

    # What the settings leave implicit, worked out once by _resolve.
    _api_style: ApiStyle = PrivateAttr("deployment")
    _auth_mode: AuthMode = PrivateAttr("entra")
    _deployments: dict[str, str] = PrivateAttr(default_factory=dict)
    _storage: StorageSettings = PrivateAttr(default_factory=StorageSettings)
    _backends: dict[str, tuple[Backend, ...]] = PrivateAttr(default_factory=dict)
    _caller_limits: CallerLimits = PrivateAttr(default_factory=CallerLimits)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting from ``environ`` (default: ``os.environ``); raise SettingsError naming the bad one."""
        env = os.environ if environ is None else environ
        # Blank means unset: the default applies, as for a setting emptied in the portal.
        given = {name: env[name].strip() for name in setting_names() if env.get(name, "").strip()}
        token = ENVIRON.set(env)  # IMAGES_BACKENDS names the settings holding its keys
        if "IMAGES_PUBLIC_BASE_URL" not in given and env.get("WEBSITE_HOSTNAME", "").strip():
            given["IMAGES_PUBLIC_BASE_URL"] = base_from_hostname(env["WEBSITE_HOSTNAME"].strip())
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            raise SettingsError("; ".join(_describe(error) for error in exc.errors())) from None
        finally:
            ENVIRON.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values handed in (by :meth:`from_env`): a given mapping must not be topped up from elsewhere."""
        return (init_settings,)

    @field_validator("auth_setting", "api_style_setting", "caller_auth", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("telemetry_exporter")
    @classmethod
    def _exporter(cls, value: str) -> str:
        if value in ("none", "console") or (value.startswith("file:") and value.removeprefix("file:").strip()):
            return value
        raise ValueError(f"must be console, file:<path> or none, got {value!r}")

    @field_validator("endpoint", "key_vault_url", "storage_blob_uri", "storage_queue_uri")
    @classmethod
    def _without_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("public_base_url")
    @classmethod
    def _public_base(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme not in ("https", "http") or not parts.hostname or parts.username or parts.query or parts.fragment or not value.isprintable()):
            raise ValueError(f"must be an http(s) URL without query, fragment or credentials (from WEBSITE_HOSTNAME when unset), got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        """The rules between settings, and what they leave implicit: API style, deployments, auth mode, storage."""
        endpoint = urlsplit(self.endpoint)
        if endpoint.scheme not in ("https", "http") or not endpoint.netloc:
            raise SettingsError(f"AZURE_OPENAI_ENDPOINT must be an https URL, got {self.endpoint!r}")
        if endpoint.scheme == "http" and not self.allow_http_upstream:
            raise SettingsError("AZURE_OPENAI_ENDPOINT must use https (set IMAGES_ALLOW_HTTP_UPSTREAM=true only for the local simulator)")
        self._api_style = self.api_style_setting or ("openai" if endpoint.hostname == "api.openai.com" else "deployment")
        self._deployments = deployments(self.deployments_setting, self.default_deployment)
        self._auth_mode = model_auth(self.auth_setting, self.api_key, self.key_vault_url, self._api_style)
        caller_auth(self.caller_auth, self.platform_auth)
        self._storage = _storage(self)
        self._backends = parse_backends(self.backends_setting, known_families=self._deployments, allow_http=self.allow_http_upstream)
        self._deployments |= {pool: backends[0].family for pool, backends in self._backends.items()}
        self._caller_limits = parse_limits(self.caller_limits_setting, deployments=self._deployments)
        return self

    @property
    def api_style(self) -> ApiStyle:
        """How upstream URLs are built (IMAGES_API_STYLE, or inferred from the endpoint)."""
        return self._api_style

    @property
    def auth_mode(self) -> AuthMode:
        """How the model is authenticated (AZURE_OPENAI_AUTH, or inferred from what is set)."""
        return self._auth_mode

    @property
    def deployments(self) -> Mapping[str, str]:
        """Allowed deployment name -> model family (IMAGES_DEPLOYMENTS plus AZURE_OPENAI_DEPLOYMENT)."""
        return MappingProxyType(self._deployments)

    @property
    def caller_limits(self) -> CallerLimits:
        """Each caller's limits (IMAGES_CALLER_LIMITS; none when empty)."""
        return self._caller_limits

    @property
    def backends(self) -> Mapping[str, tuple[Backend, ...]]:
        """The deployment pools of IMAGES_BACKENDS: logical name -> its backends (empty: none configured)."""
        return self._backends

    @property
    def storage(self) -> StorageSettings:
        """Where Blob and Queue storage live (the AzureWebJobsStorage* settings)."""
        return self._storage

    @property
    def poison_queue_name(self) -> str:
        """The queue the Functions host moves a message to after maxDequeueCount failures."""
        return f"{self.queue_name}-poison"

    @property
    def max_dequeue_count(self) -> int:
        """host.json's maxDequeueCount: deliveries of a message before the host gives up on it."""
        return host_max_dequeue_count()

    def family_of(self, deployment: str) -> str | None:
        """Model family of an allowed deployment, or None if it is not allowed."""
        return self._deployments.get(deployment)


def _storage(s: Settings) -> StorageSettings:
    """A connection string, or identity-based endpoints (an account name standing for both defaults)."""
    client_id = s.storage_client_id or s.client_id
    if s.storage_connection_string:
        return StorageSettings(s.storage_connection_string, s.storage_blob_uri, s.storage_queue_uri, client_id)
    account = s.storage_account_name
    # The Functions host's shorthand: an account name stands for both default endpoints.
    blob_url = s.storage_blob_uri or (f"https://{account}.blob.core.windows.net" if account else "")
    queue_url = s.storage_queue_uri or (f"https://{account}.queue.core.windows.net" if account else "")
    if not (blob_url and queue_url):
        raise SettingsError(
            "AzureWebJobsStorage is required: a connection string, or the identity-based "
            "AzureWebJobsStorage__blobServiceUri and AzureWebJobsStorage__queueServiceUri"
        )
    return StorageSettings(blob_url=blob_url, queue_url=queue_url, client_id=client_id)


_FIELDS_BY_NAME: dict[str, FieldInfo] = {str(f.alias): f for f in Settings.model_fields.values()}


def _describe(error: ErrorDetails) -> str:
    """One pydantic error as a sentence naming the setting by its environment name."""
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, SettingsError | PoolConfigError | LimitsConfigError):
        return str(cause)  # _resolve's own words already name the settings
    name = str(error["loc"][0]) if error["loc"] else "Settings"
    field = _FIELDS_BY_NAME.get(name)
    given = error["input"]
    kind = error["type"]
    if kind == "missing" and field is not None:
        return f"{name} is required: {field.description}"
    if kind == "int_parsing":
        return f"{name} must be an integer, got {given!r}"
    if kind == "float_parsing":
        return f"{name} must be a number of seconds, got {given!r}"
    if kind == "bool_parsing":
        return f"{name} must be true or false, got {given!r}"
    if kind == "literal_error" and field is not None:
        return f"{name} must be {_choices(field)}, got {given!r}"
    if kind in ("greater_than_equal", "less_than_equal") and field is not None:
        return f"{name} must be {_bounds(field)}, got {given}"
    if cause is not None:
        return f"{name} {cause}"  # a field validator's reason, worded to follow the name
    return f"{name}: {error['msg']}"


def _choices(field: FieldInfo) -> str:
    values = [str(v) for v in get_args(field.annotation) if v]
    return ", ".join(values[:-1]) + " or " + values[-1]


def _bounds(field: FieldInfo) -> str:
    low = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in field.metadata if hasattr(m, "le")), None)
    return f"between {low} and {high}" if high is not None else f"at least {low}"


@dataclass(frozen=True)
class Setting:
    """One entry of the catalogue: name, default (None: required), what it does, where infrastructure sets it."""

    name: str
    default: str | None
    doc: str
    # "app" (every deployment sets it), "optional" (set only for some choices,
    # e.g. the keyvault way), "local" (never in Azure), "platform" (Azure sets it, never the templates).
    deploy: Deploy = "app"


def _catalogue_entry(name: str, field: FieldInfo) -> Setting:
    """A field as the README and the infrastructure tests read it: the default as it would be written in the environment."""
    default = field.default
    if default is PydanticUndefined:
        text = None
    elif isinstance(default, bool):
        text = str(default).lower()
    elif isinstance(default, float) and default.is_integer():
        text = str(int(default))
    else:
        text = str(default)
    extra = cast(dict[str, Deploy], field.json_schema_extra)
    return Setting(name, text, str(field.description), extra["deploy"])


SETTINGS: tuple[Setting, ...] = tuple(_catalogue_entry(name, field) for name, field in _FIELDS_BY_NAME.items())


def setting_names() -> list[str]:
    """Names of every setting the app reads."""
    return [s.name for s in SETTINGS]
