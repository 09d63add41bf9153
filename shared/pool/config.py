"""``IMAGES_BACKENDS``: the deployment pools, parsed and checked once at start.

The setting is a JSON object: a logical deployment name (what callers put in the path or in
``model``) -> a list of backends, each one model deployment somewhere::

    {"gpt-image-2": [
       {"endpoint": "https://img-eastus2.openai.azure.com", "deployment": "gpt-image-2", "rpm": 6, "priority": 0},
       {"endpoint": "https://img-swedencentral.openai.azure.com", "deployment": "gpt-image-2", "rpm": 6,
        "priority": 0, "auth": "key", "api_key_setting": "IMAGES_KEY_SWEDEN"},
       {"endpoint": "https://img-dz.openai.azure.com", "deployment": "gpt-image-2-dz", "rpm": 2, "priority": 1}]}

A backend's fields: ``endpoint``, ``deployment`` (upstream's name), ``rpm`` (its quota in
requests per minute), ``priority`` (lower is tried first), optional ``weight`` (share among
backends of one priority, default 1), ``api_style`` (as ``IMAGES_API_STYLE``; default: inferred
from the endpoint), ``model`` (its family; default: inferred from the names), and the auth way:

- omitted: the app's own (``AZURE_OPENAI_AUTH`` and its key, secret or identity);
- ``"key"`` with ``api_key_setting``: the NAME of another app setting holding the key (a key is
  never written into this setting; ``api_key`` is refused);
- ``"keyvault"`` with ``key_secret_name`` (and ``key_vault_url``, default the app's vault);
- ``"entra"``: the app's identity.

Every backend of a pool runs the same model family. A mistake refuses the start with a
sentence that names the entry: ``IMAGES_BACKENDS["gpt-image-2"][1].rpm must be ...``.
Nothing here does I/O; the keys named are read from the mapping the settings were read from.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from shared.models import FAMILIES, family_for_name

SETTING = "IMAGES_BACKENDS"
ApiStyle = Literal["deployment", "v1", "openai"]
AuthWay = Literal["key", "keyvault", "entra"]
API_STYLES: tuple[ApiStyle, ...] = ("deployment", "v1", "openai")
AUTH_WAYS: tuple[AuthWay, ...] = ("key", "keyvault", "entra")
FIELDS = frozenset(
    {"endpoint", "deployment", "rpm", "priority", "weight", "api_style", "model", "auth", "api_key_setting", "key_secret_name", "key_vault_url"}
)
MAX_RPM = 100_000

# The mapping the settings are being read from (Settings.from_env sets it): pydantic-settings validates
# through __init__, which drops a validation context, so the named key settings arrive this way.
ENVIRON: ContextVar[Mapping[str, str]] = ContextVar("settings_environ", default=MappingProxyType({}))


class PoolConfigError(ValueError):
    """IMAGES_BACKENDS is malformed; the message names the entry and the field."""


@dataclass(frozen=True)
class Backend:
    """One model deployment of a pool, as configured."""

    pool: str  # the logical name callers use
    index: int  # position in the pool's list (names the entry in messages and records)
    endpoint: str
    deployment: str  # upstream's deployment name
    family: str
    rpm: int
    priority: int = 0
    weight: float = 1.0
    api_style: ApiStyle | None = None  # None: inferred from the endpoint, as for the app's endpoint
    auth: AuthWay | None = None  # None: the app's own way
    api_key: str = dataclasses.field(default="", repr=False)  # read from api_key_setting
    api_key_setting: str = ""
    key_secret_name: str = ""
    key_vault_url: str = ""

    @property
    def name(self) -> str:
        """How records and logs name the backend: host (and port) and upstream deployment (no secret, no path)."""
        return f"{urlsplit(self.endpoint).netloc}/{self.deployment}"

    @property
    def label(self) -> str:
        """The entry as the setting spells it: ``gpt-image-2[1]``."""
        return f"{self.pool}[{self.index}]"


def parse_backends(
    text: str, *, known_families: Mapping[str, str], allow_http: bool = False, environ: Mapping[str, str] | None = None
) -> dict[str, tuple[Backend, ...]]:
    """Every pool of ``text`` (``{}`` when blank). ``environ`` (default: :data:`ENVIRON`'s) holds the settings
    ``api_key_setting`` names; ``known_families`` the families IMAGES_DEPLOYMENTS gives (a pool must agree)."""
    environ = ENVIRON.get() if environ is None else environ
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PoolConfigError(f"{SETTING} must be JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(data, dict) or not data:
        raise PoolConfigError(f'{SETTING} must be a JSON object of pools: {{"logical-name": [backend, ...]}}')
    pools: dict[str, tuple[Backend, ...]] = {}
    for pool, entries in data.items():
        where = f"{SETTING}[{json.dumps(pool)}]"
        if not pool.strip():
            raise PoolConfigError(f"{where}: a pool needs a name (the deployment name callers use)")
        if not isinstance(entries, list) or not entries:
            raise PoolConfigError(f"{where} must be a non-empty list of backends")
        declared = known_families.get(pool)
        backends = tuple(_backend(pool, i, entry, f"{where}[{i}]", environ, allow_http, declared) for i, entry in enumerate(entries))
        pools[pool] = _same_family(backends, where, declared)
    return pools


def _backend(pool: str, index: int, entry: Any, where: str, environ: Mapping[str, str], allow_http: bool, declared: str | None) -> Backend:
    if not isinstance(entry, dict):
        raise PoolConfigError(f"{where} must be a JSON object")
    if "api_key" in entry:
        raise PoolConfigError(f"{where}.api_key: keys are never written here; put the key in an app setting and name it in api_key_setting")
    unknown = sorted(set(entry) - FIELDS)
    if unknown:
        raise PoolConfigError(f"{where} has unknown fields {unknown}; known: {sorted(FIELDS)}")
    endpoint = _endpoint(entry.get("endpoint"), f"{where}.endpoint", allow_http)
    deployment = _text(entry, "deployment", where, required=True)
    auth = _choice(entry, "auth", AUTH_WAYS, where)
    backend = Backend(
        pool=pool,
        index=index,
        endpoint=endpoint,
        deployment=deployment,
        family=_family(entry, where, deployment, declared or family_for_name(pool)),
        rpm=int(_number(entry, "rpm", where, low=1, high=MAX_RPM, integer=True, required=True)),
        priority=int(_number(entry, "priority", where, low=0, high=1000, integer=True, default=0)),
        weight=_number(entry, "weight", where, low=0.001, high=1000, default=1.0),
        api_style=_choice(entry, "api_style", API_STYLES, where),
        auth=auth,
        api_key_setting=_text(entry, "api_key_setting", where),
        key_secret_name=_text(entry, "key_secret_name", where),
        key_vault_url=_text(entry, "key_vault_url", where).rstrip("/"),
    )
    return _with_auth(backend, where, environ)


def _with_auth(backend: Backend, where: str, environ: Mapping[str, str]) -> Backend:
    """The auth way's own needs: a named, set key setting; a secret name; an https vault."""
    if backend.api_key_setting and backend.auth is None:
        backend = dataclasses.replace(backend, auth="key")
    elif backend.key_secret_name and backend.auth is None:
        backend = dataclasses.replace(backend, auth="keyvault")
    if backend.auth == "key":
        name = backend.api_key_setting
        if not name:
            raise PoolConfigError(f'{where}.api_key_setting is required with "auth": "key" (the name of the app setting holding the key)')
        key = environ.get(name, "").strip()
        if not key:
            raise PoolConfigError(f"{where}.api_key_setting names {name}, which is not set")
        return dataclasses.replace(backend, api_key=key)
    if backend.auth == "keyvault":
        if not backend.key_secret_name:
            raise PoolConfigError(f'{where}.key_secret_name is required with "auth": "keyvault"')
        if backend.key_vault_url and urlsplit(backend.key_vault_url).scheme != "https":
            raise PoolConfigError(f"{where}.key_vault_url must be an https URL")
    if backend.api_style == "openai" and backend.auth == "entra":
        raise PoolConfigError(f"{where}: api_style openai needs a key (auth key or keyvault)")
    return backend


def _same_family(backends: tuple[Backend, ...], where: str, declared: str | None) -> tuple[Backend, ...]:
    """Every backend runs one family: the pool's from IMAGES_DEPLOYMENTS, else its first backend's."""
    family = declared or backends[0].family
    for backend in backends:
        if backend.family != family:
            raise PoolConfigError(
                f"{where}[{backend.index}] runs {backend.family}, but the pool runs {family}: every backend of a pool must run the same model family"
            )
    return backends


def _family(entry: dict[str, Any], where: str, deployment: str, pool_family: str | None) -> str:
    given = entry.get("model")
    if given is not None:
        if given not in FAMILIES:
            raise PoolConfigError(f"{where}.model must be one of {', '.join(sorted(FAMILIES))}, got {given!r}")
        return str(given)
    family = family_for_name(deployment) or pool_family
    if family is None:
        raise PoolConfigError(f"{where}.model is required: the family is not in IMAGES_DEPLOYMENTS and {deployment!r} is not named like one")
    return family


def _endpoint(value: Any, where: str, allow_http: bool) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PoolConfigError(f"{where} is required (https://NAME.openai.azure.com)")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise PoolConfigError(f"{where} must be an https URL, got {value!r}")
    if parts.scheme == "http" and not allow_http:
        raise PoolConfigError(f"{where} must use https (http only with IMAGES_ALLOW_HTTP_UPSTREAM=true, for the local simulator)")
    return value.strip().rstrip("/")


def _text(entry: dict[str, Any], name: str, where: str, *, required: bool = False) -> str:
    value = entry.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise PoolConfigError(f"{where}.{name} must be a non-empty string, got {value!r}")
    return value.strip()


def _choice(entry: dict[str, Any], name: str, choices: tuple[Any, ...], where: str) -> Any:
    value = entry.get(name)
    if value is None:
        return None
    if value not in choices:
        raise PoolConfigError(f"{where}.{name} must be {' or '.join(choices)}, got {value!r}")
    return value


def _number(
    entry: dict[str, Any], name: str, where: str, *, low: float, high: float, integer: bool = False, required: bool = False, default: float = 0
) -> float:
    value = entry.get(name)
    if value is None:
        if required:
            raise PoolConfigError(f"{where}.{name} is required ({'an integer' if integer else 'a number'} from {low:g} to {high:g})")
        return default
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise PoolConfigError(f"{where}.{name} must be {kind} from {low:g} to {high:g}, got {json.dumps(value)}")
    return float(value)


def needs_identity(pools: Mapping[str, tuple[Backend, ...]], app_auth: str) -> bool:
    """True when some backend reaches its key or token with the app's identity."""
    return any((b.auth or app_auth) in ("keyvault", "entra") for backends in pools.values() for b in backends)
