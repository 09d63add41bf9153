"""The function app as Flex Consumption accepts it, checked in both templates.

checkov evaluates no check at all on `azapi_resource` bodies (tests/test_infra.py pins that),
so the Terraform function app, an azapi_resource, is invisible to it: "checkov finds nothing
beyond the skips" says nothing about it. These checks cover what checkov cannot see, on the
azapi body and, so the two stay one system, on the Bicep site too:

- no site property Flex Consumption rejects or has no use for (FLEX_INVALID, with sources);
- HTTPS only, TLS 1.2, FTP and SCM basic publishing off;
- a user-assigned identity, and identity-based deployment storage (no key, no connection string);
- the Python runtime in functionAppConfig, 3.11 or 3.12.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_infra import parse_bicep

from docs.templates import INFRA, parse_terraform, plain, tf_resources

# Site properties Flex Consumption refuses or ignores. Newer regional stamps reject the
# "rejected" ones with ARM error 51021 ("The following list of N site configuration properties
# (Site.SiteConfig.FtpsState, ...) for Flex Consumption sites is invalid. Please remove or
# rename them before retrying."); older stamps still ignore them, and Microsoft says blocking is
# intended everywhere (Microsoft Q&A 2275500, quoted in Azure/terraform-azurerm-avm-res-web-site#360).
# Keep each entry with the public source that names it.
FLEX_INVALID = {
    "ftpsState": "rejected: Azure/azure-cli#31414, microsoft/azure-pipelines-tasks#21032",
    "use32BitWorkerProcess": "rejected: Azure/azure-cli#31414, microsoft/azure-pipelines-tasks#21032",
    "netFrameworkVersion": "rejected: Azure/azure-cli#31414, microsoft/azure-pipelines-tasks#21032",
    "functionsRuntimeScaleMonitoringEnabled": "rejected: Azure/azure-cli#31414, microsoft/azure-pipelines-tasks#21032",
    "preWarmedInstanceCount": "rejected: Azure/azure-cli#31414",
    "functionAppScaleLimit": "rejected: Azure/azure-functions-host#10643, microsoft/azure-pipelines-tasks#22254",
    "linuxFxVersion": "rejected: Azure/terraform-azurerm-avm-res-web-site#283 (the runtime is functionAppConfig.runtime)",
    "alwaysOn": "no use: the portal hides it for Flex (Azure/azure-functions-ux#7660); AVM omits it on FC1 (#345)",
    "remoteDebuggingEnabled": "no use: the portal hides remote debugging for Flex (Azure/azure-functions-ux#7660)",
    "http20ProxyFlag": "no use: the portal hides the HTTP 2.0 proxy for Flex (Azure/azure-functions-ux#7660)",
    "windowsFxVersion": "no use: Flex Consumption is Linux only (Azure/terraform-azurerm-avm-res-web-site#345)",
}
# Checked and kept: http20Enabled is in none of the rejection lists above, and the portal still
# offers the HTTP version for Flex (#7660 hides only the HTTP 2.0 proxy); minTlsVersion is the one
# siteConfig property Microsoft's Flex samples set (Azure-Samples/azure-functions-flex-consumption-samples).
PYTHON_VERSIONS = {"3.11", "3.12"}  # the app needs 3.11 or newer (pyproject.toml); Flex runs both


def _sites() -> dict[str, dict[str, Any]]:
    """{template: {kind, identity, properties}} of the function app, from Bicep's site and Terraform's azapi body."""
    bicep = parse_bicep()[INFRA / "app" / "function.bicep"]["resources"]["site"]["config"]
    azapi = tf_resources(parse_terraform())["azapi_resource.function_app"]
    body = plain(azapi["body"])
    (identity,) = plain(azapi["identity"])  # a block: python-hcl2 gives a list of one
    return {
        "bicep": {"kind": bicep["kind"], "identity_type": bicep["identity"]["type"], "properties": bicep["properties"]},
        "terraform": {"kind": body["kind"], "identity_type": identity["type"], "properties": body["properties"]},
    }


def _keys(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key.strip("'\""), f"{path}.{key}"
            yield from _keys(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _keys(item, f"{path}[{index}]")


@pytest.mark.parametrize("template", ["bicep", "terraform"])
def test_no_site_property_flex_consumption_rejects(template: str) -> None:
    """Finding 1: ftpsState (and others) on a Flex site fail the deployment on newer stamps."""
    invalid = {name.lower(): name for name in FLEX_INVALID}
    found = [f"{path} ({FLEX_INVALID[invalid[key.lower()]]})" for key, path in _keys(_sites()[template]) if key.lower() in invalid]
    assert not found, f"{template}: remove from the function app: {found}"


@pytest.mark.parametrize("template", ["bicep", "terraform"])
def test_function_app_is_https_only_with_identity_based_storage_and_python(template: str) -> None:
    site = _sites()[template]
    properties = site["properties"]
    assert site["kind"] == "functionapp,linux"
    assert site["identity_type"] == "UserAssigned"
    assert properties["httpsOnly"] is True
    assert properties["siteConfig"]["minTlsVersion"] == "1.2"

    config = properties["functionAppConfig"]
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"]["type"] == "UserAssignedIdentity", "deployment storage with the identity, no key"
    assert "storageAccountConnectionStringName" not in storage["authentication"]
    runtime = config["runtime"]
    assert runtime["name"] == "python" and runtime["version"] in PYTHON_VERSIONS


def test_basic_publishing_is_off_in_both() -> None:
    """FTP is off this way, since Flex refuses ftpsState; SCM basic auth too (azd and the CLI use Entra ID)."""
    bicep = parse_bicep()[INFRA / "app" / "function.bicep"]["resources"]
    policies = {
        resource["config"]["name"]: resource["config"]["properties"]["allow"]
        for resource in bicep.values()
        if resource["type"] == "Microsoft.Web/sites/basicPublishingCredentialsPolicies"
    }
    assert policies == {"ftp": False, "scm": False}

    azapi = tf_resources(parse_terraform())["azapi_resource.basic_publishing_off"]
    assert plain(azapi["type"]).startswith("Microsoft.Web/sites/basicPublishingCredentialsPolicies@")
    assert azapi["for_each"] == '${toset(["ftp", "scm"])}'
    assert plain(azapi["body"]) == {"properties": {"allow": False}}
