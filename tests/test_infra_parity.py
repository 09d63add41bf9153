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

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from test_infra import INFRA, TERRAFORM, _fields, _tf_locals, _tf_resources, parse_bicep, parse_terraform

# ---------------------------------------------------------------- ARM's uniqueString


def arm_unique_string(*values: str) -> str:
    """ARM's uniqueString(): a 64-bit MurmurHash (Microsoft's variant) of the values joined with '-', base32, 13 chars."""
    data = "-".join(values).encode("utf-8")
    mask = 0xFFFFFFFF
    c1, c2 = 597_399_067, 2_869_860_233

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & mask

    def mix(x: int) -> int:
        x ^= x >> 16
        x = (x * 2_246_822_507) & mask
        x ^= x >> 13
        x = (x * 3_266_489_909) & mask
        return x ^ (x >> 16)

    h1 = h2 = 0
    full = len(data) // 8 * 8
    for i in range(0, full, 8):
        k1, k2 = int.from_bytes(data[i : i + 4], "little"), int.from_bytes(data[i + 4 : i + 8], "little")
        h1 ^= rotl(k1 * c1 & mask, 15) * c2 & mask
        h1 = (rotl(h1, 19) + h2) * 5 + 1_444_728_091 & mask
        h2 ^= rotl(k2 * c2 & mask, 17) * c1 & mask
        h2 = (rotl(h2, 13) + h1) * 5 + 197_830_471 & mask
    tail = data[full:]
    if tail:
        h1 ^= rotl(int.from_bytes(tail[:4], "little") * c1 & mask, 15) * c2 & mask
        if len(tail) > 4:
            h2 ^= rotl(int.from_bytes(tail[4:], "little") * c2 & mask, 17) * c1 & mask
    h1 ^= len(data)
    h2 ^= len(data)
    h1 = (h1 + h2) & mask
    h2 = (h2 + h1) & mask
    h1, h2 = mix(h1), mix(h2)
    h1 = (h1 + h2) & mask
    h2 = (h2 + h1) & mask
    # Thirteen 5-bit digits from the top of the 64-bit value; the last one has 4 bits and a zero.
    value = ((h2 << 32) | h1) << 1
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(alphabet[(value >> (60 - 5 * k)) & 31] for k in range(13))


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
    ],
)
def test_unique_string_is_arms(values: tuple[str, ...], expected: str) -> None:
    """The evaluator below computes names with this; it must be ARM's function, not a look-alike."""
    assert arm_unique_string(*values) == expected


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
    {"subscription": "00000000-0000-0000-0000-000000000000", "environment": "images-dev", "location": "eastus2"},
    {"subscription": "2b0c9f1e-6a53-4d1e-9a9c-0f3f1d5e7c21", "environment": "prod", "location": "swedencentral"},
]


def _bicep_names(sample: Mapping[str, str]) -> dict[str, str]:
    text = (INFRA / "main.bicep").read_text(encoding="utf-8")
    variables = dict(re.findall(r"(?m)^var (\w+) = (.+)$", text))
    params = {"environmentName": sample["environment"], "location": sample["location"], "resourceGroupName": ""}
    functions: dict[str, Callable[..., Any]] = {
        "toLower": str.lower,
        "uniqueString": arm_unique_string,
        "take": lambda value, count: value[:count],
        "empty": lambda value: not value,
        "subscription": lambda: {"id": f"/subscriptions/{sample['subscription']}"},
        "loadJsonContent": lambda path: json.loads((INFRA / path).read_text(encoding="utf-8")),
    }

    def evaluate(source: str) -> Any:
        return Expression(source, lambda name: params[name] if name in params else scope[name], functions).value()

    scope = Scope(variables, evaluate)

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
        "deployment container": scope["deploymentContainerName"],
        "plan": module_param("api", "planName"),
        "function app": module_param("api", "name"),
        "ai account": module_param("ai", "name"),
        "key vault": module_param("keyVault", "name"),
    }


def _terraform_names(sample: Mapping[str, str]) -> dict[str, str]:
    terraform = parse_terraform()
    variables = {"environment_name": sample["environment"], "location": sample["location"], "resource_group_name": ""}
    data = {"azurerm_subscription": {"current": {"subscription_id": sample["subscription"]}}}
    functions: dict[str, Callable[..., Any]] = {
        "lower": str.lower,
        "provider::azapi::unique_string": lambda values: arm_unique_string(*values),
        "substr": lambda value, offset, length: value[offset : offset + length],
        # Not used now; evaluating it lets the comparison say how an older derivation differed.
        "sha256": lambda value: hashlib.sha256(value.encode("utf-8")).hexdigest(),
    }

    def evaluate(value: str) -> Any:
        # python-hcl2 keeps string literals quoted ('"id-${local.x}"') and wraps other expressions in ${...}.
        whole = re.fullmatch(r"\$\{(.*)\}", value, re.S)
        source = whole.group(1) if whole and not value.startswith('"') else value
        roots = {"var": variables, "local": scope, "data": data}
        return Expression(source, roots.__getitem__, functions).value()

    scope = Scope({name: value for name, value in _tf_locals(terraform).items() if isinstance(value, str)}, evaluate)
    resources = _tf_resources(terraform)

    def name_of(resource: str) -> str:
        return str(evaluate(resources[resource]["name"]))

    return {
        "resource group": name_of("azurerm_resource_group.main"),
        "identity": name_of("azurerm_user_assigned_identity.app"),
        "log analytics": name_of("azurerm_log_analytics_workspace.main"),
        "application insights": name_of("azurerm_application_insights.main"),
        "storage account": name_of("azurerm_storage_account.main"),
        "deployment container": scope["deployment_container_name"],
        "plan": name_of("azurerm_service_plan.main"),
        "function app": name_of("azapi_resource.function_app"),
        "ai account": name_of("azurerm_cognitive_account.main"),
        "key vault": name_of("azurerm_key_vault.main"),
    }


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda sample: sample["environment"])
def test_bicep_and_terraform_name_every_resource_alike(sample: dict[str, str]) -> None:
    bicep, terraform = _bicep_names(sample), _terraform_names(sample)
    token = arm_unique_string(f"/subscriptions/{sample['subscription']}", sample["environment"], sample["location"])
    assert bicep["function app"] == f"func-{token}", "the Bicep token is toLower(uniqueString(subscription().id, env, location))"
    assert bicep == terraform
    assert len(bicep["storage account"]) <= 24 and len(bicep["key vault"]) <= 24
    assert bicep["resource group"] == f"rg-{sample['environment']}"


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
    "azurerm_cognitive_account": {"Microsoft.CognitiveServices/accounts"},
    "azurerm_cognitive_deployment": {"Microsoft.CognitiveServices/accounts/deployments"},
    "azurerm_key_vault": {"Microsoft.KeyVault/vaults"},
    "azurerm_service_plan": {"Microsoft.Web/serverfarms"},
    "azurerm_role_assignment": {"Microsoft.Authorization/roleAssignments"},
}


def _bicep_resources() -> dict[str, dict[str, Any]]:
    """{file:symbol: resource} for every resource Bicep creates (not `existing` ones)."""
    found = {}
    for path, ast in parse_bicep().items():
        for name, resource in ast.get("resources", {}).items():
            if not resource.get("existing"):
                found[f"{path.name}:{name}"] = resource
    return found


def _bicep_declared_types() -> set[str]:
    """Types of every resource the Bicep files declare (not `existing`), nested ones under their parent's type.

    Read from the source: pycep leaves some nested resources out of its tree (blobServices and
    queueServices of core/storage.bicep), so its tree cannot say what Bicep creates.
    """
    types = set()
    for path in sorted(INFRA.rglob("*.bicep")):
        parent = ""
        for line in path.read_text(encoding="utf-8").splitlines():
            declared = re.match(r"(\s*)resource \w+ '([\w./]+)(?:@[\w-]+)?' (existing )?=", line)
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
    for name, body in _tf_resources(parse_terraform()).items():
        kind = name.split(".")[0]
        if kind == "azapi_resource":
            terraform.add(_unquote_type(body["type"]))
        else:
            assert kind in TERRAFORM_TO_ARM, f"{kind}: add its Azure type to TERRAFORM_TO_ARM"
            terraform |= TERRAFORM_TO_ARM[kind]
    assert bicep == terraform, f"only Bicep: {sorted(bicep - terraform)}; only Terraform: {sorted(terraform - bicep)}"


def _unquote_type(value: str) -> str:
    return value.strip('"').split("@")[0]


def test_audit_and_access_logs_go_to_log_analytics_for_the_same_things_in_both() -> None:
    """Storage blob and queue access, and the vault's AuditEvent (PSRule Azure.KeyVault.Logs), in both templates."""
    bicep = {}
    for resource in _bicep_resources().values():
        if resource["type"] == "Microsoft.Insights/diagnosticSettings":
            config = resource["config"]
            categories = sorted(log["category"] for log in config["properties"]["logs"] if log["enabled"])
            bicep[_scope_kind(json.dumps(config["scope"]))] = categories
    terraform = {}
    for name, body in _tf_resources(parse_terraform()).items():
        if name.startswith("azurerm_monitor_diagnostic_setting."):
            categories = sorted(log["category"].strip('"') for log in body["enabled_log"])
            targets = re.findall(r'"(\w+Services)"', str(body.get("for_each", ""))) or [_scope_kind(body["target_resource_id"])]
            terraform.update(dict.fromkeys(targets, categories))
    assert bicep.get("vault") == ["AuditEvent"], "Key Vault audit logs (PSRule Azure.KeyVault.Logs)"
    assert bicep == terraform
    assert bicep["blobServices"] == bicep["queueServices"] == ["StorageDelete", "StorageRead", "StorageWrite"]


def _scope_kind(scope: str) -> str:
    for needle, kind in (("blobService", "blobServices"), ("queueService", "queueServices"), ("vault", "vault"), ("key_vault", "vault")):
        if needle in scope:
            return kind
    raise AssertionError(f"unknown diagnostic target {scope}")


# ---------------------------------------------------------------- roles

# Scopes, loops and conditions, spelled the Bicep way and the Terraform way.
BICEP_SCOPES = {"containers": "container", "storageAccount": "account", "queues": "queue",
                "applicationInsights": "app insights", "vault": "secret", "openAiAccount": "ai account",
                "jobQueue": "job queue", "jobsContainer": "jobs container"}  # fmt: skip
# The first needle found names the scope, so the particular ones (one queue, one container) come first.
TERRAFORM_SCOPES = {"azurerm_storage_queue.main[var.queue_name]": "job queue", "azurerm_storage_container.main[var.jobs_container_name]": "jobs container",
                    "azurerm_storage_container": "container", "azurerm_storage_account": "account", "azurerm_storage_queue": "queue",
                    "azurerm_application_insights": "app insights", "local.secret_scope": "secret", "azurerm_cognitive_account": "ai account"}  # fmt: skip
BICEP_LOOPS = {"writableContainers": "every container", "developerContainers": "app and host containers", "queueNames": "every queue",
               "callerPrincipalIds": "every caller"}  # fmt: skip
TERRAFORM_LOOPS = {"local.container_names": "every container", "local.developer_containers": "app and host containers",
                   "local.queue_names": "every queue", "var.caller_principal_ids": "every caller"}  # fmt: skip
BICEP_CONDITIONS = {"withKeyVault": "keyvault way", "withOpenAiUser": "entra way, account created", "withDeveloper": "developer"}
TERRAFORM_CONDITIONS = {"local.use_key_vault": "keyvault way", "local.with_openai_user": "entra way, account created",
                        "local.with_developer": "developer"}  # fmt: skip

Assignment = tuple[str, str, str, str, frozenset[str]]  # principal, role GUID, scope, loop, conditions


def _bicep_assignments() -> set[Assignment]:
    text = (INFRA / "app" / "rbac.bicep").read_text(encoding="utf-8")
    guids = dict(re.findall(r"(?m)^var (\w+) = '([0-9a-f-]{36})'", text))
    found = set()
    for resource in _bicep_resources().values():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        outer = resource["config"]
        config = outer.get("config", outer)
        loop = outer.get("loop_type", {}).get("detail", {}).get("array_name") if "loop_type" in outer else None
        principal = {"principalId": "app", "developerPrincipalId": "developer", "callerId": "caller"}[config["properties"]["principalId"]]
        role = guids[config["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]]
        scope_text = json.dumps(config["scope"])
        scope = next(kind for needle, kind in BICEP_SCOPES.items() if f'"{needle}"' in scope_text)
        conditions = frozenset(kind for flag, kind in BICEP_CONDITIONS.items() if flag in str(outer.get("condition")))
        found.add((principal, role, scope, BICEP_LOOPS.get(loop or "", "one"), conditions))
    return found


def _terraform_assignments() -> set[Assignment]:
    terraform = parse_terraform()
    guids = {key: value.strip('"') for key, value in _fields(_tf_locals(terraform)["roles"]).items()}
    found = set()
    for name, body in _tf_resources(terraform).items():
        if not name.startswith("azurerm_role_assignment."):
            continue
        principal = {"${local.app_principal_id}": "app", "${var.principal_id}": "developer", "${each.value}": "caller"}[body["principal_id"]]
        role = guids[re.fullmatch(r"\$\{local\.role_id\.(\w+)\}", body["role_definition_id"]).group(1)]  # type: ignore[union-attr]
        scope = next(kind for needle, kind in TERRAFORM_SCOPES.items() if needle in body["scope"])
        repeat = str(body.get("for_each", "")) + str(body.get("count", ""))
        loop = next((kind for needle, kind in TERRAFORM_LOOPS.items() if needle in repeat), "one")
        conditions = frozenset(kind for flag, kind in TERRAFORM_CONDITIONS.items() if flag in repeat)
        found.add((principal, role, scope, loop, conditions))
    return found


def test_bicep_and_terraform_assign_the_same_roles_at_the_same_scopes() -> None:
    bicep, terraform = _bicep_assignments(), _terraform_assignments()
    assert len(bicep) >= 12
    assert bicep == terraform, f"only Bicep: {sorted(bicep - terraform)}; only Terraform: {sorted(terraform - bicep)}"


# ---------------------------------------------------------------- ordering


def test_the_function_app_starts_after_every_role_of_its_identity_in_both() -> None:
    """Finding 6: the host and the app use their roles from the first second; Terraform started the site before three."""
    text = (INFRA / "main.bicep").read_text(encoding="utf-8")
    api = re.search(r"(?ms)^module api .*?^}", text)
    assert api and re.search(r"(?ms)dependsOn: \[\s*rbac\s*\]", api.group()), "main.bicep: module api must dependsOn rbac"
    bicep_assignments = [name for name, r in _bicep_resources().items() if r["type"] == "Microsoft.Authorization/roleAssignments"]
    assert bicep_assignments and all(name.startswith("rbac.bicep:") for name in bicep_assignments), (
        "every role assignment is in app/rbac.bicep, the module the api module waits for"
    )

    resources = _tf_resources(parse_terraform())
    waits_for = {re.sub(r"[${}]", "", item) for item in resources["azapi_resource.function_app"]["depends_on"]}
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
