"""The rules between settings, as pure functions of their values: shared/settings.py calls them
from its one model validator, and each refusal names the settings at fault.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from shared.models import FAMILIES, family_for_name

ApiStyle = Literal["deployment", "v1", "openai"]
AuthMode = Literal["key", "keyvault", "entra"]


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


def base_from_hostname(hostname: str) -> str:
    """WEBSITE_HOSTNAME as a base URL: https in Azure; http for loopback, where Core Tools sets it (localhost:7071)."""
    try:
        host = urlsplit(f"//{hostname}").hostname
    except ValueError:  # not a host[:port]: the URL check names the setting
        host = None
    return f"{'http' if host in ('localhost', '127.0.0.1', '::1') else 'https'}://{hostname}"


def deployments(listed: str, default: str) -> dict[str, str]:
    """IMAGES_DEPLOYMENTS ('name=family,...'; a family-like name may stand alone) plus AZURE_OPENAI_DEPLOYMENT."""
    deployments: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in listed.split(","))):
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
    if default and default not in deployments:
        inferred = family_for_name(default)
        if inferred is None:
            raise SettingsError(
                f"AZURE_OPENAI_DEPLOYMENT {default!r} is not named like a model family; give its family in IMAGES_DEPLOYMENTS (name=family)"
            )
        deployments[default] = inferred
    if not deployments:
        raise SettingsError("Set AZURE_OPENAI_DEPLOYMENT or IMAGES_DEPLOYMENTS: no deployment is allowed")
    return deployments


def model_auth(requested: Literal["", "key", "keyvault", "entra"], api_key: str, vault: str, api_style: ApiStyle) -> AuthMode:
    """AZURE_OPENAI_AUTH, or the way the other settings point to; and what that way needs."""
    auth: AuthMode = requested or ("key" if api_key else ("keyvault" if vault else "entra"))
    if auth == "key" and not api_key:
        raise SettingsError("AZURE_OPENAI_API_KEY is required when AZURE_OPENAI_AUTH=key")
    if auth == "keyvault":
        if not vault:
            raise SettingsError("AZURE_KEY_VAULT_ENDPOINT is required when AZURE_OPENAI_AUTH=keyvault")
        if urlsplit(vault).scheme != "https":
            raise SettingsError("AZURE_KEY_VAULT_ENDPOINT must be an https URL")
    if api_style == "openai" and auth == "entra":
        raise SettingsError("IMAGES_API_STYLE=openai needs a key (AZURE_OPENAI_API_KEY or the keyvault way)")
    return auth


def caller_auth(mode: str, platform_auth: bool) -> str:
    """IMAGES_CALLER_AUTH, and what entra mode needs: the platform's word that its authentication is on.

    Entra mode trusts the X-MS-CLIENT-PRINCIPAL* headers, which only App Service authentication
    strips and sets; without it any client could send them, so the app does not start."""
    if mode == "entra" and not platform_auth:
        raise SettingsError(
            "IMAGES_CALLER_AUTH=entra needs App Service authentication, and the platform says it is off: WEBSITE_AUTH_ENABLED "
            "is not True. Turn authentication on for the function app (the templates in infra/ do; authsettingsV2 with "
            "Microsoft Entra ID, requireAuthentication, Return401), or use IMAGES_CALLER_AUTH=key."
        )
    return mode
