"""The infrastructure templates read as data: one reader for the generated docs and the infrastructure tests.

Terraform (``infra/terraform/*.tf``) is parsed here with python-hcl2. Bicep is parsed by pycep,
checkov's own parser, which lives in ``.venv-checkov`` beside checkov's pins (tests/test_infra.py
runs it there), so the Bicep readers take that parse as their argument.

The role assignments of each template are read into one shape, ``Assignment``: (principal, role,
scope, loop, conditions), where the role is an Azure role's GUID or an app role of the entra way's
registration (``app role `Images.Caller```), and scope, loop and conditions are named alike for
both templates (the tables below say how each spells them). tests/test_infra_parity.py holds the
two sets equal; docs/roles.py renders the roles table from Terraform's, so ``python -m
docs.generate`` needs only the project's own virtual environment.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
TERRAFORM = INFRA / "terraform"
TERRAFORM_FILES = sorted(TERRAFORM.glob("*.tf"))
RBAC_BICEP = INFRA / "app" / "rbac.bicep"

Assignment = tuple[str, str, str, str, frozenset[str]]  # principal, role, scope, loop, conditions


# --- Terraform: python-hcl2 -------------------------------------------------------------------------


def unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals and block labels."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def plain(value: Any) -> Any:
    """A Terraform value as Bicep's parser gives it: strings without their quotes, in dicts and lists too."""
    if isinstance(value, dict):
        return {plain(key): plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return unquote(value)


def fields(block: dict[str, Any]) -> dict[str, Any]:
    """A parsed block's fields by their unquoted names (python-hcl2's ``__start_line__`` and friends left out)."""
    return {unquote(k): v for k, v in block.items() if not k.startswith("__")}


@functools.cache
def parse_terraform() -> dict[str, dict[str, Any]]:
    """Every .tf file by its name, parsed once per process."""
    if not TERRAFORM_FILES:
        raise FileNotFoundError(f"no Terraform files under {TERRAFORM}")
    parsed = {}
    for path in TERRAFORM_FILES:
        with path.open(encoding="utf-8") as handle:
            parsed[path.name] = hcl2.load(handle)
    return parsed


def tf_blocks(terraform: dict[str, dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Every top-level block of a kind (``resource``, ``locals``, ``variable``, ...) of every file."""
    return [block for doc in terraform.values() for block in doc.get(kind, [])]


def tf_locals(terraform: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every local value, by name."""
    return {k: v for block in tf_blocks(terraform, "locals") for k, v in fields(block).items()}


def tf_variables(terraform: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every input variable's block, by name."""
    return {k: v for block in tf_blocks(terraform, "variable") for k, v in fields(block).items()}


def tf_resources(terraform: dict[str, dict[str, Any]], kind: str = "resource") -> dict[str, dict[str, Any]]:
    """{"type.name": body} for every resource (or data) block."""
    found = {}
    for block in tf_blocks(terraform, kind):
        for rtype, named in fields(block).items():
            for name, body in fields(named).items():
                found[f"{rtype}.{name}"] = body
    return found


# --- role assignments -------------------------------------------------------------------------------

# Scopes, loops and conditions, spelled the Bicep way and the Terraform way, named alike.
BICEP_SCOPES = {"containers": "container", "storageAccount": "account", "queues": "queue",
                "applicationInsights": "app insights", "vault": "secret", "openAiAccount": "ai account",
                "jobQueue": "job queue", "jobsContainer": "jobs container", "servicePrincipal": "app registration"}  # fmt: skip
# The first needle found names the scope, so the particular ones (one queue, one container) come first.
TERRAFORM_SCOPES = {"azurerm_storage_queue.main[var.queue_name]": "job queue", "azurerm_storage_container.main[var.jobs_container_name]": "jobs container",
                    "azurerm_storage_container": "container", "azurerm_storage_account": "account", "azurerm_storage_queue": "queue",
                    "azurerm_application_insights": "app insights", "local.secret_scope": "secret", "azapi_resource.ai_account": "ai account",
                    "azuread_service_principal.callers": "app registration"}  # fmt: skip
BICEP_LOOPS = {"writableContainers": "every container", "developerContainers": "app and host containers", "queueNames": "every queue",
               "callerPrincipalIds": "every caller", "operatorPrincipalIds": "every operator"}  # fmt: skip
TERRAFORM_LOOPS = {"local.container_names": "every container", "local.developer_containers": "app and host containers",
                   "local.queue_names": "every queue", "var.caller_principal_ids": "every caller", "local.operator_ids": "every operator"}  # fmt: skip
BICEP_CONDITIONS = {"withKeyVault": "keyvault way", "withOpenAiUser": "entra way, account created", "withDeveloper": "developer",
                    "withCallerJobReader": "key callers", "useEntraCallers": "entra callers"}  # fmt: skip
TERRAFORM_CONDITIONS = {"local.use_key_vault": "keyvault way", "local.with_openai_user": "entra way, account created",
                        "local.with_developer": "developer", "local.with_caller_job_reader": "key callers",
                        "local.use_entra_callers": "entra callers"}  # fmt: skip
_BICEP_PRINCIPALS = {"principalId": "app", "developerPrincipalId": "developer", "callerId": "caller", "operatorId": "operator"}
_TERRAFORM_PRINCIPALS = {"${local.app_principal_id}": "app", "${var.principal_id}": "developer", "${each.value}": "caller"}
# Each role rbac.bicep grants: `var name = 'GUID' // Role Name`.
_ROLE_VAR = re.compile(r"(?m)^var (\w+) = '([0-9a-f-]{36})'(?: // (.+))?$")


def bicep_role_ids() -> dict[str, str]:
    """Bicep variable -> Azure role GUID, as infra/app/rbac.bicep declares each role it grants."""
    return {var: guid for var, guid, _ in _ROLE_VAR.findall(RBAC_BICEP.read_text(encoding="utf-8"))}


def role_names() -> dict[str, str]:
    """Azure role GUID -> role name, as infra/app/rbac.bicep names each in a comment beside its GUID."""
    return {guid: name.strip() for _, guid, name in _ROLE_VAR.findall(RBAC_BICEP.read_text(encoding="utf-8")) if name.strip()}


def named(assignment: Assignment) -> Assignment:
    """The assignment with its Azure role by name instead of GUID (an app role is named already)."""
    principal, role, scope, loop, conditions = assignment
    return principal, role_names().get(role, role), scope, loop, conditions


def _app_role(value: str) -> str:
    return f"app role `{value}`"


def bicep_resources(parsed: Mapping[Path, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{file:symbol: resource} for every resource the parsed Bicep files create (not `existing` ones)."""
    found = {}
    for path, ast in parsed.items():
        for name, resource in ast.get("resources", {}).items():
            if not resource.get("existing"):
                found[f"{path.name}:{name}"] = resource
    return found


def _bicep_module_conditions(parsed: Mapping[Path, dict[str, Any]]) -> dict[str, str]:
    """File name -> the condition main.bicep deploys its module under ("" when always)."""
    main = next(ast for path, ast in parsed.items() if path.name == "main.bicep")
    return {Path(m["detail"]["path"]).name: str(m["config"].get("condition") or "") for m in main.get("modules", {}).values()}


def bicep_assignments(parsed: Mapping[Path, dict[str, Any]]) -> set[Assignment]:
    """Every role the Bicep files grant: Azure role assignments and the registration's app role assignments."""
    guids = bicep_role_ids()
    module_conditions = _bicep_module_conditions(parsed)
    resources = bicep_resources(parsed)
    app_roles = {role["id"]: role["value"] for r in resources.values() if r["type"] == "Microsoft.Graph/applications" for role in r["config"]["appRoles"]}
    found = set()
    for where, resource in resources.items():
        outer = resource["config"]
        config = outer.get("config", outer)
        if resource["type"] == "Microsoft.Authorization/roleAssignments":
            principal = config["properties"]["principalId"]
            role = guids[config["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]]
            scope_text = json.dumps(config["scope"])
        elif resource["type"] == "Microsoft.Graph/appRoleAssignedTo":
            principal, role, scope_text = config["principalId"], _app_role(app_roles[config["appRoleId"]]), json.dumps(config["resourceId"])
        else:
            continue
        loop = outer["loop_type"]["detail"]["array_name"] if "loop_type" in outer else ""
        condition = f"{outer.get('condition')} {module_conditions.get(where.split(':')[0], '')}"
        scope = next(kind for needle, kind in BICEP_SCOPES.items() if f'"{needle}"' in scope_text)
        conditions = frozenset(kind for flag, kind in BICEP_CONDITIONS.items() if flag in condition)
        found.add((_BICEP_PRINCIPALS[principal], role, scope, BICEP_LOOPS.get(loop, "one"), conditions))
    return found


def terraform_assignments(terraform: dict[str, dict[str, Any]] | None = None) -> set[Assignment]:
    """Every role the Terraform files grant: azurerm role assignments and azuread app role assignments."""
    terraform = terraform or parse_terraform()
    resources = tf_resources(terraform)
    guids = {key: value.strip('"') for key, value in fields(tf_locals(terraform)["roles"]).items()}
    app_roles = {role["id"]: unquote(role["value"]) for name, body in resources.items() if name.startswith("azuread_application.") for role in body["app_role"]}
    found = set()
    for name, body in resources.items():
        repeat = str(body.get("for_each", "")) + str(body.get("count", ""))
        loop = next((kind for needle, kind in TERRAFORM_LOOPS.items() if needle in repeat), "one")
        if name.startswith("azurerm_role_assignment."):
            role = guids[re.fullmatch(r"\$\{local\.role_id\.(\w+)\}", body["role_definition_id"]).group(1)]  # type: ignore[union-attr]
            principal = _TERRAFORM_PRINCIPALS[body["principal_id"]]
            scope_text = body["scope"]
        elif name.startswith("azuread_app_role_assignment."):
            role, principal, scope_text = _app_role(app_roles[body["app_role_id"]]), loop.removeprefix("every "), body["resource_object_id"]
        else:
            continue
        scope = next(kind for needle, kind in TERRAFORM_SCOPES.items() if needle in scope_text)
        conditions = frozenset(kind for flag, kind in TERRAFORM_CONDITIONS.items() if flag in repeat)
        found.add((principal, role, scope, loop, conditions))
    return found
