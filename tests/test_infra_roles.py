"""Issue 15, findings 5 and 6: one answer to "which roles", the auth ways named alike, calling services, retention.

- The roles table of docs/credentials.md (its one copy) is one block, rendered here from
  the templates' role assignments (tests/test_infra_parity.py holds Bicep and Terraform equal) plus the
  grants the templates cannot make (the deployer's, an existing AI account's, the `key` way's), so the
  three documents cannot disagree again, with each other or with the templates.
- The templates offer the app's own AZURE_OPENAI_AUTH names (entra, keyvault) and say why not key.
- Calling services get queue-send and job-record read through one list parameter in both templates.
- Retention (IMAGES_RETENTION_DAYS) is a Blob lifecycle rule in both templates, from the same value the app is given.
"""

from __future__ import annotations

import json
import re
from typing import Any, get_args

import pytest
from test_infra import INFRA, ROOT, TERRAFORM, _fields, _tf_blocks, _tf_locals, _tf_resources, parse_bicep, parse_terraform
from test_infra_parity import Assignment, _bicep_assignments

from shared.callers import CALLER_ROLE, OPERATOR_ROLE
from shared.settings import AuthMode, Settings

DOCUMENTS = [ROOT / "docs" / "credentials.md"]  # the one copy; the other pages link to it
BEGIN = "<!-- roles-table:begin (tests/test_infra_roles.py renders it from the templates) -->"
END = "<!-- roles-table:end -->"

SBDC = "Storage Blob Data Contributor"
APP, CALLER, OPERATOR, DEVELOPER, DEPLOYER = "app", "caller", "operator", "developer", "deployer"
TEMPLATES, YOU = "templates", "you"
APP_CONTAINERS = "containers `images`, `image-jobs`"
QUEUES = "queues `image-jobs`, `image-jobs-poison`, the results queue if any"

# Each role assignment of the templates (principal, role, scope, loop, conditions) and the rows it stands for.
# A loop over containers is shown per user of those containers: the app, the Functions host, the platform.
Row = tuple[str, str, str, str, str, str]  # identity, role, scope, when, granted by, for what
BY_ASSIGNMENT: dict[tuple[str, str, str, str, frozenset[str]], list[Row]] = {
    (APP, SBDC, "container", "every container", frozenset()): [
        (APP, SBDC, APP_CONTAINERS, "always", TEMPLATES, "the app: images, their records, job records"),
        (APP, SBDC, "containers `azure-webjobs-hosts`, `azure-webjobs-secrets`", "always", TEMPLATES, "the Functions host: its locks and function keys"),
        (APP, SBDC, "the deployment package container", "always", TEMPLATES, "the platform: reads the app's package"),
    ],
    (APP, "Storage Blob Data Reader", "account", "one", frozenset()): [
        (APP, "Storage Blob Data Reader", "storage account", "always", TEMPLATES, "the Functions host: its storage health probe lists containers"),
    ],
    (APP, "Storage Blob Delegator", "account", "one", frozenset()): [
        (APP, "Storage Blob Delegator", "storage account", "always", TEMPLATES, "the app: the user delegation key behind the read-only links"),
    ],
    (APP, "Storage Queue Data Contributor", "queue", "every queue", frozenset()): [
        (APP, "Storage Queue Data Contributor", QUEUES, "always", TEMPLATES, "the Functions host's trigger and poison queue; the app's `:submit` and results"),
    ],
    (APP, "Monitoring Metrics Publisher", "app insights", "one", frozenset()): [
        (APP, "Monitoring Metrics Publisher", "Application Insights", "always", TEMPLATES, "the Functions host: telemetry with Entra ID"),
    ],
    (APP, "Key Vault Secrets User", "secret", "one", frozenset({"keyvault way"})): [
        (APP, "Key Vault Secrets User", "the secret `azure-openai-api-key`", "`keyvault` way", TEMPLATES, "the app: reads the model key"),
    ],
    (APP, "Cognitive Services OpenAI User", "ai account", "one", frozenset({"entra way, account created"})): [
        (APP, "Cognitive Services OpenAI User", "the AI account", "`entra` way, account created by the templates", TEMPLATES, "the app: an Entra ID token for the model"),
    ],
    (CALLER, "Storage Queue Data Message Sender", "job queue", "every caller", frozenset()): [
        (CALLER, "Storage Queue Data Message Sender", "queue `image-jobs`", "listed in `callerPrincipalIds` / `caller_principal_ids`", TEMPLATES, "drops jobs on the queue, nothing else"),
    ],
    (CALLER, "Storage Blob Data Reader", "jobs container", "every caller", frozenset({"key callers"})): [
        (CALLER, "Storage Blob Data Reader", "container `image-jobs`", "listed, key way (`callerAuth` / `caller_auth`)", TEMPLATES, "reads job records (the status of its jobs); the entra way leaves it out, it would show every caller's"),
    ],
    (DEVELOPER, SBDC, "container", "app and host containers", frozenset({"developer"})): [
        (DEVELOPER, SBDC, f"{APP_CONTAINERS}, `azure-webjobs-hosts`, `azure-webjobs-secrets`", "`principalId` / `principal_id` given", TEMPLATES, "runs the app and host locally against the cloud"),
    ],
    (DEVELOPER, "Storage Blob Data Reader", "account", "one", frozenset({"developer"})): [
        (DEVELOPER, "Storage Blob Data Reader", "storage account", "`principalId` / `principal_id` given", TEMPLATES, "the same, for local runs"),
    ],
    (DEVELOPER, "Storage Blob Delegator", "account", "one", frozenset({"developer"})): [
        (DEVELOPER, "Storage Blob Delegator", "storage account", "`principalId` / `principal_id` given", TEMPLATES, "the same, for local runs"),
    ],
    (DEVELOPER, "Storage Queue Data Contributor", "queue", "every queue", frozenset({"developer"})): [
        (DEVELOPER, "Storage Queue Data Contributor", QUEUES, "`principalId` / `principal_id` given", TEMPLATES, "the same; also `az storage message put`"),
    ],
    (DEVELOPER, "Key Vault Secrets User", "secret", "one", frozenset({"developer", "keyvault way"})): [
        (DEVELOPER, "Key Vault Secrets User", "the secret `azure-openai-api-key`", "given, `keyvault` way", TEMPLATES, "the same, for local runs"),
    ],
    (DEVELOPER, "Cognitive Services OpenAI User", "ai account", "one", frozenset({"developer", "entra way, account created"})): [
        (DEVELOPER, "Cognitive Services OpenAI User", "the AI account", "given, `entra` way, account created by the templates", TEMPLATES, "the same, for local runs"),
    ],
}
# The app roles of the entra way's app registration (Microsoft Graph, not Azure RBAC): granted by
# both templates (test_the_app_roles_are_granted_alike_in_both checks it), shown in the same table.
APP_ROLES: list[Row] = [
    (CALLER, "app role `Images.Caller`", "the app registration `images-<token>`", "listed in `callerPrincipalIds` / `caller_principal_ids`, entra way", TEMPLATES, "calls the HTTP API with an Entra ID token; sees its own jobs, images and records"),
    (OPERATOR, "app role `Images.Operator`", "the app registration `images-<token>`", "listed in `operatorPrincipalIds` / `operator_principal_ids`, and `principalId` / `principal_id`, entra way", TEMPLATES, "sees every caller's jobs, images and records; runs infra/smoke_test.py"),
]
# What the templates cannot grant, each with why; shown in the same table.
OUTSIDE_THE_TEMPLATES: list[Row] = [
    (APP, "Cognitive Services OpenAI User", "an existing AI account", "`entra` way with an existing endpoint", YOU, "the templates cannot reach an account they did not create"),
    (APP, "Key Vault Secrets User", "the vault (or the secret)", "`key` way with a Key Vault reference", YOU, "the platform resolves the reference with the app's identity; the templates do not offer `key`"),
    (CALLER, "none: the function key", "the function app", "key way: calling the HTTP API", YOU, "header `x-functions-key`, from `az functionapp keys list`"),
    (CALLER, "Storage Queue Data Message Processor", "the results queue", "`IMAGES_RESULTS_QUEUE` set", YOU, "reads and deletes result notifications"),
    (DEPLOYER, "Contributor and Role Based Access Control Administrator (or Owner)", "subscription", "always", YOU, "creates the resource group, the resources and the role assignments"),
]
IDENTITIES = {
    APP: "**app**: the app's user-assigned managed identity (`id-<token>`), which the app, the Functions host and the platform all use",
    CALLER: "**caller**: a service that calls this one (its managed identity)",
    OPERATOR: "**operator**: a person or service that looks after every caller's work (entra way, optional)",
    DEVELOPER: "**developer**: you or a CI principal, for local runs against the cloud (optional)",
    DEPLOYER: "**deployer**: whoever runs `azd up`, `az deployment` or `terraform apply`",
}


def role_names() -> dict[str, str]:
    text = (INFRA / "app" / "rbac.bicep").read_text(encoding="utf-8")
    return {guid: name.strip() for guid, name in re.findall(r"(?m)^var \w+ = '([0-9a-f-]{36})' // (.+)$", text)}


def named(assignment: Assignment) -> tuple[str, str, str, str, frozenset[str]]:
    principal, guid, scope, loop, conditions = assignment
    return principal, role_names()[guid], scope, loop, conditions


def render_roles_table() -> str:
    """The block the three documents share: who the identities are, then every role each gets."""
    present = {named(a) for a in _bicep_assignments()}
    rows = [row for key, shown in BY_ASSIGNMENT.items() if key in present for row in shown]
    order = list(IDENTITIES)
    rows = sorted([*rows, *APP_ROLES, *OUTSIDE_THE_TEMPLATES], key=lambda row: (order.index(row[0]), row[4] != TEMPLATES))
    lines = ["Identities: " + "; ".join(IDENTITIES.values()) + ".", "", "| Identity | Role | Scope | When | Granted by | For |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def test_every_role_assignment_of_the_templates_is_in_the_table() -> None:
    assert {named(a) for a in _bicep_assignments()} == set(BY_ASSIGNMENT)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_the_roles_table_is_the_same_in_every_document(document: Any) -> None:
    """Finding 5: README, docs/credentials.md and infra/README.md gave three answers to "which roles"; now one page has it."""
    text = document.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, f"{document.name} needs the roles table between {BEGIN} and {END}"
    shown = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert shown == render_roles_table(), f"{document.name}: the roles table is out of date; replace it with:\n{render_roles_table()}"
    # Outside the table, Owner is only named to compare with Microsoft's templates, never recommended.
    for paragraph in text.replace(shown, "").split("\n\n"):
        assert "Data Owner" not in paragraph or "Microsoft's templates" in paragraph, f"{document.name}: {paragraph[:300]}"


# ---------------------------------------------------------------- the auth ways


def test_the_templates_offer_the_apps_auth_ways_by_their_names_and_say_why_not_key() -> None:
    """Finding 5: the templates said keyless|keyvault, the app entra|keyvault|key."""
    offered = set(get_args(AuthMode)) - {"key"}
    bicep = parse_bicep()[INFRA / "main.bicep"]["parameters"]["authMode"]
    bicep_allowed = next(d["argument"] for d in bicep["decorators"] if d["type"] == "allowed")
    bicep_about = next(d["argument"] for d in bicep["decorators"] if d["type"] == "description")
    variables = {k: v for block in _tf_blocks(parse_terraform(), "variable") for k, v in _fields(block).items()}
    terraform = variables["auth_mode"]
    assert set(bicep_allowed) == offered == set(re.findall(r'"(\w+)"', terraform["validation"][0]["condition"]))
    assert bicep["default"] == "entra" == terraform["default"].strip('"')
    for about in (bicep_about, terraform["description"]):
        assert "key is not offered" in about and "app setting" in about
    assert re.search(r"\bkey\W*\s+is not offered", (ROOT / "docs" / "credentials.md").read_text(encoding="utf-8"))
    for path in (INFRA / "main.parameters.json", TERRAFORM / "main.tfvars.json"):
        assert "${IMAGES_AUTH_MODE=entra}" in path.read_text(encoding="utf-8")
    # What the app is told is the way chosen, by the same name.
    assert "AZURE_OPENAI_AUTH: authMode\n" in (INFRA / "app" / "function.bicep").read_text(encoding="utf-8")
    assert _tf_locals(parse_terraform())["app_settings"]["AZURE_OPENAI_AUTH"] == "${var.auth_mode}"


# ---------------------------------------------------------------- calling services


def test_calling_services_are_granted_through_one_list_in_both_templates() -> None:
    """Finding 6: nothing granted the calling services the right to drop messages on the queue."""
    bicep = parse_bicep()[INFRA / "main.bicep"]["parameters"]["callerPrincipalIds"]
    variables = {k: v for block in _tf_blocks(parse_terraform(), "variable") for k, v in _fields(block).items()}
    assert (bicep["type"], bicep["default"]) == ("array", [])
    assert (variables["caller_principal_ids"]["type"], variables["caller_principal_ids"]["default"]) == ("${list(string)}", [])
    granted = {(role, scope) for principal, role, scope, _, _ in map(named, _bicep_assignments()) if principal == CALLER}
    assert granted == {("Storage Queue Data Message Sender", "job queue"), ("Storage Blob Data Reader", "jobs container")}


def test_the_app_roles_are_granted_alike_in_both() -> None:
    """The entra way: one app registration with the two roles the app checks, each granted to its list, in both templates."""
    registration = (INFRA / "app" / "registration.bicep").read_text(encoding="utf-8")
    callers_tf = (TERRAFORM / "callers.tf").read_text(encoding="utf-8")
    for role in (CALLER_ROLE, OPERATOR_ROLE):
        assert f"value: '{role}'" in registration and f'value                = "{role}"' in callers_tf
    assert re.search(r"callerRoles '[^']+' = \[for callerId in callerPrincipalIds: \{\s+appRoleId: callerRoleId", registration)
    assert re.search(r"operatorRoles '[^']+' = \[for operatorId in operatorPrincipalIds: \{\s+appRoleId: operatorRoleId", registration)
    assignments = {name: body for name, body in _tf_resources(parse_terraform()).items() if name.startswith("azuread_app_role_assignment.")}
    assert assignments["azuread_app_role_assignment.caller"]["app_role_id"] == "${local.caller_role_id}"
    assert "var.caller_principal_ids" in assignments["azuread_app_role_assignment.caller"]["for_each"]
    assert assignments["azuread_app_role_assignment.operator"]["app_role_id"] == "${local.operator_role_id}"
    assert "local.operator_ids" in assignments["azuread_app_role_assignment.operator"]["for_each"]
    assert "appRoleAssignmentRequired: true" in registration and "app_role_assignment_required = true" in callers_tf


# ---------------------------------------------------------------- retention


def _bicep_retention_rule() -> str:
    text = (INFRA / "core" / "storage.bicep").read_text(encoding="utf-8")
    found = re.search(r"(?ms)^\s+\{\s+name: 'delete-after-retention'$.*?^          \}$", text)
    assert found, "core/storage.bicep: the lifecycle rule 'delete-after-retention'"
    return found.group()


def test_retention_is_a_lifecycle_rule_in_both_templates_from_the_value_the_app_gets() -> None:
    """Finding 4: a retention setting documented with a Blob lifecycle rule in the templates."""
    setting = Settings.model_fields["retention_days"]
    low, high = (next(getattr(m, bound) for m in setting.metadata if hasattr(m, bound)) for bound in ("ge", "le"))
    rule = _bicep_retention_rule()
    assert "enabled: retentionDays > 0" in rule and "prefixMatch: retentionPrefixes" in rule
    assert re.search(r"baseBlob: \{\s+delete: \{\s+daysAfterCreationGreaterThan: retentionDays", rule)
    main = (INFRA / "main.bicep").read_text(encoding="utf-8")
    assert "retentionPrefixes: [for containerName in appContainerNames: '${containerName}/']" in main
    decorators = {d["type"]: d["argument"] for d in parse_bicep()[INFRA / "main.bicep"]["parameters"]["retentionDays"]["decorators"]}
    assert (decorators["min_value"], decorators["max_value"]) == (low, high)
    assert "IMAGES_RETENTION_DAYS: string(retentionDays)" in (INFRA / "app" / "function.bicep").read_text(encoding="utf-8")

    policy = _tf_resources(parse_terraform())["azurerm_storage_management_policy.main"]
    tf_rule = next(r for r in policy["rule"] if r["name"] == '"delete-after-retention"')
    assert tf_rule["enabled"] == "${var.retention_days > 0}"
    assert tf_rule["filters"][0]["prefix_match"] == '${[for name in local.app_container_names : "${name}/"]}'
    assert tf_rule["actions"][0]["base_blob"][0]["delete_after_days_since_creation_greater_than"] == "${var.retention_days}"
    variables = {k: v for block in _tf_blocks(parse_terraform(), "variable") for k, v in _fields(block).items()}
    assert variables["retention_days"]["default"] == setting.default == 0
    assert f">= {low} && var.retention_days <= {high}" in variables["retention_days"]["validation"][0]["condition"]
    assert _tf_locals(parse_terraform())["app_settings"]["IMAGES_RETENTION_DAYS"] == "${tostring(var.retention_days)}"
    assert json.dumps(policy).count("delete-after-retention") == 1
