"""Offline checks of the infrastructure: Bicep (infra/) and Terraform (infra/terraform/).

Nothing here reaches Azure; there is no bicep or terraform binary on the machines. Instead:

- Terraform parses with python-hcl2, and every var., local., resource and data reference
  resolves to a declaration.
- Bicep parses with pycep, the parser checkov itself uses (from .venv-checkov), so a file
  checkov could not read fails here rather than going unscanned. On top, a small lexer
  checks what the compiler would: balanced brackets, every identifier declared, every
  function known, every param and var used; and every module path exists and gets exactly
  the params it declares.
- The app settings both set follow shared.settings.SETTINGS (the rule is in
  test_app_settings_follow_the_catalogue), and Bicep and Terraform set the same ones.
- checkov runs once, with the project's .checkov.yaml but none of its skips, so this file
  sees every failure: the failures must be exactly the skips listed there, each with a
  reason. That is `checkov --config-file .checkov.yaml` passing, with no stale skip.
  checkov does not evaluate `azapi_resource` bodies at all (pinned below), so the Terraform
  function app is checked by tests/test_infra_flex.py instead.
- tests/test_infra_parity.py compares names, resources and roles of the two templates,
  tests/test_infra_models.py their model versions, tests/test_infra_providers.py the
  provider pin against the arguments used.
- Both name the same outputs, including the function URL, storage account, queue and vault.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from docs.templates import (
    INFRA,
    ROOT,
    TERRAFORM,
    TERRAFORM_FILES,
    bicep_role_ids,
    fields,
    parse_terraform,
    role_names,
    tf_blocks,
    tf_locals,
    tf_resources,
    unquote,
)
from shared.settings import SETTINGS

CHECKOV_CONFIG = ROOT / ".checkov.yaml"
CHECKOV_VENV = ROOT / ".venv-checkov"
CHECKOV_BIN = CHECKOV_VENV / ("Scripts" if os.name == "nt" else "bin")
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Settings the Functions host or platform reads, not the app, and so not in SETTINGS.
# On Flex Consumption the runtime and its version live in functionAppConfig, so
# FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION are rejected, not allowed here.
PLATFORM_SETTINGS = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING",  # where the host sends telemetry
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",  # Entra ID auth for it (App Insights local auth is off)
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",  # the Python worker exports the app's OpenTelemetry (shared/telemetry)
    "PYTHON_ENABLE_INIT_INDEXING",  # the HTTP streams extension (function_app.py) on Python <= 3.12
}
# Settings with a default that name a resource the templates create: set, so the templates
# and the app can never look for different containers or queues.
RESOURCE_NAME_SETTINGS = {"IMAGES_CONTAINER", "IMAGES_JOBS_CONTAINER", "IMAGES_QUEUE"}
# Settings the app can read that the templates deliberately leave out, each with why.
NOT_SET_IN_AZURE = {
    # From the account name the host derives a table endpoint too and writes diagnostic events
    # there, which needs a Table role the app has no use for (403 warnings:
    # Azure/azure-functions-host#10995). Microsoft's Flex samples (Azure-Samples/
    # functions-quickstart-python-http-azd, azure-functions-flex-consumption-samples IaC/bicep)
    # set the blob and queue service URIs instead, as these templates do.
    "AzureWebJobsStorage__accountName",
    # Azure sets WEBSITE_HOSTNAME, from which the app builds its public URLs; this one is only for
    # a custom domain or a gateway in front, which these templates do not create.
    "IMAGES_PUBLIC_BASE_URL",
}
# What every deployment must output, in both (and for azd, in UPPER_SNAKE).
REQUIRED_OUTPUTS = {
    "AZURE_FUNCTION_URL",
    "AZURE_FUNCTION_APP_NAME",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "IMAGES_QUEUE",
    "IMAGES_CONTAINER",
    "AZURE_KEY_VAULT_NAME",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_RESOURCE_GROUP",
}
AUTH_WAYS = ("entra", "keyvault")  # the app's AZURE_OPENAI_AUTH names (tests/test_infra_roles.py: why not key)


def _venv_tool(name: str) -> Path:
    path = CHECKOV_BIN / (f"{name}.exe" if os.name == "nt" else name)
    if not path.exists():
        pytest.fail(
            f"{path.relative_to(ROOT)} is missing. `python3 dev.py test` creates .venv-checkov; by hand: "
            "python3 -m venv .venv-checkov && .venv-checkov/bin/pip install -r requirements-checkov.txt"
        )
    return path


# ---------------------------------------------------------------- Terraform


@pytest.fixture(scope="module")
def terraform() -> dict[str, dict[str, Any]]:
    """Every .tf file, parsed (docs/templates.py parses them, once per run, for these tests and the generated docs)."""
    return parse_terraform()


def _tf_text_without_comments() -> str:
    text = "\n".join(path.read_text(encoding="utf-8") for path in TERRAFORM_FILES)
    return re.sub(r"(?m)^\s*#.*$|\s#[^\n\"]*$", "", text)


def test_terraform_pins_providers_and_uses_entra_id_for_storage(terraform: dict[str, dict[str, Any]]) -> None:
    settings = tf_blocks(terraform, "terraform")
    assert settings, "a terraform {} block with required_providers"
    providers = {
        name: fields(spec) for block in settings for req in block["required_providers"] for name, spec in fields(req).items()
    }
    assert {"azurerm", "azapi"} <= set(providers)
    for name, spec in providers.items():
        assert re.fullmatch(r"~> \d+\.\d+(\.\d+)?|= ?\d+\.\d+\.\d+", unquote(spec.get("version", ""))), f"{name} is not pinned"
    azurerm = [fields(p)["azurerm"] for p in tf_blocks(terraform, "provider") if "azurerm" in fields(p)]
    assert azurerm and azurerm[0].get("storage_use_azuread") is True, "provider azurerm needs storage_use_azuread = true"


def test_terraform_references_resolve(terraform: dict[str, dict[str, Any]]) -> None:
    """What `terraform validate` would catch first: references to things never declared."""
    text = _tf_text_without_comments()
    variables = {name for block in tf_blocks(terraform, "variable") for name in fields(block)}
    locals_ = set(tf_locals(terraform))
    resources = set(tf_resources(terraform))
    data = {f"data.{key}" for key in tf_resources(terraform, "data")}

    assert set(re.findall(r"\bvar\.(\w+)", text)) <= variables
    assert set(re.findall(r"\blocal\.(\w+)", text)) <= locals_
    used_resources = {f"{t}.{n}" for t, n in re.findall(r"(?<![\w.\"])((?:azurerm|azapi)_\w+)\.(\w+)\b", text)}
    assert used_resources <= resources, f"undeclared: {sorted(used_resources - resources)}"
    used_data = {f"data.{t}.{n}" for t, n in re.findall(r"\bdata\.(\w+)\.(\w+)", text)}
    assert used_data <= data, f"undeclared: {sorted(used_data - data)}"


# ---------------------------------------------------------------- Bicep: parse and resolve

# pycep has no grammar for `extension NAME` (Bicep extensions, here the Microsoft Graph one): a file
# declaring one is parsed with that line blanked and marked "extension"; checkov skips such files
# (.checkov.yaml skip-path), and test_files_checkov_skips_hold_graph_resources_only says they can.
_PYCEP_SCRIPT = """
import json, re, sys
from pathlib import Path
from pycep import BicepParser
out = {}
for name in sys.argv[1:]:
    text = Path(name).read_text(encoding="utf-8")
    extensions = re.findall(r"(?m)^extension (\\w+)$", text)
    try:
        out[name] = BicepParser().parse(text=re.sub(r"(?m)^extension \\w+$", "", text))
    except Exception as exc:  # the message is what the test shows
        out[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    if extensions:
        out[name]["extension"] = extensions
print(json.dumps(out, default=str))
"""


@functools.cache
def parse_bicep() -> dict[Path, dict[str, Any]]:
    """Every .bicep file parsed by pycep, the Bicep parser of checkov (run in .venv-checkov), once per test run."""
    assert BICEP_FILES, "no Bicep files under infra"
    python = _venv_tool("python")
    run = subprocess.run(
        [str(python), "-c", _PYCEP_SCRIPT, *map(str, BICEP_FILES)], capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return {Path(name): ast for name, ast in json.loads(run.stdout).items()}


@pytest.fixture(scope="module")
def bicep() -> dict[Path, dict[str, Any]]:
    """Every .bicep file parsed by pycep."""
    return parse_bicep()


def test_bicep_files_parse_with_checkovs_parser(bicep: dict[Path, dict[str, Any]]) -> None:
    errors = {str(path.relative_to(ROOT)): ast["error"] for path, ast in bicep.items() if "error" in ast}
    assert not errors, f"checkov could not read (so would not scan) these: {errors}"


def _checkov_skipped_paths() -> list[str]:
    text = CHECKOV_CONFIG.read_text(encoding="utf-8")
    block = re.search(r"(?ms)^skip-path:\n(.*?)(?=^\S|\Z)", text)
    return re.findall(r"(?m)^\s+-\s+(\S+)", block.group(1)) if block else []


def test_files_checkov_skips_hold_graph_resources_only(bicep: dict[Path, dict[str, Any]]) -> None:
    """checkov cannot read a Bicep extension; the files that declare one are skipped, and may hold
    only Microsoft Graph resources (checkov has no check for those), so no Azure resource goes unscanned."""
    with_extension = {_rel(path) for path, ast in bicep.items() if ast.get("extension")}
    assert with_extension == {"infra/app/registration.bicep"}
    assert sorted(_checkov_skipped_paths()) == sorted(with_extension)
    for name in with_extension:
        assert bicep[ROOT / name]["extension"] == ["microsoftGraphV1"]
        types = {resource["type"] for resource in bicep[ROOT / name]["resources"].values()}
        assert types and all(t.startswith("Microsoft.Graph/") for t in types), types
    config = json.loads(re.sub(r"(?m)^\s*//.*$", "", (INFRA / "bicepconfig.json").read_text(encoding="utf-8")))
    assert config["extensions"]["microsoftGraphV1"].startswith("br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:1.")


@dataclass
class Token:
    kind: str  # "id", "str", "num", "op", "nl"
    value: str
    line: int
    inner: list[Token] = field(default_factory=list)  # tokens of ${...} inside a string


def _lex(text: str) -> list[Token]:
    tokens, end = _lex_from(text, 0, 1, inside_interpolation=False)
    assert end == len(text)
    return tokens


def _lex_from(text: str, i: int, line: int, inside_interpolation: bool) -> tuple[list[Token], int]:
    """Bicep tokens from text[i:], up to the '}' closing an interpolation when inside one."""
    tokens: list[Token] = []
    depth = 0
    while i < len(text):
        c = text[i]
        if c == "\n":
            tokens.append(Token("nl", c, line))
            line += 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
        elif text.startswith("/*", i):
            close = text.index("*/", i)
            line += text.count("\n", i, close)
            i = close + 2
        elif text.startswith("'''", i):
            close = text.index("'''", i + 3)
            tokens.append(Token("str", text[i + 3 : close], line))
            line += text.count("\n", i, close)
            i = close + 3
        elif c == "'":
            token = Token("str", "", line)
            i += 1
            while text[i] != "'":
                if text[i] == "\\":
                    token.value += text[i : i + 2]
                    i += 2
                elif text.startswith("${", i):
                    inner, i = _lex_from(text, i + 2, line, inside_interpolation=True)
                    token.inner.extend(inner)
                    i += 1  # the closing '}'
                else:
                    token.value += text[i]
                    i += 1
            tokens.append(token)
            i += 1
        elif c.isalpha() or c == "_":
            match = re.match(r"[A-Za-z_]\w*", text[i:])
            assert match
            tokens.append(Token("id", match.group(), line))
            i += match.end()
        elif c.isdigit():
            match = re.match(r"\d+(\.\d+)?", text[i:])
            assert match
            tokens.append(Token("num", match.group(), line))
            i += match.end()
        else:
            op = next((o for o in ("::", "==", "!=", ">=", "<=", "&&", "||", "??", "?.", ".?") if text.startswith(o, i)), c)
            if inside_interpolation and op == "{":
                depth += 1
            elif inside_interpolation and op == "}":
                if depth == 0:
                    return tokens, i
                depth -= 1
            tokens.append(Token("op", op, line))
            i += len(op)
    return tokens, i


BICEP_KEYWORDS = set("targetScope param var resource module output existing if for in true false null extension".split())
BICEP_TYPES = set("string int bool object array secureString secureObject".split())
# The Bicep functions these templates call; a name missing here is a typo, or new (add it).
BICEP_FUNCTIONS = {
    "any", "concat", "contains", "dateTimeAdd", "empty", "endsWith", "environment", "first", "format", "guid",
    "items", "join", "last", "length", "loadJsonContent", "loadTextContent", "managementGroup", "replace",
    "resourceGroup", "resourceId", "split", "startsWith", "string", "subscription", "subscriptionResourceId",
    "substring", "take", "tenant", "toLower", "toUpper", "trim", "union", "uniqueString", "utcNow",
}  # fmt: skip
DECLARING = {"param", "var", "resource", "module", "output", "extension"}


@dataclass
class BicepNames:
    declared: dict[str, str]  # name -> param|var|resource|module|output|loop
    used: set[str]
    functions: set[str]


def _bicep_names(tokens: list[Token]) -> BicepNames:
    names = BicepNames({}, set(), set())
    significant = [t for t in tokens if t.kind != "nl"]
    # Declarations: `param NAME`, `var NAME`, nested `resource NAME`, `for NAME in`, `for (A, B) in`.
    declaring_at: set[int] = set()
    for k, token in enumerate(significant[:-1]):
        following = significant[k + 1]
        if token.kind == "id" and token.value in DECLARING and following.kind == "id":
            names.declared[following.value] = token.value
            declaring_at.add(id(following))
        if token.kind == "id" and token.value == "for":
            for var in significant[k + 1 :]:
                if var.kind == "id" and var.value == "in":
                    break
                if var.kind == "id":
                    names.declared.setdefault(var.value, "loop")
                    declaring_at.add(id(var))

    def walk(stream: list[Token]) -> None:
        for k, token in enumerate(stream):
            if token.inner:
                walk(token.inner)
            if token.kind != "id" or id(token) in declaring_at:
                continue
            before = stream[k - 1] if k else Token("nl", "", 0)
            after = stream[k + 1] if k + 1 < len(stream) else Token("nl", "", 0)
            if before.kind == "op" and before.value in {".", "::", "@", "?.", ".?"}:
                continue  # property, nested resource or decorator
            if after.kind == "op" and after.value == ":" and (before.kind == "nl" or before.value in {"{", ","}):
                continue  # object key
            if token.value in BICEP_KEYWORDS or token.value in BICEP_TYPES:
                continue
            if after.kind == "op" and after.value == "(":
                names.functions.add(token.value)
            else:
                names.used.add(token.value)

    walk(tokens)
    return names


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", BICEP_FILES, ids=_rel)
def test_bicep_brackets_balance_and_every_name_resolves(path: Path) -> None:
    tokens = _lex(path.read_text(encoding="utf-8"))
    stack: list[Token] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for token in tokens:
        if token.kind == "op" and token.value in "([{":
            stack.append(token)
        elif token.kind == "op" and token.value in pairs:
            assert stack and stack[-1].value == pairs[token.value], f"{_rel(path)}:{token.line}: unbalanced {token.value!r}"
            stack.pop()
    assert not stack, f"{_rel(path)}:{stack[-1].line}: {stack[-1].value!r} is never closed"

    names = _bicep_names(tokens)
    assert names.used <= set(names.declared), f"{_rel(path)} uses undeclared names: {sorted(names.used - set(names.declared))}"
    assert names.functions <= BICEP_FUNCTIONS, (
        f"{_rel(path)} calls unknown functions: {sorted(names.functions - BICEP_FUNCTIONS)}"
    )
    unused = {n for n, kind in names.declared.items() if kind in {"param", "var"} and n not in names.used}
    assert not unused, f"{_rel(path)} declares params or vars it never uses: {sorted(unused)}"


def _module_config(module: dict[str, Any]) -> dict[str, Any]:
    config = module["config"]
    return config["config"] if "condition" in config else config  # `= if (...) {...}` nests one level


def test_bicep_modules_exist_and_get_exactly_the_params_they_declare(bicep: dict[Path, dict[str, Any]]) -> None:
    checked = 0
    for path, ast in bicep.items():
        for name, module in ast.get("modules", {}).items():
            target = (path.parent / module["detail"]["path"]).resolve()
            assert target in bicep, f"{_rel(path)}: module {name} points at {module['detail']['path']}, which does not exist"
            declared = bicep[target]["parameters"]
            passed = set(_module_config(module).get("params", {}))
            required = {p for p, spec in declared.items() if spec.get("default") is None}
            assert passed <= set(declared), f"{_rel(path)}: module {name} passes unknown params {sorted(passed - set(declared))}"
            assert required <= passed, f"{_rel(path)}: module {name} misses required params {sorted(required - passed)}"
            checked += 1
    assert checked >= 5


def test_azd_wiring_points_at_declared_params() -> None:
    main_params = set(re.findall(r"(?m)^param (\w+)", (INFRA / "main.bicep").read_text(encoding="utf-8")))
    given = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert set(given) <= main_params
    assert {"environmentName", "location", "principalId"} <= set(given)
    tf_vars = set(re.findall(r'(?m)^variable "(\w+)"', (TERRAFORM / "variables.tf").read_text(encoding="utf-8")))
    assert set(json.loads((TERRAFORM / "main.tfvars.json").read_text(encoding="utf-8"))) <= tf_vars
    azure_yaml = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    assert re.search(r"(?m)^\s+path: infra$", azure_yaml) and re.search(r"(?m)^\s+host: function$", azure_yaml)


# ---------------------------------------------------------------- app settings


@dataclass(frozen=True)
class SettingBlocks:
    """The app settings one template sets, by where they come from."""

    platform: frozenset[str]
    app: frozenset[str]  # every auth way
    keyvault: frozenset[str]  # the keyvault way only

    def names(self, way: str) -> set[str]:
        return set(self.platform | self.app | (self.keyvault if way == "keyvault" else frozenset()))


def _bicep_settings(bicep: dict[Path, dict[str, Any]]) -> SettingBlocks:
    path = INFRA / "app" / "function.bicep"
    variables = bicep[path]["variables"]
    text = path.read_text(encoding="utf-8")
    # The three blocks are merged, the keyvault one for that way only, and all of it is the
    # site's appSettings: anything else would make the names below say nothing.
    assert "var allSettings = union(platformSettings, appSettings, authMode == 'keyvault' ? keyVaultSettings : {})" in text
    assert "appSettings: [for setting in items(allSettings): {" in text

    def keys(var: str) -> frozenset[str]:
        return frozenset(k.strip("'") for k in variables[var]["value"])

    return SettingBlocks(keys("platformSettings"), keys("appSettings"), keys("keyVaultSettings"))


def _terraform_settings(terraform: dict[str, dict[str, Any]]) -> SettingBlocks:
    locals_ = tf_locals(terraform)
    assert (
        locals_["all_settings"]
        == "${merge(local.platform_settings, local.app_settings, local.use_key_vault ? local.keyvault_settings : {})}"
    )
    assert locals_["use_key_vault"] == '${var.auth_mode == "keyvault"}'
    site = tf_resources(terraform)["azapi_resource.function_app"]
    assert "local.all_settings" in site["body"]["properties"]["siteConfig"]["appSettings"]
    return SettingBlocks(
        frozenset(fields(locals_["platform_settings"])),
        frozenset(fields(locals_["app_settings"])),
        frozenset(fields(locals_["keyvault_settings"])),
    )


@pytest.fixture(scope="module")
def settings_by_template(bicep: dict[Path, dict[str, Any]], terraform: dict[str, dict[str, Any]]) -> dict[str, SettingBlocks]:
    return {"bicep": _bicep_settings(bicep), "terraform": _terraform_settings(terraform)}


@pytest.mark.parametrize("template", ["bicep", "terraform"])
@pytest.mark.parametrize("way", AUTH_WAYS)
def test_app_settings_follow_the_catalogue(settings_by_template: dict[str, SettingBlocks], template: str, way: str) -> None:
    """The rule, for each auth way:

    - nothing unknown: every name is in SETTINGS or is one of PLATFORM_SETTINGS;
    - nothing local: no "local" setting (the AzureWebJobsStorage connection string, the
      simulator's http switch) is ever set in Azure;
    - every "app" setting without a default of its own (None or "") is set: its value
      depends on the deployment, and the code cannot guess it; except NOT_SET_IN_AZURE,
      which is never set, each for the reason given there;
    - settings naming a container or queue the templates create are set too;
    - "optional" settings appear in the keyvault way only, and AZURE_OPENAI_API_KEY never
      (keys are not pasted; the keyvault way reads the key with the app's identity).
    Other "app" settings with a default (timeouts, limits) may be set but are left to the code.
    """
    blocks = settings_by_template[template]
    names = blocks.names(way)
    by_name = {s.name: s for s in SETTINGS}

    unknown = names - set(by_name) - PLATFORM_SETTINGS
    assert not unknown, f"{template} sets settings the app does not read: {sorted(unknown)}"
    assert blocks.platform == PLATFORM_SETTINGS, f"{template}: platform settings differ from the allow-list"

    local = {n for n in names if n in by_name and by_name[n].deploy == "local"}
    assert not local, f"{template} sets local-only settings in Azure: {sorted(local)}"

    assert NOT_SET_IN_AZURE <= set(by_name), "NOT_SET_IN_AZURE names settings the app reads"
    # docs/settings.md says "yours (the templates leave it out)" for exactly these.
    assert NOT_SET_IN_AZURE == {s.name for s in SETTINGS if s.deploy == "yours"}, "NOT_SET_IN_AZURE and the settings marked yours differ"
    left_out = names & NOT_SET_IN_AZURE
    assert not left_out, f"{template} sets settings it should leave out: {sorted(left_out)}"
    required = {s.name for s in SETTINGS if s.deploy == "app" and not s.default} - NOT_SET_IN_AZURE | RESOURCE_NAME_SETTINGS
    missing = required - names
    assert not missing, f"{template} ({way}) does not set: {sorted(missing)}"

    optional = {s.name for s in SETTINGS if s.deploy == "optional"}
    assert not (blocks.app & optional), f"{template} sets optional settings in every way: {sorted(blocks.app & optional)}"
    expected_keyvault = optional - {"AZURE_OPENAI_API_KEY"}
    assert blocks.keyvault == expected_keyvault, f"{template}: the keyvault way should add exactly {sorted(expected_keyvault)}"
    assert "AZURE_OPENAI_API_KEY" not in names


def test_bicep_and_terraform_set_the_same_settings(settings_by_template: dict[str, SettingBlocks]) -> None:
    assert settings_by_template["bicep"] == settings_by_template["terraform"]


def test_host_storage_is_identity_based_in_both(bicep: dict[Path, dict[str, Any]], terraform: dict[str, dict[str, Any]]) -> None:
    app = bicep[INFRA / "app" / "function.bicep"]["variables"]["appSettings"]["value"]
    assert app["AzureWebJobsStorage__credential"] == "managedidentity"
    assert tf_locals(terraform)["app_settings"]["AzureWebJobsStorage__credential"] == '"managedidentity"'
    # The azurerm flex resource would add an AzureWebJobsStorage connection string (see function.tf).
    assert not [r for r in tf_resources(terraform) if r.startswith("azurerm_function_app_flex_consumption.")]


# ---------------------------------------------------------------- roles


def test_roles_are_named_and_the_same_in_both(bicep: dict[Path, dict[str, Any]], terraform: dict[str, dict[str, Any]]) -> None:
    guid = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    rbac_bicep = INFRA / "app" / "rbac.bicep"
    bicep_roles = role_names()
    tf_roles = {guid: name.strip() for guid, name in re.findall(rf'(?m)^\s+\w+\s+= "({guid})" # (.+)$', (TERRAFORM / "rbac.tf").read_text(encoding="utf-8"))}
    assert bicep_roles and bicep_roles == tf_roles, "each role GUID in a var/local with its name in a comment, the same in both"
    assert set(bicep_roles) == set(bicep_role_ids().values()), "every role rbac.bicep declares is named"

    assignments = [
        r["config"].get("config", r["config"])
        for r in bicep[rbac_bicep]["resources"].values()
        if r["type"] == "Microsoft.Authorization/roleAssignments"
    ]
    assert len(assignments) >= 10
    for assignment in assignments:
        assert "principalType" in assignment["properties"]
        assert assignment["name"]["function"]["type"] == "guid"
    for name, body in tf_resources(terraform).items():
        if name.startswith("azurerm_role_assignment."):
            assert "principal_type" in body, name
            assert body.get("name", "").startswith("${uuidv5("), f"{name}: name it from scope, principal and role"


# ---------------------------------------------------------------- outputs


def test_outputs_name_the_function_url_storage_queue_and_vault(
    bicep: dict[Path, dict[str, Any]], terraform: dict[str, dict[str, Any]]
) -> None:
    bicep_outputs = set(bicep[INFRA / "main.bicep"]["outputs"])
    tf_outputs = {name for block in tf_blocks(terraform, "output") for name in fields(block)}
    assert REQUIRED_OUTPUTS <= bicep_outputs
    assert REQUIRED_OUTPUTS <= tf_outputs
    # Terraform waits for the app's roles itself (time_sleep) and says so to the azd hook that Bicep
    # needs (infra/hooks/wait-for-app-roles.sh); Bicep must not output it, or each provision would
    # clear what the hook recorded.
    assert tf_outputs - bicep_outputs == {"IMAGES_ROLES_SETTLED_FOR"}
    assert bicep_outputs <= tf_outputs


# ---------------------------------------------------------------- checkov

NO_SKIP = "CKV_NONE"  # overrides the config's skip-check list, so every failure is reported


def _configured_skips() -> dict[str, str]:
    """{check id: reason} from .checkov.yaml's skip-check list (one `- ID  # reason` a line)."""
    text = CHECKOV_CONFIG.read_text(encoding="utf-8")
    block = re.search(r"(?ms)^skip-check:\n(.*?)(?=^\S|\Z)", text)
    assert block, "skip-check: missing from .checkov.yaml"
    items = [line for line in block.group(1).splitlines() if line.strip().startswith("-")]
    skips = {}
    for line in items:
        match = re.fullmatch(r"\s*-\s+(CKV2?_[A-Z]+_\d+)\s+#\s*(\S.*)", line)
        assert match, f"each skip needs a one-line reason: {line.strip()!r}"
        skips[match.group(1)] = match.group(2)
    return skips


@pytest.fixture(scope="module")
def checkov_reports() -> dict[str, dict[str, Any]]:
    """One checkov run over infra/ for both frameworks: {framework: report}."""
    checkov = _venv_tool("checkov")
    command = [
        str(checkov), "-d", "infra", "--framework", "bicep", "terraform",
        "--config-file", str(CHECKOV_CONFIG), "--skip-check", NO_SKIP, "-o", "json",
    ]  # fmt: skip
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", LOG_LEVEL="ERROR")
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, check=False)
    try:
        output = json.loads(run.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON (exit {run.returncode}):\n{run.stderr[-3000:]}")
    reports = output if isinstance(output, list) else [output]
    return {report["check_type"]: report for report in reports}


def test_checkov_scanned_both_frameworks(checkov_reports: dict[str, dict[str, Any]]) -> None:
    """A silent no-op (nothing found, nothing parsed) must not pass as a clean scan."""
    for framework in ("bicep", "terraform"):
        assert framework in checkov_reports, f"checkov reported nothing for {framework}"
        summary = checkov_reports[framework]["summary"]
        assert summary["resource_count"] > 0, f"checkov scanned no {framework} resources"
        assert summary["passed"] > 0
        assert summary["parsing_errors"] == 0, f"checkov could not parse some {framework} files"


def test_checkov_does_not_evaluate_azapi_bodies(checkov_reports: dict[str, dict[str, Any]]) -> None:
    """checkov has no check for `azapi_resource` (none in its sources names it), so the Terraform
    function app and the vault secret, both azapi resources, pass or fail nothing here: a clean
    checkov run says nothing about them. tests/test_infra_flex.py checks what checkov cannot see.
    Should this fail, checkov has learned to read azapi bodies: say so in docs/development.md (Infrastructure checks).
    """
    terraform = checkov_reports["terraform"]["results"]
    seen = [
        check["resource"]
        for outcome in ("passed_checks", "failed_checks", "skipped_checks")
        for check in terraform.get(outcome, [])
        if check["resource"].startswith("azapi_resource.")
    ]
    assert seen == [], f"checkov now evaluates azapi resources: {sorted(set(seen))}"
    assert any(check["resource"].startswith("azurerm_") for check in terraform["passed_checks"])


def test_checkov_fails_exactly_the_documented_skips(checkov_reports: dict[str, dict[str, Any]]) -> None:
    skips = _configured_skips()
    failed: dict[str, set[str]] = {}
    for framework, report in checkov_reports.items():
        for check in report["results"].get("failed_checks", []):
            failed.setdefault(check["check_id"], set()).add(f"{framework}:{check['file_path']}:{check['resource']}")
    unexpected = {check: sorted(where) for check, where in failed.items() if check not in skips}
    assert not unexpected, f"checkov failures not skipped in .checkov.yaml: {json.dumps(unexpected, indent=1)}"
    stale = sorted(set(skips) - set(failed))
    assert not stale, f"skips in .checkov.yaml that nothing needs any more (remove them): {stale}"


def test_skip_reasons_and_comments_state_what_azure_does() -> None:
    """Finding 7: two explanations claimed what Azure does not do.

    - CKV_AZURE_41: an expiry date would not stop the app; Key Vault does not enforce a secret's
      expiry on reads (Azure/AzureKeyVault#19), so the date would only mislead.
    - sasPolicy / sas_policy: it covers service and account SAS signed with an account key, not
      the user delegation SAS the app hands out (learn.microsoft.com/azure/storage/common/sas-expiration-policy).
    """
    reason = _configured_skips()["CKV_AZURE_41"]
    assert "stop" not in reason and "not enforce" in reason, reason
    for path, marker in ((INFRA / "core" / "storage.bicep", "sasPolicy: {"), (TERRAFORM / "main.tf", "sas_policy {")):
        text = path.read_text(encoding="utf-8")
        comment = text[: text.index(marker)].rsplit("\n\n", 1)[-1]
        assert "user delegation" in comment and "account key" in comment, f"{_rel(path)}: {comment}"
        assert "log longer ones" not in comment


def test_the_tfvars_example_suggests_only_values_the_variables_accept(terraform: dict[str, dict[str, Any]]) -> None:
    """Finding: terraform.tfvars.example suggested auth_mode = "keyless", which the validation refuses."""
    allowed: dict[str, list[str]] = {}
    for block in tf_blocks(terraform, "variable"):
        for name, body in fields(block).items():
            for validation in body.get("validation", []):
                found = re.search(r"contains\(\[(.*?)\], var\.(\w+)\)", validation["condition"])
                if found and found.group(2) == name:
                    allowed[name] = json.loads(f"[{found.group(1)}]")
    assert {"auth_mode", "image_model_name", "storage_replication_type"} <= set(allowed)
    example = (TERRAFORM / "terraform.tfvars.example").read_text(encoding="utf-8")
    suggested = re.findall(r'(?m)^#?\s*(\w+)\s*=\s*"([^"]*)"', example)
    assert ("auth_mode", "entra") in suggested
    for name, value in suggested:
        if name in allowed:
            assert value in allowed[name], f"terraform.tfvars.example suggests {name} = {value!r}; allowed: {allowed[name]}"
