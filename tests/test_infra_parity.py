"""Bicep and Terraform describe one system: the same names, resources, roles and ordering.

tests/test_infra.py already compares the app settings and outputs of the two. Here:

- names: both derive every resource name from one token, ARM's uniqueString of the
  subscription id, environment and location (Terraform through azapi's unique_string, which
  is ARM's function). The test evaluates both naming schemes, from the templates' own source,
  for sample environments, and compares the results;
- resources: the same Azure resource types, and audit logs for the same things;
- roles: the same (principal, role, scope, condition) assignments;
- ordering: the function app waits for every role of its identity in both;
- `terraform fmt -check`, when a terraform binary is on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from arm_functions import ARM_GUID_NAMESPACE, arm_guid, arm_resource_id, arm_unique_string, azapi_unique_string
from test_infra import parse_bicep

from docs.templates import (
    INFRA,
    TERRAFORM,
    bicep_assignments,
    bicep_resources,
    bicep_role_ids,
    parse_terraform,
    terraform_assignments,
    tf_locals,
    tf_resources,
)

# ---------------------------------------------------------------- ARM's naming functions

AI_ACCOUNT = "azapi_resource.ai_account"  # the Terraform resource of the AI account

# The example and a few subscriptions, all in the same environment and region.
SUBSCRIPTIONS = [
    "00000000-0000-0000-0000-000000000000",
    "2b0c9f1e-6a53-4d1e-9a9c-0f3f1d5e7c21",
    "31e9f9a0-9fd2-4294-a0a3-0101246d9700",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # Azure/terraform-provider-azapi internal/services/functions/unique_string_function_test.go and its docs
        (("/subscriptions/00000000-0000-0000-0000-000000000000", "resource-id"), "cwvxuqg24sifi"),
        (("fu",), "6rkxbspxjmsho"),
        (("fubar",), "cj2xpqsiwjfne"),
        (("fu", "bar"), "q5wxoscxs5j6k"),
        (("/subscriptions/12345678-1234-1234-1234-123456789012/resourceGroups/my-rg", "Microsoft.Storage/storageAccounts"), "z22rah77jfqry"),
        # outputs of Bicep's uniqueString() recorded in a public port (uniquestring.sh, "verified against Bicep")
        (("test",), "rbgf3xv4ufgzg"),
        (("hello", "world"), "a7wkljktk6wne"),
        (("abc",), "cgtzqvhu4i23s"),
        (("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/my-rg",), "bmg7c6xu4tw46"),
        (("foo", "bar", "baz"), "xzi4ioaxtmth4"),
        # "tyeth" through Azure.Deployments.Expression, ARM's own evaluator (StackOverflow 43295720)
        (("tyeth",), "zcztcwvu6iyg6"),
        # microsoft/commercial-marketplace-offer-deploy, ArmFunctionsTests "valueFromArmTemplate", evaluated by
        # Azure.Deployments.Expression: a 6-byte tail whose second word has its top bit set, the case azapi gets wrong
        (("/subscriptions/31e9f9a0-9fd2-4294-a0a3-0101246d9700/resourceGroups/rg-modm201-20230913120256/providers/"
          "Microsoft.Compute/virtualMachines/bobjacmodm201",), "yvjxno3je5on2"),
    ],
)  # fmt: skip
def test_unique_string_is_arms(values: tuple[str, ...], expected: str) -> None:
    """The implementation the tests reason with is ARM's function, not a look-alike."""
    assert arm_unique_string(*values) == expected


def test_azapi_unique_string_differs_from_arms_for_the_readme_example() -> None:
    """Why Terraform cannot name resources with azapi's unique_string and get Bicep's uniqueString names.

    azapi's own test vectors all agree with ARM (none has a 5-7 byte tail with the top bit set), but the
    environment `images-dev` in `eastus2` joins to 70 bytes (6 modulo 8) whose tail word does, for every
    subscription: the two tools would name every resource differently.
    """
    for values in (("/subscriptions/00000000-0000-0000-0000-000000000000", "resource-id"), ("fu", "bar"), ("fubar",)):
        assert azapi_unique_string(*values) == arm_unique_string(*values)
    public = "/subscriptions/31e9f9a0-9fd2-4294-a0a3-0101246d9700/resourceGroups/rg-modm201-20230913120256/providers/Microsoft.Compute/virtualMachines/bobjacmodm201"
    assert azapi_unique_string(public) != "yvjxno3je5on2" == arm_unique_string(public)
    for subscription in SUBSCRIPTIONS:
        values = (f"/subscriptions/{subscription}", "images-dev", "eastus2")
        assert azapi_unique_string(*values) != arm_unique_string(*values), subscription


def test_arm_guid_is_a_version_5_uuid_terraform_computes_too() -> None:
    """ARM's guid() is uuidv5 in ARM's namespace; Terraform's own uuidv5() gives the same for every vector."""
    vectors = [(f"/subscriptions/{subscription}", "images-dev", "eastus2") for subscription in SUBSCRIPTIONS]
    vectors += [("/subscriptions/2b0c9f1e-6a53-4d1e-9a9c-0f3f1d5e7c21", "prod", "swedencentral"), ("a", "b", "c")]
    expected = [arm_guid(*values) for values in vectors]
    assert all(uuid.UUID(value).version == 5 for value in expected)
    assert len(set(expected)) == len(expected)
    terraform = _terraform_console()
    if terraform is None:
        pytest.skip("no terraform binary on PATH: Terraform's uuidv5() is compared where there is one")
    lines = [f'uuidv5("{ARM_GUID_NAMESPACE}", {json.dumps("-".join(values))})' for values in vectors]
    assert terraform(lines) == expected


def _terraform_console() -> Callable[..., list[Any]] | None:
    """Evaluate expressions with the real terraform binary, in an empty configuration (no provider needed)."""
    binary = shutil.which("terraform")
    if binary is None:
        return None

    def evaluate(expressions: list[str], files: Mapping[str, str] | None = None) -> list[Any]:
        with tempfile.TemporaryDirectory() as folder:
            for name, text in (files or {"main.tf": ""}).items():
                (Path(folder) / name).write_text(text, encoding="utf-8")
            # One line: the console prints only its last result when read from a pipe.
            line = f"jsonencode([{', '.join(expressions)}])\n"
            run = subprocess.run(
                [binary, "console"], input=line, cwd=folder, capture_output=True, text=True, timeout=120, check=False,
                env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "CHECKPOINT_DISABLE": "1"},
            )  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        values: list[Any] = json.loads(json.loads(run.stdout.strip()))
        return values

    return evaluate


# ---------------------------------------------------------------- a small evaluator for name expressions

_TOKEN = re.compile(r"\s*(::|==|!=|[()\[\].,?:}]|[A-Za-z_]\w*(?:::[A-Za-z_]\w*)*|\d+|'|\")")


class Expression:
    """Evaluates the expression subset the templates use for names, in Bicep or Terraform syntax.

    Strings ('...' in Bicep, "..." in Terraform) with ${...} interpolation, names and member
    access, calls, indexing, list literals, ==, != and ?:. ``resolve`` gives the value of a
    bare name; ``functions`` the callables by name.
    """

    def __init__(self, source: str, resolve: Callable[[str], Any], functions: Mapping[str, Callable[..., Any]]) -> None:
        self.source, self.pos, self.resolve, self.functions = source, 0, resolve, functions

    def value(self) -> Any:
        result = self._ternary()
        assert not self.source[self.pos :].strip(), f"cannot evaluate {self.source!r} past {self.source[self.pos :]!r}"
        return result

    def _peek(self) -> str:
        match = _TOKEN.match(self.source, self.pos)
        return match.group(1) if match else ""

    def _take(self, expected: str | None = None) -> str:
        match = _TOKEN.match(self.source, self.pos)
        assert match, f"cannot read {self.source[self.pos :]!r}"
        if expected is not None:
            assert match.group(1) == expected, f"expected {expected!r} in {self.source!r} at {self.pos}"
        self.pos = match.end()
        return match.group(1)

    def _ternary(self) -> Any:
        condition = self._comparison()
        if self._peek() != "?":
            return condition
        self._take("?")
        yes = self._ternary()
        self._take(":")
        no = self._ternary()
        return yes if condition else no

    def _comparison(self) -> Any:
        left = self._postfix()
        if self._peek() in ("==", "!="):
            operator = self._take()
            right = self._postfix()
            return (left == right) if operator == "==" else (left != right)
        return left

    def _postfix(self) -> Any:
        value = self._primary()
        while self._peek() in ("(", ".", "["):
            token = self._take()
            if token == "(":
                value = value(*self._items(")"))
            elif token == ".":
                value = value[self._take()]
            else:
                value = value[self._ternary()]
                self._take("]")
        return value

    def _primary(self) -> Any:
        token = self._take()
        if token in ("'", '"'):
            return self._string(token)
        if token == "[":
            return self._items("]")
        if token == "(":
            value = self._ternary()
            self._take(")")
            return value
        if token.isdigit():
            return int(token)
        return self.functions[token] if token in self.functions else self.resolve(token)

    def _items(self, closing: str) -> list[Any]:
        items: list[Any] = []
        while self._peek() != closing:
            items.append(self._ternary())
            if self._peek() == ",":
                self._take(",")
        self._take(closing)
        return items

    def _string(self, quote: str) -> str:
        parts = []
        while not self.source.startswith(quote, self.pos):
            if self.source.startswith("${", self.pos):
                self.pos += 2
                parts.append(str(self._ternary()))
                self._take("}")
            else:
                parts.append(self.source[self.pos])
                self.pos += 1
        self.pos += 1
        return "".join(parts)



class Scope(dict[str, Any]):
    """Names evaluated on first use from their source (a Bicep var, a Terraform local)."""

    def __init__(self, sources: Mapping[str, str], evaluate: Callable[[str], Any]) -> None:
        super().__init__()
        self.sources, self.evaluate = sources, evaluate

    def __missing__(self, name: str) -> Any:
        self[name] = self.evaluate(self.sources[name])
        return self[name]


SAMPLES = [
    {"subscription": subscription, "environment": "images-dev", "location": "eastus2"} for subscription in SUBSCRIPTIONS
] + [{"subscription": "2b0c9f1e-6a53-4d1e-9a9c-0f3f1d5e7c21", "environment": "prod", "location": "swedencentral"}]

BICEP_FUNCTIONS_EVALUATED: dict[str, Callable[..., Any]] = {
    "toLower": str.lower,
    "guid": arm_guid,
    "replace": lambda value, old, new: value.replace(old, new),
    "take": lambda value, count: value[:count],
    "empty": lambda value: not value,
    "loadJsonContent": lambda path: json.loads((INFRA / path).read_text(encoding="utf-8")),
}
TERRAFORM_FUNCTIONS_EVALUATED: dict[str, Callable[..., Any]] = {
    "lower": str.lower,
    # Terraform's uuidv5 takes a namespace UUID; test_arm_guid_... checks the real one against arm_guid.
    "uuidv5": lambda namespace, name: str(uuid.uuid5(uuid.UUID(namespace), name)),
    "join": lambda separator, values: separator.join(values),
    "replace": lambda value, old, new: value.replace(old, new),
    "substr": lambda value, offset, length: value[offset : offset + length],
}


def _bicep_main_scope(sample: Mapping[str, str], resource_token: str = "") -> tuple[Callable[[str], Any], str]:
    """An evaluator of main.bicep's expressions for a sample environment, and the file's text."""
    text = (INFRA / "main.bicep").read_text(encoding="utf-8")
    variables = dict(re.findall(r"(?m)^var (\w+) = (.+)$", text))
    params = {"environmentName": sample["environment"], "location": sample["location"], "resourceGroupName": "", "resourceToken": resource_token}
    functions = {**BICEP_FUNCTIONS_EVALUATED, "subscription": lambda: {"id": f"/subscriptions/{sample['subscription']}"}}

    def evaluate(source: str) -> Any:
        return Expression(source, lambda name: params[name] if name in params else scope[name], functions).value()

    scope = Scope(variables, evaluate)
    return evaluate, text


def _bicep_names(sample: Mapping[str, str], resource_token: str = "") -> dict[str, str]:
    evaluate, text = _bicep_main_scope(sample, resource_token)

    def module_param(module: str, param: str) -> str:
        block = re.search(rf"(?ms)^module {module} .*?^  params: {{$(.*?)^  }}$", text)
        assert block, f"module {module} with params in main.bicep"
        found = re.search(rf"(?m)^    {param}: (.+)$", block.group(1))
        assert found, f"module {module} param {param}"
        return str(evaluate(found.group(1)))

    rg = re.search(r"(?ms)^resource rg .*?^\s+name: (.+?)$", text)
    assert rg
    return {
        "resource group": str(evaluate(rg.group(1))),
        "identity": module_param("identity", "name"),
        "log analytics": module_param("monitoring", "logAnalyticsName"),
        "application insights": module_param("monitoring", "applicationInsightsName"),
        "storage account": module_param("storage", "name"),
        "deployment container": str(evaluate("deploymentContainerName")),
        "plan": module_param("api", "planName"),
        "function app": module_param("api", "name"),
        "ai account": module_param("ai", "name"),
        "key vault": module_param("keyVault", "name"),
    }


def _terraform_evaluator(sample: Mapping[str, str], extra_vars: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """An evaluator of the Terraform files' expressions for a sample environment; ``each`` binds each.value."""
    terraform = parse_terraform()
    variables = {"environment_name": sample["environment"], "location": sample["location"], "resource_group_name": "",
                 "resource_token": "", **(extra_vars or {})}  # fmt: skip
    roots: dict[str, Any] = {
        "var": variables,
        "data": {"azurerm_subscription": {"current": {"subscription_id": sample["subscription"]}}},
        "azurerm_user_assigned_identity": {"app": {"principal_id": APP_PRINCIPAL}},
    }

    def evaluate(value: Any, each: Any = None) -> Any:
        if isinstance(value, dict):
            return {key: evaluate(item, each) for key, item in value.items()}
        # python-hcl2 keeps string literals quoted ('"id-${local.x}"') and wraps other expressions in ${...}.
        whole = re.fullmatch(r"\$\{(.*)\}", value, re.S)
        source = whole.group(1) if whole and not value.startswith('"') else value
        names = {**roots, "local": scope, "each": {"value": each}}
        return Expression(source, names.__getitem__, TERRAFORM_FUNCTIONS_EVALUATED).value()

    scope = Scope({name: value for name, value in tf_locals(terraform).items() if isinstance(value, (str, dict))}, evaluate)
    return evaluate


def _terraform_names(sample: Mapping[str, str], resource_token: str = "") -> dict[str, str]:
    evaluate = _terraform_evaluator(sample, {"resource_token": resource_token})
    resources = tf_resources(parse_terraform())

    def name_of(resource: str) -> str:
        return str(evaluate(resources[resource]["name"]))

    return {
        "resource group": name_of("azurerm_resource_group.main"),
        "identity": name_of("azurerm_user_assigned_identity.app"),
        "log analytics": name_of("azurerm_log_analytics_workspace.main"),
        "application insights": name_of("azurerm_application_insights.main"),
        "storage account": name_of("azurerm_storage_account.main"),
        "deployment container": str(evaluate("${local.deployment_container_name}")),
        "plan": name_of("azurerm_service_plan.main"),
        "function app": name_of("azapi_resource.function_app"),
        "ai account": name_of(AI_ACCOUNT),
        "key vault": name_of("azurerm_key_vault.main"),
    }


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda sample: f"{sample['environment']}-{sample['subscription'][:8]}")
def test_bicep_and_terraform_name_every_resource_alike(sample: dict[str, str]) -> None:
    """The issue's example (images-dev in eastus2) and more subscriptions: one set of names from either tool."""
    bicep, terraform = _bicep_names(sample), _terraform_names(sample)
    token = arm_guid(f"/subscriptions/{sample['subscription']}", sample["environment"], sample["location"]).replace("-", "")[:16]
    assert bicep["function app"] == f"func-{token}", "the token is the first 16 hex digits of guid(subscription().id, env, location)"
    assert bicep == terraform
    assert len(bicep["storage account"]) <= 24 and len(bicep["key vault"]) <= 24
    assert re.fullmatch(r"st[a-z0-9]{16}", bicep["storage account"]) and len(bicep["deployment container"]) <= 63
    assert bicep["resource group"] == f"rg-{sample['environment']}"


def test_a_given_resource_token_names_every_resource_in_both() -> None:
    """An environment created under another scheme (e.g. uniqueString's 13 characters) keeps its names."""
    sample = SAMPLES[0]
    old = arm_unique_string(f"/subscriptions/{sample['subscription']}", sample["environment"], sample["location"])
    bicep, terraform = _bicep_names(sample, old), _terraform_names(sample, old)
    assert bicep == terraform and bicep["function app"] == f"func-{old}" and bicep["storage account"] == f"st{old}"


def test_the_real_terraform_computes_the_token_bicep_does() -> None:
    """The token expression of main.tf, evaluated by terraform itself (not by this file's evaluator)."""
    console = _terraform_console()
    if console is None:
        pytest.skip("no terraform binary on PATH")
    source = (TERRAFORM / "main.tf").read_text(encoding="utf-8")
    wanted = ("arm_guid_namespace", "subscription_id", "resource_token")
    found = {name: re.search(rf"(?m)^  {name}\s+= (.+)$", source) for name in wanted}
    assert all(found.values()), f"main.tf locals {wanted}"
    config = "\n".join(
        ['variable "environment_name" {}', 'variable "location" {}', 'variable "subscription" {}', 'variable "resource_token" {}',
         "locals {", *(f"  {name} = {match.group(1)}" for name, match in found.items() if match), "}"]  # type: ignore[union-attr]
    ).replace("data.azurerm_subscription.current.subscription_id", "var.subscription")  # fmt: skip
    for sample in SAMPLES:
        tfvars = {"environment_name": sample["environment"], "location": sample["location"], "subscription": sample["subscription"], "resource_token": ""}
        variables = "".join(f'{key} = "{value}"\n' for key, value in tfvars.items())
        [token] = console(["local.resource_token"], {"main.tf": config, "terraform.tfvars": variables})
        assert token == _bicep_names(sample)["function app"].removeprefix("func-")


# ---------------------------------------------------------------- role assignment names

APP_PRINCIPAL = "6f1f0c8a-3b7e-4b52-9a64-1d2f8e0c7a11"
DEVELOPER = "0a7c3e51-9d2b-4f08-8e6a-5b4c3d2e1f00"
CALLERS = ["9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a", "1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9"]


def _bicep_assignment_names(sample: Mapping[str, str]) -> set[str]:
    """Every role assignment name of app/rbac.bicep, evaluated with the ids ARM's resourceId() gives the scopes."""
    evaluate_main, _ = _bicep_main_scope(sample)
    names = _bicep_names(sample)
    rg = names["resource group"]

    def rid(kind: str, *parts: str) -> dict[str, str]:
        return {"id": arm_resource_id(sample["subscription"], rg, kind, *parts)}

    storage = names["storage account"]
    writable = ["images", "image-jobs", "azure-webjobs-hosts", "azure-webjobs-secrets", names["deployment container"]]
    queue_names = ["image-jobs", "image-jobs-poison"]
    symbols: dict[str, Any] = {
        "principalId": APP_PRINCIPAL, "developerPrincipalId": DEVELOPER, "callerPrincipalIds": CALLERS,
        "writableContainers": writable, "developerContainers": writable[:4], "queueNames": queue_names,
        "containers": [rid("Microsoft.Storage/storageAccounts/blobServices/containers", storage, "default", c) for c in writable],
        "queues": [rid("Microsoft.Storage/storageAccounts/queueServices/queues", storage, "default", q) for q in queue_names],
        "storageAccount": rid("Microsoft.Storage/storageAccounts", storage),
        "jobQueue": rid("Microsoft.Storage/storageAccounts/queueServices/queues", storage, "default", "image-jobs"),
        "jobsContainer": rid("Microsoft.Storage/storageAccounts/blobServices/containers", storage, "default", "image-jobs"),
        "applicationInsights": rid("Microsoft.Insights/components", names["application insights"]),
        "vault::secret": rid("Microsoft.KeyVault/vaults/secrets", names["key vault"], "azure-openai-api-key"),
        "openAiAccount": rid("Microsoft.CognitiveServices/accounts", names["ai account"]),
    }  # fmt: skip
    text = (INFRA / "app" / "rbac.bicep").read_text(encoding="utf-8")
    symbols |= bicep_role_ids()
    found = set()
    for header, name in re.findall(r"(?ms)^resource \w+ 'Microsoft\.Authorization/roleAssignments@[\w-]+' = (.*?)\n  name: (.+?)$", text):
        loop = re.match(r"\[for (?:\((\w+), (\w+)\)|(\w+)) in (\w+):", header)
        bindings: list[dict[str, Any]] = [{}]
        if loop:
            item, index, single, source = loop.groups()
            bindings = [{(item or single): value, **({index: i} if index else {})} for i, value in enumerate(symbols[source])]
        for bound in bindings:
            env = {**symbols, **bound}
            found.add(Expression(name, env.__getitem__, BICEP_FUNCTIONS_EVALUATED).value())
    assert evaluate_main("token")
    return found


def _terraform_assignment_names(sample: Mapping[str, str]) -> set[str]:
    names = _bicep_names(sample)
    extra = {"principal_id": DEVELOPER, "caller_principal_ids": CALLERS, "queue_name": "image-jobs", "jobs_container_name": "image-jobs",
             "images_container_name": "images", "results_queue_name": "", "auth_mode": "keyvault", "existing_openai_endpoint": ""}  # fmt: skip
    evaluate = _terraform_evaluator(sample, extra)
    sets = {
        "local.container_names": ["images", "image-jobs", "azure-webjobs-hosts", "azure-webjobs-secrets", names["deployment container"]],
        "local.developer_containers": ["images", "image-jobs", "azure-webjobs-hosts", "azure-webjobs-secrets"],
        "local.queue_names": ["image-jobs", "image-jobs-poison"],
        "var.caller_principal_ids": CALLERS,
    }
    found = set()
    for resource, body in tf_resources(parse_terraform()).items():
        if not resource.startswith("azurerm_role_assignment."):
            continue
        repeat = str(body.get("for_each", ""))
        items = next((values for needle, values in sets.items() if needle in repeat), [None])
        found |= {evaluate(body["name"], each) for each in items}
    return found


@pytest.mark.parametrize("sample", SAMPLES[:2], ids=lambda sample: sample["subscription"][:8])
def test_bicep_and_terraform_name_every_role_assignment_alike(sample: dict[str, str]) -> None:
    """guid(scope id, principal, role) in Bicep, uuidv5 over ARM's namespace of the same string in Terraform."""
    bicep, terraform = _bicep_assignment_names(sample), _terraform_assignment_names(sample)
    assert len(bicep) >= 25
    assert bicep == terraform, f"only Bicep: {len(bicep - terraform)}, only Terraform: {len(terraform - bicep)}"


# ---------------------------------------------------------------- resources

# The Azure resource types each Terraform resource type creates.
TERRAFORM_TO_ARM = {
    "azurerm_resource_group": {"Microsoft.Resources/resourceGroups"},
    "azurerm_user_assigned_identity": {"Microsoft.ManagedIdentity/userAssignedIdentities"},
    "azurerm_log_analytics_workspace": {"Microsoft.OperationalInsights/workspaces"},
    "azurerm_application_insights": {"Microsoft.Insights/components"},
    # blob_properties is the blob service; the queue service exists with every account.
    "azurerm_storage_account": {
        "Microsoft.Storage/storageAccounts",
        "Microsoft.Storage/storageAccounts/blobServices",
        "Microsoft.Storage/storageAccounts/queueServices",
    },
    "azurerm_storage_container": {"Microsoft.Storage/storageAccounts/blobServices/containers"},
    "azurerm_storage_queue": {"Microsoft.Storage/storageAccounts/queueServices/queues"},
    "azurerm_storage_management_policy": {"Microsoft.Storage/storageAccounts/managementPolicies"},
    "azurerm_monitor_diagnostic_setting": {"Microsoft.Insights/diagnosticSettings"},
    "azurerm_cognitive_deployment": {"Microsoft.CognitiveServices/accounts/deployments"},
    "azurerm_key_vault": {"Microsoft.KeyVault/vaults"},
    "azurerm_service_plan": {"Microsoft.Web/serverfarms"},
    "azurerm_role_assignment": {"Microsoft.Authorization/roleAssignments"},
    # The entra way's app registration (Microsoft Graph, not ARM; Bicep: app/registration.bicep).
    "azuread_application": {"Microsoft.Graph/applications"},
    "azuread_service_principal": {"Microsoft.Graph/servicePrincipals"},
    "azuread_app_role_assignment": {"Microsoft.Graph/appRoleAssignedTo"},
}


def _bicep_declared_types() -> set[str]:
    """Types of every resource the Bicep files declare (not `existing`), nested ones under their parent's type.

    Read from the source: pycep leaves some nested resources out of its tree (blobServices and
    queueServices of core/storage.bicep), so its tree cannot say what Bicep creates.
    """
    types = set()
    for path in sorted(INFRA.rglob("*.bicep")):
        parent = ""
        for line in path.read_text(encoding="utf-8").splitlines():
            declared = re.match(r"(\s*)resource \w+ '([\w./]+)(?:@[\w.-]+)?' (existing )?=", line)
            if not declared:
                continue
            indent, kind, existing = declared.groups()
            full = kind if "/" in kind else f"{parent}/{kind}"
            if not indent:
                parent = kind
            if not existing:
                types.add(full)
    return types


def test_bicep_and_terraform_create_the_same_kinds_of_resources() -> None:
    bicep = _bicep_declared_types()
    terraform = set()
    for name, body in tf_resources(parse_terraform()).items():
        kind = name.split(".")[0]
        if kind in ("azapi_resource_action", "time_sleep"):  # the purge after destroy, the wait for roles: nothing in Azure
            continue
        if kind == "azapi_resource":
            terraform.add(_unquote_type(body["type"]))
        else:
            assert kind in TERRAFORM_TO_ARM, f"{kind}: add its Azure type to TERRAFORM_TO_ARM"
            terraform |= TERRAFORM_TO_ARM[kind]
    assert bicep == terraform, f"only Bicep: {sorted(bicep - terraform)}; only Terraform: {sorted(terraform - bicep)}"


def _unquote_type(value: str) -> str:
    return value.strip('"').split("@")[0]


def test_audit_and_access_logs_go_to_log_analytics_for_the_same_things_in_both() -> None:
    """Storage blob and queue access, the vault's AuditEvent (PSRule Azure.KeyVault.Logs) and the AI account's Audit, in both."""
    bicep = {}
    for resource in bicep_resources(parse_bicep()).values():
        if resource["type"] == "Microsoft.Insights/diagnosticSettings":
            config = resource["config"]
            categories = sorted(log["category"] for log in config["properties"]["logs"] if log["enabled"])
            bicep[_scope_kind(json.dumps(config["scope"]))] = categories
    terraform = {}
    for name, body in tf_resources(parse_terraform()).items():
        if name.startswith("azurerm_monitor_diagnostic_setting."):
            categories = sorted(log["category"].strip('"') for log in body["enabled_log"])
            targets = re.findall(r'"(\w+Services)"', str(body.get("for_each", ""))) or [_scope_kind(body["target_resource_id"])]
            terraform.update(dict.fromkeys(targets, categories))
    assert bicep.get("vault") == ["AuditEvent"], "Key Vault audit logs (PSRule Azure.KeyVault.Logs)"
    assert bicep.get("ai account") == ["Audit", "RequestResponse"], "the AI account's audit and request logs"
    assert bicep == terraform
    assert bicep["blobServices"] == bicep["queueServices"] == ["StorageDelete", "StorageRead", "StorageWrite"]


def _scope_kind(scope: str) -> str:
    for needle, kind in (("blobService", "blobServices"), ("queueService", "queueServices"), ("vault", "vault"), ("key_vault", "vault"),
                         ("ai_account", "ai account"), ('"account"', "ai account")):  # fmt: skip
        if needle in scope:
            return kind
    raise AssertionError(f"unknown diagnostic target {scope}")


# ---------------------------------------------------------------- roles

def test_bicep_and_terraform_assign_the_same_roles_at_the_same_scopes() -> None:
    bicep, terraform = bicep_assignments(parse_bicep()), terraform_assignments()
    assert len(bicep) >= 14
    assert bicep == terraform, f"only Bicep: {sorted(bicep - terraform)}; only Terraform: {sorted(terraform - bicep)}"


# ---------------------------------------------------------------- ordering


def test_the_function_app_starts_after_every_role_of_its_identity_in_both() -> None:
    """Finding 6: the host and the app use their roles from the first second; Terraform started the site before three."""
    text = (INFRA / "main.bicep").read_text(encoding="utf-8")
    api = re.search(r"(?ms)^module api .*?^}", text)
    assert api and re.search(r"(?ms)dependsOn: \[\s*rbac\s*\]", api.group()), "main.bicep: module api must dependsOn rbac"
    role_assignments = [name for name, r in bicep_resources(parse_bicep()).items() if r["type"] == "Microsoft.Authorization/roleAssignments"]
    assert role_assignments and all(name.startswith("rbac.bicep:") for name in role_assignments), (
        "every role assignment is in app/rbac.bicep, the module the api module waits for"
    )

    resources = tf_resources(parse_terraform())

    def depends_on(name: str) -> set[str]:
        direct = {re.sub(r"[${}]", "", item) for item in resources.get(name, {}).get("depends_on", [])}
        return direct.union(*(depends_on(item) for item in direct))

    waits_for = depends_on("azapi_resource.function_app")
    assert "time_sleep.app_roles" in waits_for, "the site starts once its roles have had time to take effect"
    app_roles = {
        name for name, body in resources.items()
        if name.startswith("azurerm_role_assignment.") and body["principal_id"] == "${local.app_principal_id}"
    }  # fmt: skip
    assert len(app_roles) == 7
    assert app_roles <= waits_for, f"azapi_resource.function_app does not wait for {sorted(app_roles - waits_for)}"


# ---------------------------------------------------------------- formatting


def test_terraform_files_are_formatted() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on PATH: `terraform fmt -check -recursive infra/terraform` runs where there is one")
    run = subprocess.run(
        [terraform, "fmt", "-check", "-diff", "-recursive", str(TERRAFORM)], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, f"terraform fmt would change:\n{run.stdout}{run.stderr[-2000:]}"
