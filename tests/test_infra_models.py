"""The model the templates deploy follows the family rows of shared/models/families.py.

Both templates keep a table {model: Azure model version} and look the version up from the
model name (an explicit version still wins). The tables, the models each template allows and
the default model must be the rows marked for the templates, and the default model is one a
new subscription can deploy (no registration, still taking new customers).
"""

from __future__ import annotations

import json
import re

from test_infra import parse_bicep

from docs.templates import INFRA, ROOT, TERRAFORM, fields, parse_terraform, plain, tf_locals, tf_resources
from shared.models import BY_NAME, IAC_DEFAULT_MODEL, iac_skus, iac_versions


def _bicep_main() -> tuple[str, dict]:
    path = INFRA / "main.bicep"
    return path.read_text(encoding="utf-8"), parse_bicep()[path]


def test_bicep_version_table_is_the_rows() -> None:
    _, ast = _bicep_main()
    table = {key.strip("'"): value for key, value in ast["variables"]["imageModelVersions"]["value"].items()}
    assert table == iac_versions()


def test_terraform_version_table_is_the_rows() -> None:
    table = plain(fields(tf_locals(parse_terraform())["image_model_versions"]))
    assert table == iac_versions()


def test_both_allow_exactly_the_models_they_have_versions_for_and_default_to_gpt_image_2() -> None:
    text, ast = _bicep_main()
    model = ast["parameters"]["imageModelName"]
    allowed = next(d["argument"] for d in model["decorators"] if d["type"] == "allowed")
    assert set(allowed) == set(iac_versions())
    assert model["default"] == IAC_DEFAULT_MODEL
    assert ast["parameters"]["imageModelVersion"]["default"] == "", "empty: the version comes from the table"
    assert "var modelVersion = empty(imageModelVersion) ? imageModelVersions[imageModelName] : imageModelVersion" in text
    assert re.search(r"(?m)^    modelVersion: modelVersion$", text), "the ai module gets the looked-up version"

    variables = (TERRAFORM / "variables.tf").read_text(encoding="utf-8")
    name_block = re.search(r'(?ms)^variable "image_model_name" \{.*?^\}', variables)
    assert name_block
    assert f'default     = "{IAC_DEFAULT_MODEL}"' in name_block.group()
    listed = re.search(r"contains\(\[(.*?)\], var\.image_model_name\)", name_block.group())
    assert listed and set(re.findall(r'"([^"]+)"', listed.group(1))) == set(iac_versions())
    version_block = re.search(r'(?ms)^variable "image_model_version" \{.*?^\}', variables)
    assert version_block and 'default     = ""' in version_block.group()
    locals_ = tf_locals(parse_terraform())
    assert locals_["image_model_version"] == (
        '${var.image_model_version == "" ? local.image_model_versions[var.image_model_name] : var.image_model_version}'
    )
    main = (TERRAFORM / "main.tf").read_text(encoding="utf-8")
    assert "version = local.image_model_version" in main


def test_azd_defaults_are_the_default_model_and_its_own_version() -> None:
    bicep = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert bicep["imageModelName"]["value"] == f"${{IMAGES_MODEL_NAME={IAC_DEFAULT_MODEL}}}"
    assert bicep["imageModelVersion"]["value"] == "${IMAGES_MODEL_VERSION=}"
    terraform = json.loads((TERRAFORM / "main.tfvars.json").read_text(encoding="utf-8"))
    assert terraform["image_model_name"] == f"${{IMAGES_MODEL_NAME={IAC_DEFAULT_MODEL}}}"
    assert terraform["image_model_version"] == "${IMAGES_MODEL_VERSION=}"


def test_the_default_model_needs_no_registration_and_takes_new_customers() -> None:
    """Finding 3: the old default (gpt-image-1-mini) needs a registration and takes no new customers."""
    default = BY_NAME[IAC_DEFAULT_MODEL]
    assert not default.registration and default.no_new_customers is None
    readme = (ROOT / "docs" / "deploying.md").read_text(encoding="utf-8")
    assert f"`{IAC_DEFAULT_MODEL}`" in readme and default.version and default.version in readme


# --- deployment types, capacity, upgrades ---------------------------------------------------------


def test_both_accept_each_model_only_in_the_deployment_types_its_row_lists() -> None:
    """Finding 3: gpt-image-1-mini has no DataZone offering, and nothing checked the (model, SKU) pair."""
    assert iac_skus()["gpt-image-1-mini"] == ("GlobalStandard",)
    _, ast = _bicep_main()
    offered = {key.strip("'"): value for key, value in ast["variables"]["offeredDeployments"]["value"].items()}
    assert offered == {f"{model} {sku}": sku for model, skus in iac_skus().items() for sku in skus}
    text = (INFRA / "main.bicep").read_text(encoding="utf-8")
    assert "var deploymentSku = offeredDeployments['${imageModelName} ${imageDeploymentSku}']" in text
    assert "offeredDeployments['${imageModelName} ${fallbackDeploymentSku}']" in text
    assert re.search(r"(?m)^    skuName: deploymentSku$", text) and re.search(r"(?m)^    fallbackSkuName: fallbackSku$", text)

    table = plain(fields(tf_locals(parse_terraform())["image_model_skus"]))
    assert {model: tuple(skus) for model, skus in table.items()} == iac_skus()
    resources = tf_resources(parse_terraform())
    for name, sku in (("image", "var.image_deployment_sku"), ("fallback", "var.fallback_deployment_sku")):
        [lifecycle] = resources[f"azurerm_cognitive_deployment.{name}"]["lifecycle"]
        [precondition] = lifecycle["precondition"]
        assert precondition["condition"] == f"${{contains(local.image_model_skus[var.image_model_name], {sku})}}", name


def test_the_fallback_has_a_capacity_of_its_own_and_the_pool_follows_the_capacities() -> None:
    """Finding 3: the fallback reused the primary's capacity; the pool's RPM ignored both."""
    text = (INFRA / "main.bicep").read_text(encoding="utf-8")
    ai = (INFRA / "core" / "ai.bicep").read_text(encoding="utf-8")
    assert re.search(r"(?m)^    fallbackCapacity: fallbackDeploymentCapacity$", text)
    fallback = re.search(r"(?ms)^resource fallback .*?^}", ai)
    assert fallback and "capacity: fallbackCapacity" in fallback.group()
    assert "var primaryRpm = imageDeploymentRpm > 0 ? imageDeploymentRpm : imageDeploymentCapacity * rpmPerCapacityUnit" in text
    assert "var fallbackRpm = fallbackDeploymentRpm > 0 ? fallbackDeploymentRpm : fallbackDeploymentCapacity * rpmPerCapacityUnit" in text
    assert "rpm: primaryRpm" in text and "rpm: fallbackRpm" in text and "var rpmPerCapacityUnit = 3" in text

    resources = tf_resources(parse_terraform())
    [sku] = resources["azurerm_cognitive_deployment.fallback"]["sku"]
    assert sku["capacity"] == "${var.fallback_deployment_capacity}"
    locals_ = tf_locals(parse_terraform())
    assert locals_["rpm_per_capacity_unit"] == 3
    assert locals_["fallback_rpm"] == "${var.fallback_deployment_rpm > 0 ? var.fallback_deployment_rpm : var.fallback_deployment_capacity * local.rpm_per_capacity_unit}"
    assert "rpm = local.image_deployment_rpm" in locals_["images_backends"] and "rpm = local.fallback_rpm" in locals_["images_backends"]


def test_deployments_keep_their_version_until_it_retires_in_both() -> None:
    """Rules are per family: a deployment that upgraded itself within two weeks of a new default could outrun them."""
    ai = (INFRA / "core" / "ai.bicep").read_text(encoding="utf-8")
    assert "var versionUpgradeOption = 'OnceCurrentVersionExpired'" in ai
    assert ai.count("versionUpgradeOption: versionUpgradeOption") == 2
    resources = tf_resources(parse_terraform())
    for name in ("image", "fallback"):
        assert resources[f"azurerm_cognitive_deployment.{name}"]["version_upgrade_option"] == '"OnceCurrentVersionExpired"'


# --- the AI account, and its key out of the Terraform state ------------------------------------------


def test_the_ai_account_is_the_same_in_both() -> None:
    """Terraform's account is an azapi resource (so azurerm cannot read its keys into the state): the Bicep body exactly."""
    bicep = parse_bicep()[INFRA / "core" / "ai.bicep"]["resources"]["account"]["config"]
    azapi = tf_resources(parse_terraform())["azapi_resource.ai_account"]
    body = plain(azapi["body"])
    assert body["kind"] == bicep["kind"] == "AIServices" and body["sku"] == bicep["sku"]
    assert set(body["properties"]) == set(bicep["properties"])
    assert body["properties"]["customSubDomainName"] == "${local.ai_account_name}"
    assert body["properties"]["disableLocalAuth"] == "${!local.use_key_vault}"
    assert body["properties"]["networkAcls"] == bicep["properties"]["networkAcls"]
    assert plain(azapi["type"]).split("@")[0] == "Microsoft.CognitiveServices/accounts"


def test_no_model_key_reaches_the_terraform_state() -> None:
    """Finding: primary_access_key put the key in the state, and azurerm_cognitive_account reads keys on every refresh."""
    text = "\n".join(path.read_text(encoding="utf-8") for path in sorted(TERRAFORM.glob("*.tf")))
    code = re.sub(r"(?m)#.*$", "", text)
    assert "primary_access_key" not in code and "secondary_access_key" not in code
    assert not re.search(r'resource "azurerm_cognitive_account"', code), "azurerm stores the keys of an account with local auth"
    resources = tf_resources(parse_terraform())
    secret = resources["azapi_resource.api_key_secret"]
    assert "value" not in str(secret["body"]), "the key goes in sensitive_body (write-only), never in body"
    value = secret["sensitive_body"]["properties"]["value"]
    assert value == "${local.create_ai_account ? ephemeral.azapi_resource_action.ai_keys[0].output.key1 : var.existing_openai_api_key}"
    assert re.search(r'(?ms)^ephemeral "azapi_resource_action" "ai_keys" \{.*?action\s+= "listKeys"', code)
    variable = re.search(r'(?ms)^variable "existing_openai_api_key" \{.*?^\}', code)
    assert variable and re.search(r"ephemeral\s+= true", variable.group()), "the pasted key stays out of the plan and the state"


# --- azd: every parameter a user may need, by an environment variable --------------------------------

# Terraform variables azd cannot pass through main.tfvars.json, each with the way it is passed instead.
TERRAFORM_NOT_IN_TFVARS = {
    "existing_openai_api_key": "a secret: TF_VAR_existing_openai_api_key, never a file azd writes",
    "caller_principal_ids": "a list: TF_VAR_caller_principal_ids='[\"<object id>\"]' (azd substitutes strings only)",
    "operator_principal_ids": "a list: TF_VAR_operator_principal_ids='[\"<object id>\"]' (azd substitutes strings only)",
}
# The same setting under different values in the two tools, so under different azd variables.
DIFFERENT_VALUES = {"storageSkuName": "Standard_LRS", "storage_replication_type": "LRS"}


def _mapped(value: str) -> tuple[str, str | None]:
    found = re.fullmatch(r"\$\{(\w+)(?:=(.*))?\}", value)
    assert found, f"{value!r}: map a parameter to one ${{NAME}} or ${{NAME=default}}"
    return found.group(1), found.group(2)


def test_azd_maps_every_bicep_parameter_to_an_environment_variable() -> None:
    """Finding 4: 10 of 27 parameters were mapped, so azd could not pass the existing endpoint's key or the callers."""
    _, ast = _bicep_main()
    mapped = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert set(mapped) == set(ast["parameters"]), "every parameter of main.bicep, and nothing else"
    names = {param: _mapped(entry["value"])[0] for param, entry in mapped.items()}
    assert len(set(names.values())) == len(names), "one variable per parameter"
    assert names["existingOpenAiApiKey"] == "AZURE_OPENAI_EXISTING_API_KEY"
    assert "@secure()" in (INFRA / "main.bicep").read_text(encoding="utf-8").split("param existingOpenAiApiKey")[0][-200:], (
        "azd resolves an `azd env set-secret` reference only for a @secure() parameter"
    )
    assert names["callerPrincipalIds"] == "IMAGES_CALLER_PRINCIPAL_IDS" and ast["parameters"]["callerPrincipalIds"]["type"] == "array"


def test_azd_maps_the_terraform_variables_to_the_same_environment_variables() -> None:
    bicep = {param: _mapped(entry["value"]) for param, entry in
             json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"].items()}  # fmt: skip
    terraform = {name: _mapped(value) for name, value in json.loads((TERRAFORM / "main.tfvars.json").read_text(encoding="utf-8")).items()}
    variables = dict(re.findall(r'(?ms)^variable "(\w+)" \{(.*?)^\}', (TERRAFORM / "variables.tf").read_text(encoding="utf-8")))
    assert set(terraform) | set(TERRAFORM_NOT_IN_TFVARS) == set(variables)
    assert not set(terraform) & set(TERRAFORM_NOT_IN_TFVARS)
    by_variable = {name: param for param, (name, _) in bicep.items()}
    for variable, (env, default) in terraform.items():
        body = variables[variable]
        declared = re.search(r"(?m)^  default\s+= (.+)$", body)
        if declared and default is not None:
            assert default == json.loads(declared.group(1)) if declared.group(1).startswith('"') else default == declared.group(1), variable
        if variable not in DIFFERENT_VALUES and env not in ("AZURE_SUBSCRIPTION_ID", "IMAGES_ROLE_WAIT_SECONDS"):
            assert env in by_variable, f"{variable}: {env} maps no Bicep parameter; use the Bicep side's variable"
    assert terraform["storage_replication_type"][0] != bicep["storageSkuName"][0], "different values, different variables"


def test_azd_version_admits_arrays_and_secrets() -> None:
    """Arrays from environment variables: azd 1.23.4 (Azure/azure-dev#6694); env set-secret: 1.12."""
    text = (INFRA.parent / "azure.yaml").read_text(encoding="utf-8")
    assert re.search(r'(?m)^requiredVersions:\n  azd: ">= 1\.23\.4"$', text)
