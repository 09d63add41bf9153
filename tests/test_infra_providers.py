"""The provider pins admit every argument the Terraform files use, and no deprecated one is used.

Each argument used is listed below with the first provider release that has it, from the
provider's release notes (CHANGELOG-v4.md of hashicorp/terraform-provider-azurerm, CHANGELOG.md
of Azure/terraform-provider-azapi) or, where the notes are silent, from the release whose
documentation (website/docs/r/*.html.markdown) first lists the argument. An argument used but
not listed fails the test: look its release up and add it. The pin's lower bound must be at
least the newest release any argument needs (finding 2: `~> 4.42` admitted releases that
refuse `kind = "AIServices"` and `azurerm_storage_queue.storage_account_id`).
"""

from __future__ import annotations

import re
from typing import Any

from docs.templates import TERRAFORM, fields, parse_terraform, tf_blocks, tf_resources

V4_0 = "4.0.0"  # in the schema of the first 4.x release, azurerm 4.0.0

# azurerm arguments used that azurerm 4.0.0 already has, by resource; nested blocks as "block.argument".
AZURERM_SINCE_4_0 = {
    "azurerm_service_plan": {"location", "name", "os_type", "resource_group_name", "sku_name", "tags"},
    "azurerm_resource_group": {"location", "name", "tags"},
    "azurerm_user_assigned_identity": {"location", "name", "resource_group_name", "tags"},
    "azurerm_log_analytics_workspace": {"location", "name", "resource_group_name", "retention_in_days", "sku", "tags"},
    "azurerm_application_insights": {"application_type", "location", "name", "resource_group_name", "tags", "workspace_id"},
    "azurerm_storage_account": {
        "access_tier", "account_kind", "account_replication_type", "account_tier", "allow_nested_items_to_be_public",
        "blob_properties", "blob_properties.container_delete_retention_policy",
        "blob_properties.container_delete_retention_policy.days", "blob_properties.delete_retention_policy",
        "blob_properties.delete_retention_policy.days", "blob_properties.versioning_enabled",
        "cross_tenant_replication_enabled", "default_to_oauth_authentication", "https_traffic_only_enabled",
        "infrastructure_encryption_enabled", "local_user_enabled", "location", "min_tls_version", "name", "network_rules",
        "network_rules.bypass", "network_rules.default_action", "public_network_access_enabled",
        "queue_encryption_key_type", "resource_group_name", "sas_policy", "sas_policy.expiration_action",
        "sas_policy.expiration_period", "sftp_enabled", "shared_access_key_enabled", "table_encryption_key_type", "tags",
    },
    "azurerm_storage_container": {"container_access_type", "name"},
    "azurerm_storage_queue": {"name"},
    "azurerm_storage_management_policy": {
        "rule", "rule.actions", "rule.actions.version", "rule.actions.version.delete_after_days_since_creation",
        "rule.actions.base_blob", "rule.actions.base_blob.delete_after_days_since_creation_greater_than",
        "rule.enabled", "rule.filters", "rule.filters.blob_types", "rule.filters.prefix_match", "rule.name", "storage_account_id",
    },
    "azurerm_cognitive_account": {
        "custom_subdomain_name", "identity", "identity.type", "kind", "local_auth_enabled", "location", "name",
        "public_network_access_enabled", "resource_group_name", "sku_name", "tags",
    },
    "azurerm_cognitive_deployment": {
        "cognitive_account_id", "model", "model.format", "model.name", "model.version", "name", "sku", "sku.capacity",
        "sku.name", "version_upgrade_option",
    },
    "azurerm_key_vault": {
        "location", "name", "network_acls", "network_acls.bypass", "network_acls.default_action",
        "public_network_access_enabled", "purge_protection_enabled", "resource_group_name", "sku_name",
        "soft_delete_retention_days", "tags", "tenant_id",
    },
    "azurerm_monitor_diagnostic_setting": {"enabled_log", "enabled_log.category", "log_analytics_workspace_id", "name", "target_resource_id"},
    "azurerm_role_assignment": {"name", "principal_id", "principal_type", "role_definition_id", "scope"},
    "provider azurerm": {
        "features", "features.cognitive_account", "features.cognitive_account.purge_soft_delete_on_destroy",
        "features.key_vault", "features.key_vault.purge_soft_delete_on_destroy", "storage_use_azuread", "subscription_id",
    },
    "data azurerm_client_config": set(),
    "data azurerm_subscription": set(),
}  # fmt: skip
AZURERM_LATER = {
    ("azurerm_storage_container", "storage_account_id"): ("4.9.0", "CHANGELOG-v4 4.9.0 (#27733)"),
    ("azurerm_log_analytics_workspace", "local_authentication_enabled"): ("4.35.0", "docs r/log_analytics_workspace at v4.35.0"),
    ("azurerm_key_vault", "rbac_authorization_enabled"): ("4.42.0", "docs r/key_vault at v4.42.0"),
    ("azurerm_storage_queue", "storage_account_id"): ("4.46.0", "CHANGELOG-v4 4.46.0 (#28752)"),
    ("azurerm_application_insights", "local_authentication_enabled"): ("4.78.0", "docs r/application_insights at v4.78.0 (#32634)"),
    ("provider azurerm", "features.storage"): ("4.9.0", "CHANGELOG-v4 4.9.0 (#27818)"),
    ("provider azurerm", "features.storage.data_plane_available"): ("4.9.0", "CHANGELOG-v4 4.9.0 (#27818)"),
}
# Argument values that a release must know too: {(resource, argument, value): (first release, source)}.
AZURERM_VALUES = {
    ("azurerm_cognitive_account", "kind", "AIServices"): ("4.47.0", "CHANGELOG-v4 4.47.0 (#30423)"),
}
# Deprecated in 4.x for the names above (removed in 5.0): never used.
AZURERM_DEPRECATED = {
    ("azurerm_application_insights", "local_authentication_disabled"): "local_authentication_enabled (4.78.0)",
    ("azurerm_log_analytics_workspace", "local_authentication_disabled"): "local_authentication_enabled (4.35.0)",
    ("azurerm_key_vault", "enable_rbac_authorization"): "rbac_authorization_enabled (4.42.0)",
    ("azurerm_storage_container", "storage_account_name"): "storage_account_id (4.9.0)",
    ("azurerm_storage_queue", "storage_account_name"): "storage_account_id (4.46.0)",
    ("azurerm_storage_account", "enable_https_traffic_only"): "https_traffic_only_enabled (4.0.0)",
}
# azuread (the entra way's app registration, callers.tf): arguments used, all in the schema of 3.0.0,
# the release that named the service principal's application `client_id` (docs r/application,
# r/service_principal, r/app_role_assignment at v3.0.0; the 3.0 upgrade guide for client_id).
AZUREAD_SINCE_3_0 = {
    "azuread_application": {
        "display_name", "sign_in_audience", "identifier_uris", "api", "api.requested_access_token_version", "app_role",
        "app_role.id", "app_role.value", "app_role.display_name", "app_role.description", "app_role.allowed_member_types",
        "app_role.enabled", "web", "web.redirect_uris", "web.implicit_grant", "web.implicit_grant.id_token_issuance_enabled",
        "web.implicit_grant.access_token_issuance_enabled",
    },
    "azuread_service_principal": {"client_id", "app_role_assignment_required"},
    "azuread_app_role_assignment": {"app_role_id", "principal_object_id", "resource_object_id"},
}  # fmt: skip
V3_0 = "3.0.0"
# azapi: what these files use beyond azapi_resource's 2.0 schema.
AZAPI_LATER = {
    "sensitive_body": ("2.4.0", "Azure/terraform-provider-azapi CHANGELOG v2.4.0"),
    'ephemeral "azapi_resource_action"': ("2.3.0", "Azure/terraform-provider-azapi CHANGELOG v2.3.0 (New Ephemeral Resource)"),
}


def _arguments(body: dict[str, Any], prefix: str = "") -> set[str]:
    """Argument paths of a block body ("block.argument" inside nested blocks), meta-arguments left out."""
    found = set()
    for key, value in body.items():
        name = key.strip('"')
        if key.startswith("__") or name in {"count", "for_each", "depends_on", "lifecycle", "provider"}:
            continue
        found.add(prefix + name)
        if isinstance(value, list) and value and all(isinstance(item, dict) and item.get("__is_block__") for item in value):
            for item in value:
                found |= _arguments(item, f"{prefix}{name}.")
    return found


def _used_azurerm() -> dict[str, set[str]]:
    terraform = parse_terraform()
    used: dict[str, set[str]] = {}
    for name, body in tf_resources(terraform).items():
        kind = name.split(".")[0]
        if kind.startswith("azurerm_"):
            used.setdefault(kind, set()).update(_arguments(body))
    for name, body in tf_resources(terraform, "data").items():
        used.setdefault(f"data {name.split('.')[0]}", set()).update(_arguments(body))
    for block in tf_blocks(terraform, "provider"):
        for provider, body in fields(block).items():
            if provider == "azurerm":
                used.setdefault("provider azurerm", set()).update(_arguments(body))
    return used


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _pin(provider: str) -> tuple[int, ...]:
    """The lower bound of a `~> X.Y` constraint (which admits X.Y and up, below X+1)."""
    for block in tf_blocks(parse_terraform(), "terraform"):
        for required in block["required_providers"]:
            spec = fields(required).get(provider)
            if spec:
                constraint = fields(spec)["version"].strip('"')
                match = re.fullmatch(r"~> (\d+\.\d+)", constraint)
                assert match, f"{provider}: pin as ~> MAJOR.MINOR, got {constraint!r}"
                return _version(match.group(1))
    raise AssertionError(f"{provider} is not in required_providers")


def test_every_azurerm_argument_used_is_listed_with_its_first_release() -> None:
    unlisted = {}
    for resource, arguments in _used_azurerm().items():
        known = AZURERM_SINCE_4_0.get(resource, set()) | {argument for (kind, argument) in AZURERM_LATER if kind == resource}
        if arguments - known:
            unlisted[resource] = sorted(arguments - known)
    assert not unlisted, f"look up the first azurerm release with these and list them here: {unlisted}"


def test_no_deprecated_azurerm_argument_is_used() -> None:
    used = _used_azurerm()
    found = {f"{kind}.{argument}": instead for (kind, argument), instead in AZURERM_DEPRECATED.items() if argument in used.get(kind, ())}
    assert not found, f"deprecated in azurerm 4.x, removed in 5.0; use instead: {found}"


def test_azurerm_pin_admits_every_argument_and_value_used() -> None:
    """Finding 2: `~> 4.42` let terraform pick 4.42-4.46, which refuse kind = "AIServices" and storage_account_id on queues."""
    used = _used_azurerm()
    resources = tf_resources(parse_terraform())
    needed = [(version, f"{kind}.{argument} ({source})") for (kind, argument), (version, source) in AZURERM_LATER.items()
              if argument in used.get(kind, ())]  # fmt: skip
    for (kind, argument, value), (version, source) in AZURERM_VALUES.items():
        if any(name.startswith(f"{kind}.") and body.get(argument) == f'"{value}"' for name, body in resources.items()):
            needed.append((version, f"{kind}.{argument} = {value!r} ({source})"))
    assert needed, "the list above should name at least kind = AIServices"
    pin = _pin("azurerm")
    assert pin[0] == _version(V4_0)[0], "the lists above are for azurerm 4.x; check them against the new major's upgrade guide"
    too_new = [why for version, why in needed if _version(version)[:2] > pin]
    assert not too_new, f"azurerm ~> {'.'.join(map(str, pin))} admits releases without: {too_new}"


def test_azapi_pin_admits_what_is_used() -> None:
    text = "\n".join(path.read_text(encoding="utf-8") for path in sorted(TERRAFORM.glob("*.tf")))
    pin = _pin("azapi")
    used = {feature: version for feature, (version, _) in AZAPI_LATER.items() if re.search(rf"(?m)^[^#]*{re.escape(feature)}", text)}
    assert "sensitive_body" in used, "the vault secret is written through sensitive_body"
    assert 'ephemeral "azapi_resource_action"' in used, "the new account's key is read without storing it"
    assert not re.search(r"(?m)^[^#]*provider::azapi::unique_string", text), (
        "azapi's unique_string is not ARM's uniqueString for every input (tests/test_infra_parity.py): names come from uuidv5"
    )
    too_new = [feature for feature, version in used.items() if _version(version)[:2] > pin]
    assert not too_new, f"azapi pin admits releases without {too_new}"



# Resources and blocks that only the storage data plane serves: with data_plane_available = false
# azurerm refuses queue_properties and static_website, and these would need a data role.
DATA_PLANE_ONLY = {"azurerm_storage_blob", "azurerm_storage_share", "azurerm_storage_table", "azurerm_storage_data_lake_gen2_filesystem",
                   "azurerm_storage_account_queue_properties", "azurerm_storage_account_static_website"}  # fmt: skip


def test_every_storage_call_of_terraform_stays_on_arm() -> None:
    """Finding 1: azurerm read the account's queue properties with the deployer's token, which an Owner lacks."""
    terraform = parse_terraform()
    [provider] = [fields(block)["azurerm"] for block in tf_blocks(terraform, "provider") if "azurerm" in fields(block)]
    [features] = provider["features"]
    [storage] = features["storage"]
    assert storage["data_plane_available"] is False
    resources = tf_resources(terraform)
    assert not {name.split(".")[0] for name in resources} & DATA_PLANE_ONLY
    account = resources["azurerm_storage_account.main"]
    assert "queue_properties" not in account and "static_website" not in account
    for name, body in resources.items():
        if name.startswith(("azurerm_storage_container.", "azurerm_storage_queue.")):
            assert "storage_account_id" in body and "storage_account_name" not in body, f"{name}: the ARM form"


def test_every_azuread_argument_used_is_in_the_pinned_major() -> None:
    used: dict[str, set[str]] = {}
    for name, body in tf_resources(parse_terraform()).items():
        kind = name.split(".")[0]
        if kind.startswith("azuread_"):
            used.setdefault(kind, set()).update(_arguments(body))
    unlisted = {kind: sorted(arguments - AZUREAD_SINCE_3_0.get(kind, set())) for kind, arguments in used.items()}
    assert not {k: v for k, v in unlisted.items() if v}, f"look up the first azuread release with these and list them: {unlisted}"
    assert set(used) == set(AZUREAD_SINCE_3_0)
    pin = _pin("azuread")
    assert pin[0] == _version(V3_0)[0] and pin[:2] >= _version(V3_0)[:2], "client_id on azuread_service_principal needs azuread 3.x"
