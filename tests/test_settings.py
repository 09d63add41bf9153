"""Settings: read once, typed, and every refusal names the setting."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.host import host_max_dequeue_count, host_queue_settings
from shared.settings import (
    MAX_LINK_TTL_SECONDS,
    SETTINGS,
    Settings,
    SettingsError,
    setting_names,
)

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
        ({"IMAGES_SYNC_TIMEOUT_SECONDS": "221"}, "IMAGES_SYNC_TIMEOUT_SECONDS"),  # the front end ends a call at 230 s
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


# One value per setting, different from its default: proves each catalogued name reaches the model.
SAMPLES = {
    "AZURE_OPENAI_ENDPOINT": "https://other.openai.azure.com",
    "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1",
    "AZURE_OPENAI_API_VERSION": "2025-06-01-preview",
    "AZURE_OPENAI_API_KEY": "k",
    "AZURE_OPENAI_AUTH": "entra",
    "AZURE_KEY_VAULT_ENDPOINT": "https://v.vault.azure.net",
    "AZURE_OPENAI_API_KEY_SECRET_NAME": "model-key",
    "AZURE_CLIENT_ID": "cid",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true;x=1",
    "AzureWebJobsStorage__blobServiceUri": "https://a.blob.core.windows.net",
    "AzureWebJobsStorage__queueServiceUri": "https://a.queue.core.windows.net",
    "AzureWebJobsStorage__accountName": "acct",
    "AzureWebJobsStorage__credential": "managedidentity",
    "AzureWebJobsStorage__clientId": "storage-cid",
    "IMAGES_DEPLOYMENTS": "prod=gpt-image-2",
    "IMAGES_API_STYLE": "v1",
    "IMAGES_CONTAINER": "archive",
    "IMAGES_JOBS_CONTAINER": "jobs",
    "IMAGES_QUEUE": "work",
    "IMAGES_RESULTS_QUEUE": "results",
    "IMAGES_ARCHIVE_PARTIAL_IMAGES": "true",
    "IMAGES_LINK_TTL_SECONDS": "3600",
    "IMAGES_UPSTREAM_TIMEOUT_SECONDS": "300",
    "IMAGES_SYNC_TIMEOUT_SECONDS": "100.5",
    "IMAGES_RETRY_BUDGET_SECONDS": "0",
    "IMAGES_MAX_RETRIES": "0",
    "IMAGES_MAX_BODY_BYTES": "4096",
    "IMAGES_MAX_IMAGE_BYTES": "4096",
    "IMAGES_MAX_EDIT_FILE_BYTES": "2048",
    "IMAGES_MAX_EDIT_TOTAL_BYTES": "8192",
    "IMAGES_MAX_CONCURRENT_UPSTREAM": "4",
    "IMAGES_ALLOW_HTTP_UPSTREAM": "true",
    "IMAGES_BACKENDS": '{"pool": [{"endpoint": "https://b.openai.azure.com", "deployment": "img", "model": "gpt-image-2", "rpm": 6}]}',
    "IMAGES_PUBLIC_BASE_URL": "https://images.example.com",
    "IMAGES_RETENTION_DAYS": "30",
    "IMAGES_TELEMETRY_PROMPTS": "true",
    "IMAGES_TELEMETRY_EXPORTER": "console",
    "IMAGES_CALLER_AUTH": "entra",
    "IMAGES_CALLER_LIMITS": '{"default": {"images_per_minute": 6, "usd_per_day": 2.5}}',
    "WEBSITE_AUTH_ENABLED": "True",  # as the platform writes it
}
# What a sample needs beside it to be accepted.
NEEDS = {"IMAGES_CALLER_AUTH": {"WEBSITE_AUTH_ENABLED": "True"}}


def test_catalogue_is_the_model_fields() -> None:
    fields = list(Settings.model_fields.values())
    assert setting_names() == [f.alias for f in fields]
    assert [s.doc for s in SETTINGS] == [f.description for f in fields]
    assert all(s.deploy in ("app", "optional", "yours", "local", "platform") for s in SETTINGS)
    assert set(SAMPLES) == set(setting_names())  # a new setting needs a sample below
    assert [s.name for s in SETTINGS if s.default is None] == ["AZURE_OPENAI_ENDPOINT"]  # the one required setting


def test_catalogue_defaults_read_back_as_the_defaults() -> None:
    """What the README shows as a default, written into the environment, changes nothing."""
    written = {s.name: s.default for s in SETTINGS if s.default}
    assert Settings.from_env({**written, **BASE}) == load()


@pytest.mark.parametrize("name", setting_names())
def test_every_setting_is_read_under_its_environment_name(name: str) -> None:
    field = next(n for n, f in Settings.model_fields.items() if f.alias == name)
    assert getattr(load(**{name: SAMPLES[name]}, **NEEDS.get(name, {})), field) != getattr(load(), field)


def test_a_given_mapping_is_the_only_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMAGES_QUEUE", "from-environ")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("IMAGES_CONTAINER=from-dotenv\n")
    s = load()
    assert (s.queue_name, s.images_container) == ("image-jobs", "images")


def test_without_a_mapping_the_process_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in {**BASE, "IMAGES_QUEUE": "from-environ"}.items():
        monkeypatch.setenv(name, value)
    assert Settings.from_env().queue_name == "from-environ"


def test_names_are_case_sensitive_and_blank_means_default() -> None:
    s = load(images_queue="other-queue", IMAGES_CONTAINER="  ", IMAGES_MAX_RETRIES="", IMAGES_JOBS_CONTAINER=" jobs ")
    assert (s.queue_name, s.images_container, s.max_retries, s.jobs_container) == ("image-jobs", "images", 3, "jobs")
    assert load(AZURE_OPENAI_AUTH="KEY", AZURE_OPENAI_API_KEY="k", IMAGES_API_STYLE="V1").auth_mode == "key"
    assert load(AZURE_OPENAI_ENDPOINT="https://example.openai.azure.com/").endpoint == "https://example.openai.azure.com"


def test_secrets_stay_out_of_repr() -> None:
    s = load(AZURE_OPENAI_API_KEY="key-8f3a", AzureWebJobsStorage="AccountName=a;AccountKey=acct-9b2c")
    assert s.api_key == "key-8f3a" and "acct-9b2c" in s.storage.connection_string
    assert "key-8f3a" not in repr(s) and "acct-9b2c" not in repr(s)


def test_settings_are_frozen_and_copied_with_changes() -> None:
    s = load(IMAGES_ALLOW_HTTP_UPSTREAM="true", AZURE_OPENAI_API_KEY="k")
    with pytest.raises(ValidationError, match="frozen"):
        s.allow_http_upstream = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.deployments["other"] = "gpt-image-1"  # type: ignore[index]
    changed = s.model_copy(update={"allow_http_upstream": False})
    assert changed.allow_http_upstream is False and s.allow_http_upstream is True
    assert (changed.deployments, changed.auth_mode, changed.storage) == (s.deployments, s.auth_mode, s.storage)


def test_host_queue_settings_and_max_dequeue_count(tmp_path: Path) -> None:
    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    assert host_queue_settings() == queues
    assert load().max_dequeue_count == queues["maxDequeueCount"]
    host = tmp_path / "host.json"
    host.write_text(json.dumps({"extensions": {"queues": {"maxDequeueCount": 7, "batchSize": 1}}}))
    assert host_queue_settings(host) == {"maxDequeueCount": 7, "batchSize": 1}
    assert host_max_dequeue_count(host) == 7
    host.write_text(json.dumps({"extensions": {"queues": {"maxDequeueCount": 9}}}))
    assert host_max_dequeue_count(host) == 7  # read once
    unset = tmp_path / "unset.json"
    unset.write_text(json.dumps({"version": "2.0"}))
    assert (host_queue_settings(unset), host_max_dequeue_count(unset)) == ({}, 5)  # the host's own default


def test_no_environment_read_outside_settings() -> None:
    offenders = []
    exempt = {"settings.py", "credentials/identity.py"}  # identity only asks whether it runs in Azure, as azure-identity does
    checked = 0
    for path in (ROOT / "shared").rglob("*.py"):
        name = path.relative_to(ROOT / "shared").as_posix()
        if name in exempt:
            continue
        checked += 1
        if re.search(r"os\.environ|os\.getenv", path.read_text()):
            offenders.append(name)
    assert offenders == []
    assert checked > 10  # the walk reaches the packages too


@pytest.mark.parametrize("name", ["imagés", "images²", "image\u0665s"])
def test_storage_names_are_ascii(name: str) -> None:
    env = {**BASE, "IMAGES_CONTAINER": name}
    with pytest.raises(SettingsError, match="IMAGES_CONTAINER"):
        Settings.from_env(env)
