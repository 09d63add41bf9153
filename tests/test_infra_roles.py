"""Issue 15, findings 5 and 6: one answer to "which roles", the auth ways named alike, calling services, retention.

- The roles table is one generated region of docs/credentials.md (docs/roles.py renders it from the role
  assignments docs/templates.py reads from the templates; tests/test_docs.py fails when the page differs),
  plus the grants the templates cannot make (the deployer's, an existing AI account's, the `key` way's):
  here, every assignment of the templates has its rows and no row stands for one they no longer make.
- The templates offer the app's own AZURE_OPENAI_AUTH names (entra, keyvault) and say why not key.
- Calling services get queue-send and job-record read (key way) or the caller app role (entra way)
  through one list parameter in both templates.
- Retention (IMAGES_RETENTION_DAYS) is a Blob lifecycle rule in both templates, from the same value the app is given.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import get_args

import pytest
from test_infra import parse_bicep

from docs.generate import FILES
from docs.roles import BY_ASSIGNMENT, CALLER, IDENTITIES, OUTSIDE_THE_TEMPLATES, TEMPLATES, render_roles, rows
from docs.templates import (
    INFRA,
    ROOT,
    TERRAFORM,
    bicep_assignments,
    named,
    parse_terraform,
    terraform_assignments,
    tf_locals,
    tf_resources,
    tf_variables,
)
from shared.callers import CALLER_ROLE, OPERATOR_ROLE
from shared.settings import AuthMode, Settings


def test_every_role_assignment_of_the_templates_has_its_rows_in_the_table() -> None:
    """Both ways: an assignment the table does not say, or rows for one the templates no longer make, fail."""
    bicep = {named(a) for a in bicep_assignments(parse_bicep())}
    assert bicep == set(BY_ASSIGNMENT) == {named(a) for a in terraform_assignments()}
    # Every Azure role is shown by its name, never by a GUID the reader would have to look up.
    assert not [a for a in bicep if re.fullmatch(r"[0-9a-f-]{36}", a[1])]


def test_the_table_says_each_identity_and_every_app_role_the_app_checks() -> None:
    table = render_roles(dt.date.min)  # the templates have no date
    shown = rows(terraform_assignments())
    assert [row[1] for row in shown if row[1].startswith("app role")] == [f"app role `{CALLER_ROLE}`", f"app role `{OPERATOR_ROLE}`"]
    assert len(shown) == sum(map(len, BY_ASSIGNMENT.values())) + len(OUTSIDE_THE_TEMPLATES)
    for identity in IDENTITIES:
        assert f"**{identity}**" in table and f"\n| {identity} |" in table
    # By identity, and within one the templates' grants before yours.
    assert [row[0] for row in shown] == sorted((row[0] for row in shown), key=list(IDENTITIES).index)
    for identity in IDENTITIES:
        granted_by = [row[4] for row in shown if row[0] == identity]
        assert granted_by == sorted(granted_by, key=lambda who: who != TEMPLATES), identity


@pytest.mark.parametrize("page", FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_owner_roles_are_named_only_to_compare_with_microsofts_templates(page: Path) -> None:
    """Outside the table, a Data Owner role is only named to compare with Microsoft's templates, never recommended."""
    for paragraph in page.read_text(encoding="utf-8").split("\n\n"):
        assert "Data Owner" not in paragraph or "Microsoft's templates" in paragraph, f"{page.name}: {paragraph[:300]}"


# ---------------------------------------------------------------- the auth ways


def test_the_templates_offer_the_apps_auth_ways_by_their_names_and_say_why_not_key() -> None:
    """Finding 5: the templates said keyless|keyvault, the app entra|keyvault|key."""
    offered = set(get_args(AuthMode)) - {"key"}
    bicep = parse_bicep()[INFRA / "main.bicep"]["parameters"]["authMode"]
    bicep_allowed = next(d["argument"] for d in bicep["decorators"] if d["type"] == "allowed")
    bicep_about = next(d["argument"] for d in bicep["decorators"] if d["type"] == "description")
    variables = tf_variables(parse_terraform())
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
    assert tf_locals(parse_terraform())["app_settings"]["AZURE_OPENAI_AUTH"] == "${var.auth_mode}"


# ---------------------------------------------------------------- calling services


def test_calling_services_are_granted_through_one_list_in_both_templates() -> None:
    """Finding 6: nothing granted the calling services the right to drop messages on the queue."""
    bicep = parse_bicep()[INFRA / "main.bicep"]["parameters"]["callerPrincipalIds"]
    variables = tf_variables(parse_terraform())
    assert (bicep["type"], bicep["default"]) == ("array", [])
    assert (variables["caller_principal_ids"]["type"], variables["caller_principal_ids"]["default"]) == ("${list(string)}", [])
    granted = {(role, scope, conditions) for principal, role, scope, _, conditions in map(named, bicep_assignments(parse_bicep())) if principal == CALLER}
    assert granted == {
        ("Storage Queue Data Message Sender", "job queue", frozenset()),  # both ways: the queue takes no token of the caller's own
        ("Storage Blob Data Reader", "jobs container", frozenset({"key callers"})),  # key way only: it would show every caller's
        (f"app role `{CALLER_ROLE}`", "app registration", frozenset({"entra callers"})),
    }


def test_the_app_roles_are_granted_alike_in_both() -> None:
    """The entra way: one app registration with the two roles the app checks, each granted to its list, in both templates."""
    registration = (INFRA / "app" / "registration.bicep").read_text(encoding="utf-8")
    callers_tf = (TERRAFORM / "callers.tf").read_text(encoding="utf-8")
    for role in (CALLER_ROLE, OPERATOR_ROLE):
        assert f"value: '{role}'" in registration and f'value                = "{role}"' in callers_tf
    assert re.search(r"callerRoles '[^']+' = \[for callerId in callerPrincipalIds: \{\s+appRoleId: callerRoleId", registration)
    assert re.search(r"operatorRoles '[^']+' = \[for operatorId in operatorPrincipalIds: \{\s+appRoleId: operatorRoleId", registration)
    assignments = {name: body for name, body in tf_resources(parse_terraform()).items() if name.startswith("azuread_app_role_assignment.")}
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

    policy = tf_resources(parse_terraform())["azurerm_storage_management_policy.main"]
    tf_rule = next(r for r in policy["rule"] if r["name"] == '"delete-after-retention"')
    assert tf_rule["enabled"] == "${var.retention_days > 0}"
    assert tf_rule["filters"][0]["prefix_match"] == '${[for name in local.app_container_names : "${name}/"]}'
    assert tf_rule["actions"][0]["base_blob"][0]["delete_after_days_since_creation_greater_than"] == "${var.retention_days}"
    variables = tf_variables(parse_terraform())
    assert variables["retention_days"]["default"] == setting.default == 0
    assert f">= {low} && var.retention_days <= {high}" in variables["retention_days"]["validation"][0]["condition"]
    assert tf_locals(parse_terraform())["app_settings"]["IMAGES_RETENTION_DAYS"] == "${tostring(var.retention_days)}"
    assert json.dumps(policy).count("delete-after-retention") == 1
