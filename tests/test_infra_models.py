"""The model the templates deploy follows the family rows of shared/models/families.py.

Both templates keep a table {model: Azure model version} and look the version up from the
model name (an explicit version still wins). The tables, the models each template allows and
the default model must be the rows marked for the templates, and the default model is one a
new subscription can deploy (no registration, still taking new customers).
"""

from __future__ import annotations

import json
import re

from test_infra import INFRA, TERRAFORM, _fields, _tf_locals, parse_bicep, parse_terraform

from shared.models import BY_NAME, IAC_DEFAULT_MODEL, iac_versions


def _bicep_main() -> tuple[str, dict]:
    path = INFRA / "main.bicep"
    return path.read_text(encoding="utf-8"), parse_bicep()[path]


def test_bicep_version_table_is_the_rows() -> None:
    _, ast = _bicep_main()
    table = {key.strip("'"): value for key, value in ast["variables"]["imageModelVersions"]["value"].items()}
    assert table == iac_versions()


def test_terraform_version_table_is_the_rows() -> None:
    table = {key.strip('"'): value.strip('"') for key, value in _fields(_tf_locals(parse_terraform())["image_model_versions"]).items()}
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
    locals_ = _tf_locals(parse_terraform())
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
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    assert f"`{IAC_DEFAULT_MODEL}`" in readme and default.version and default.version in readme
