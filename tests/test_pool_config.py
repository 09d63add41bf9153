"""IMAGES_BACKENDS: a pool with a bad entry is refused at start, the entry named; a good one becomes a deployment."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.runtime import Runtime
from shared.settings import Settings, SettingsError

BASE = {
    "AZURE_OPENAI_ENDPOINT": "https://main.openai.azure.com",
    "AZURE_OPENAI_API_KEY": "main-key-0123456789",
    "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1-mini",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "IMAGES_KEY_SWEDEN": "sweden-key-0123456789",
}
EAST = {"endpoint": "https://img-eastus2.openai.azure.com", "deployment": "gpt-image-2", "rpm": 6, "priority": 0}
SWEDEN = {"endpoint": "https://img-swedencentral.openai.azure.com", "deployment": "gpt-image-2", "rpm": 6, "auth": "key", "api_key_setting": "IMAGES_KEY_SWEDEN"}
DATAZONE = {"endpoint": "https://img-dz.openai.azure.com", "deployment": "gpt-image-2-dz", "rpm": 2, "priority": 1}


def load(pools: Any, **extra: str) -> Settings:
    return Settings.from_env({**BASE, "IMAGES_BACKENDS": json.dumps(pools), **extra})


def test_the_readme_example_reads_as_three_backends_of_one_family() -> None:
    settings = load({"gpt-image-2": [EAST, SWEDEN, DATAZONE]})
    east, sweden, dz = settings.backends["gpt-image-2"]
    assert settings.family_of("gpt-image-2") == "gpt-image-2"  # the logical name is a deployment callers use
    assert (east.auth, sweden.auth, dz.auth) == (None, "key", None)
    assert sweden.api_key == "sweden-key-0123456789" and "sweden-key" not in repr(settings) + repr(sweden)
    assert (dz.deployment, dz.family, dz.rpm, dz.priority, dz.weight) == ("gpt-image-2-dz", "gpt-image-2", 2, 1, 1.0)
    assert dz.name == "img-dz.openai.azure.com/gpt-image-2-dz" and dz.label == "gpt-image-2[2]"


def test_without_the_setting_the_single_endpoint_settings_are_unchanged() -> None:
    settings = Settings.from_env(BASE)
    assert settings.backends == {}
    assert dict(settings.deployments) == {"gpt-image-1-mini": "gpt-image-1-mini"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**SWEDEN, "rpm": "6"}, 'IMAGES_BACKENDS["gpt-image-2"][1].rpm must be an integer from 1 to 100000, got "6"'),
        ({**SWEDEN, "rpm": 0}, 'IMAGES_BACKENDS["gpt-image-2"][1].rpm must be an integer from 1 to 100000, got 0'),
        ({k: v for k, v in SWEDEN.items() if k != "rpm"}, 'IMAGES_BACKENDS["gpt-image-2"][1].rpm is required'),
        ({**SWEDEN, "priority": -1}, 'IMAGES_BACKENDS["gpt-image-2"][1].priority must be an integer from 0 to 1000'),
        ({**SWEDEN, "weight": 0}, 'IMAGES_BACKENDS["gpt-image-2"][1].weight must be a number'),
        ({**SWEDEN, "endpoint": "http://img.example"}, 'IMAGES_BACKENDS["gpt-image-2"][1].endpoint must use https'),
        ({**SWEDEN, "endpoint": "img.example"}, 'IMAGES_BACKENDS["gpt-image-2"][1].endpoint must be an https URL'),
        ({**SWEDEN, "deployment": ""}, 'IMAGES_BACKENDS["gpt-image-2"][1].deployment must be a non-empty string'),
        ({**SWEDEN, "api_key": "pasted-key"}, 'IMAGES_BACKENDS["gpt-image-2"][1].api_key: keys are never written here'),
        ({**SWEDEN, "api_key_setting": "IMAGES_KEY_NOWHERE"}, 'IMAGES_BACKENDS["gpt-image-2"][1].api_key_setting names IMAGES_KEY_NOWHERE, which is not set'),
        ({**SWEDEN, "auth": "keyvault", "api_key_setting": None}, 'IMAGES_BACKENDS["gpt-image-2"][1].key_secret_name is required'),
        ({**SWEDEN, "auth": "password"}, 'IMAGES_BACKENDS["gpt-image-2"][1].auth must be key or keyvault or entra'),
        ({**SWEDEN, "api_style": "soap"}, 'IMAGES_BACKENDS["gpt-image-2"][1].api_style must be deployment or v1 or openai'),
        ({**SWEDEN, "region": "sweden"}, "IMAGES_BACKENDS[\"gpt-image-2\"][1] has unknown fields ['region']"),
        ({**SWEDEN, "model": "dall-e-3"}, 'IMAGES_BACKENDS["gpt-image-2"][1] runs dall-e-3, but the pool runs gpt-image-2'),
        ({**SWEDEN, "deployment": "sweden-images"} | {"model": "gpt-image-9"}, 'IMAGES_BACKENDS["gpt-image-2"][1].model must be one of'),
        ("sweden", 'IMAGES_BACKENDS["gpt-image-2"][1] must be a JSON object'),
    ],
)
def test_a_bad_entry_is_refused_at_start_naming_it(entry: Any, message: str) -> None:
    if isinstance(entry, dict):
        entry = {k: v for k, v in entry.items() if v is not None}
    env = {**BASE, "IMAGES_BACKENDS": json.dumps({"gpt-image-2": [EAST, entry]})}
    with pytest.raises(SettingsError) as refused:
        Runtime.from_env(env)  # what the app does at start
    assert message in str(refused.value)
    assert "pasted-key" not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "IMAGES_BACKENDS must be JSON"),
        ("[]", "IMAGES_BACKENDS must be a JSON object of pools"),
        ('{"gpt-image-2": []}', 'IMAGES_BACKENDS["gpt-image-2"] must be a non-empty list of backends'),
        ('{"pool": [{"endpoint": "https://a.openai.azure.com", "deployment": "images", "rpm": 6}]}', 'IMAGES_BACKENDS["pool"][0].model is required'),
    ],
)
def test_a_bad_setting_is_refused_naming_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(SettingsError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        Settings.from_env({**BASE, "IMAGES_BACKENDS": text})


def test_a_pool_must_agree_with_the_family_images_deployments_gives_it() -> None:
    with pytest.raises(SettingsError, match=r'IMAGES_BACKENDS\["prod"\]\[0\] runs gpt-image-2, but the pool runs gpt-image-1.5'):
        load({"prod": [EAST]}, IMAGES_DEPLOYMENTS="prod=gpt-image-1.5")
    # A deployment name that says nothing takes the family IMAGES_DEPLOYMENTS gives the pool.
    settings = load({"prod": [{**EAST, "deployment": "images"}]}, IMAGES_DEPLOYMENTS="prod=gpt-image-2")
    assert settings.backends["prod"][0].family == "gpt-image-2"
