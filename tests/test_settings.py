"""Settings: read once, typed, and every refusal names the setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.settings import MAX_LINK_TTL_SECONDS, SETTINGS, Settings, SettingsError, setting_names

ROOT = Path(__file__).resolve().parent.parent
BASE = {
    "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com",
    "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1-mini",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}


def load(**changes: str) -> Settings:
    return Settings.from_env({**BASE, **changes})


def test_defaults() -> None:
    s = load()
    assert s.api_style == "deployment"
    assert s.api_version == "2025-04-01-preview"
    assert s.auth_mode == "entra"  # no key and no vault: the keyless way
    assert s.deployments == {"gpt-image-1-mini": "gpt-image-1-mini"}
    assert s.link_ttl_seconds == MAX_LINK_TTL_SECONDS
    assert s.queue_name == "image-jobs" and s.poison_queue_name == "image-jobs-poison"
    assert s.results_queue == ""


def test_auth_mode_is_inferred() -> None:
    assert load(AZURE_OPENAI_API_KEY="k").auth_mode == "key"
    assert load(AZURE_KEY_VAULT_ENDPOINT="https://v.vault.azure.net").auth_mode == "keyvault"
    assert load(AZURE_OPENAI_ENDPOINT="https://api.openai.com", AZURE_OPENAI_API_KEY="k").api_style == "openai"


def test_identity_based_storage() -> None:
    env = {k: v for k, v in BASE.items() if k != "AzureWebJobsStorage"}
    s = Settings.from_env({**env, "AzureWebJobsStorage__accountName": "acct", "AZURE_CLIENT_ID": "cid"})
    assert s.storage.uses_identity
    assert s.storage.blob_url == "https://acct.blob.core.windows.net"
    assert s.storage.queue_url == "https://acct.queue.core.windows.net"
    assert s.storage.client_id == "cid"
    explicit = Settings.from_env(
        {**env, "AzureWebJobsStorage__blobServiceUri": "https://a.blob.core.windows.net/", "AzureWebJobsStorage__queueServiceUri": "https://a.queue.core.windows.net"}
    )
    assert explicit.storage.blob_url == "https://a.blob.core.windows.net"


def test_deployments_mapping() -> None:
    s = load(IMAGES_DEPLOYMENTS="prod=gpt-image-2, legacy=dall-e-3, gpt-image-1")
    assert s.deployments == {"prod": "gpt-image-2", "legacy": "dall-e-3", "gpt-image-1": "gpt-image-1", "gpt-image-1-mini": "gpt-image-1-mini"}
    assert s.family_of("prod") == "gpt-image-2"
    assert s.family_of("other") is None


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"AZURE_OPENAI_ENDPOINT": ""}, "AZURE_OPENAI_ENDPOINT"),
        ({"AZURE_OPENAI_ENDPOINT": "ftp://x"}, "AZURE_OPENAI_ENDPOINT"),
        ({"AZURE_OPENAI_ENDPOINT": "http://plain.example"}, "AZURE_OPENAI_ENDPOINT"),
        ({"AZURE_OPENAI_DEPLOYMENT": "my-images"}, "AZURE_OPENAI_DEPLOYMENT"),
        ({"AZURE_OPENAI_DEPLOYMENT": "", "IMAGES_DEPLOYMENTS": ""}, "AZURE_OPENAI_DEPLOYMENT"),
        ({"IMAGES_DEPLOYMENTS": "prod=dall-e-2"}, "IMAGES_DEPLOYMENTS"),
        ({"IMAGES_DEPLOYMENTS": "=gpt-image-1"}, "IMAGES_DEPLOYMENTS"),
        ({"AZURE_OPENAI_AUTH": "password"}, "AZURE_OPENAI_AUTH"),
        ({"AZURE_OPENAI_AUTH": "key"}, "AZURE_OPENAI_API_KEY"),
        ({"AZURE_OPENAI_AUTH": "keyvault"}, "AZURE_KEY_VAULT_ENDPOINT"),
        ({"AZURE_KEY_VAULT_ENDPOINT": "http://v.vault.azure.net"}, "AZURE_KEY_VAULT_ENDPOINT"),
        ({"IMAGES_API_STYLE": "rest"}, "IMAGES_API_STYLE"),
        ({"AzureWebJobsStorage": ""}, "AzureWebJobsStorage"),
        ({"IMAGES_LINK_TTL_SECONDS": str(MAX_LINK_TTL_SECONDS + 1)}, "IMAGES_LINK_TTL_SECONDS"),
        ({"IMAGES_LINK_TTL_SECONDS": "a week"}, "IMAGES_LINK_TTL_SECONDS"),
        ({"IMAGES_UPSTREAM_TIMEOUT_SECONDS": "0"}, "IMAGES_UPSTREAM_TIMEOUT_SECONDS"),
        ({"IMAGES_MAX_CONCURRENT_UPSTREAM": "0"}, "IMAGES_MAX_CONCURRENT_UPSTREAM"),
        ({"IMAGES_ALLOW_HTTP_UPSTREAM": "maybe"}, "IMAGES_ALLOW_HTTP_UPSTREAM"),
        ({"IMAGES_QUEUE": "Image_Jobs"}, "IMAGES_QUEUE"),
        ({"IMAGES_CONTAINER": "ab"}, "IMAGES_CONTAINER"),
        ({"IMAGES_RESULTS_QUEUE": "bad--name"}, "IMAGES_RESULTS_QUEUE"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(changes: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(named)):
        load(**changes)


def test_catalogue_lists_every_setting_the_module_reads() -> None:
    source = (ROOT / "shared" / "settings.py").read_text()
    read = set(re.findall(r'get\("([A-Za-z_]+)"\)', source)) | set(re.findall(r'(?:integer|number|boolean)\("([A-Za-z_]+)"', source))
    assert read <= set(setting_names()), read - set(setting_names())
    assert set(setting_names()) <= read | {"AzureWebJobsStorage__credential"}  # read by the Functions host itself


def test_no_environment_read_outside_settings() -> None:
    offenders = []
    for path in (ROOT / "shared").glob("*.py"):
        if path.name in ("settings.py", "credentials.py"):
            continue  # credentials only asks whether it runs in Azure (IDENTITY_ENDPOINT), as azure-identity does
        if re.search(r"os\.environ|os\.getenv", path.read_text()):
            offenders.append(path.name)
    assert offenders == []


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in readme]
    assert missing == []
