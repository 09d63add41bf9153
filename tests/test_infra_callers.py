"""Issue 21: both templates configure the entra way of knowing callers alike.

- ``callerAuth`` / ``caller_auth`` (entra by default, or key) is what the app is told (IMAGES_CALLER_AUTH),
  mapped to the same azd variable in both;
- App Service authentication (authsettingsV2) in front of the app, the same in both: authentication
  required, 401 for anonymous calls, /healthz excepted, Microsoft Entra ID with the app registration's
  client id, the v2 issuer of the tenant, the Application ID URI and the client id as audiences, and the
  calling services and the operators as the allowed identities;
- the app registration is made by the templates (Bicep: the Microsoft Graph extension; Terraform: azuread),
  with the same Application ID URI and app role ids in both;
- a person signs in too (an operator opening /gallery): the registration has the Web redirect URI of App
  Service authentication's sign-in at the app's default host name, and ID token issuance, with no secret;
- the key way leaves all of it out and keeps the callers' read of the jobs container.
"""

from __future__ import annotations

import json
import re
from typing import Any

from test_infra import parse_bicep
from test_infra_parity import SAMPLES, _bicep_main_scope, _bicep_names, _terraform_evaluator

from docs.templates import INFRA, TERRAFORM, parse_terraform, plain, tf_locals, tf_resources, tf_variables
from shared.callers import OPERATOR_ROLE
from shared.settings import Settings


def _bicep_auth() -> dict[str, Any]:
    resource = parse_bicep()[INFRA / "app" / "function.bicep"]["resources"]["authSettings"]
    assert resource["type"] == "Microsoft.Web/sites/config" and resource["config"]["condition"]["operator"]["operands"] == {
        "operand_1": "callerAuth",
        "operand_2": "entra",
    }
    config: dict[str, Any] = resource["config"]["config"]
    assert (config["parent"], config["name"]) == ("site", "authsettingsV2")
    return config["properties"]


def _terraform_auth() -> dict[str, Any]:
    resource = tf_resources(parse_terraform())["azapi_resource.auth_settings"]
    assert resource["count"] == "${local.use_entra_callers ? 1 : 0}"
    assert (resource["type"], resource["name"]) == ('"Microsoft.Web/sites/config@2024-04-01"', '"authsettingsV2"')
    assert resource["parent_id"] == "${azapi_resource.function_app.id}"
    properties: dict[str, Any] = resource["body"]["properties"]
    return properties


def test_app_service_authentication_is_the_same_in_both() -> None:
    bicep, terraform = _bicep_auth(), _terraform_auth()
    literal = ("platform", "globalValidation", "httpSettings", "login")
    assert {k: bicep[k] for k in literal} == {k: plain(terraform[k]) for k in literal}
    assert bicep["platform"] == {"enabled": True}
    assert bicep["globalValidation"] == {"requireAuthentication": True, "unauthenticatedClientAction": "Return401", "excludedPaths": ["/healthz"]}
    assert bicep["login"] == {"tokenStore": {"enabled": False}}  # nothing keeps callers' tokens
    aad_bicep, aad_tf = bicep["identityProviders"]["azureActiveDirectory"], terraform["identityProviders"]["azureActiveDirectory"]
    assert aad_bicep["enabled"] is aad_tf["enabled"] is True
    # The registration's client id, and the tenant's v2 issuer.
    assert aad_bicep["registration"]["clientId"] == "authClientId"
    assert aad_tf["registration"]["clientId"] == "${azuread_application.callers[0].client_id}"
    assert aad_bicep["registration"]["openIdIssuer"] == "${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0"
    assert aad_tf["registration"]["openIdIssuer"] == '"https://login.microsoftonline.com/${data.azurerm_client_config.current.tenant_id}/v2.0"'
    # Audiences: the Application ID URI and the client id; identities: the callers and the operators.
    assert aad_tf["validation"]["allowedAudiences"] == ["${local.caller_app_uri}", "${azuread_application.callers[0].client_id}"]
    main = (INFRA / "main.bicep").read_text(encoding="utf-8")
    assert re.search(r"authAudiences: useEntraCallers \? \[\s+callerAppUri\s+registration\.outputs\.clientId\s+\] : \[\]", main)
    assert "authIdentities: concat(callerPrincipalIds, operators)" in main and "operatorPrincipalIds: operators" in main
    assert re.search(r"var operators = concat\(empty\(principalId\) \? \[\] : \[\s+principalId\s+\], operatorPrincipalIds\)", main)
    assert tf_locals(parse_terraform())["operator_ids"] == '${concat(var.principal_id == "" ? [] : [var.principal_id], var.operator_principal_ids)}'
    policy = aad_bicep["validation"]["defaultAuthorizationPolicy"]["operator"]["operands"]
    assert policy["false_value"] == {"allowedPrincipals": {"identities": "authIdentities"}} and policy["true_value"] == {}
    both = "concat(var.caller_principal_ids, local.operator_ids)"
    assert aad_tf["validation"]["defaultAuthorizationPolicy"] == f"${{length({both}) == 0 ? {{}} : {{allowedPrincipals = {{identities = {both}}}}}}}"


def test_the_app_registration_is_named_alike_in_both() -> None:
    main = (INFRA / "main.bicep").read_text(encoding="utf-8")
    assert "var callerAppUri = 'api://${tenant().tenantId}/images-${token}'" in main
    assert "var callerRoleId = guid(token, 'Images.Caller')" in main and "var operatorRoleId = guid(token, 'Images.Operator')" in main
    locals_ = tf_locals(parse_terraform())
    assert locals_["caller_app_uri"] == '"api://${data.azurerm_client_config.current.tenant_id}/images-${local.resource_token}"'
    assert locals_["caller_role_id"] == '${uuidv5(local.arm_guid_namespace, join("-", [local.resource_token, "Images.Caller"]))}'
    assert locals_["operator_role_id"] == '${uuidv5(local.arm_guid_namespace, join("-", [local.resource_token, "Images.Operator"]))}'
    module = parse_bicep()[INFRA / "main.bicep"]["modules"]["registration"]
    assert module["detail"]["path"] == "app/registration.bicep" and "useEntraCallers" in json.dumps(module["config"]["condition"])
    application = tf_resources(parse_terraform())["azuread_application.callers"]
    assert application["identifier_uris"] == ["${local.caller_app_uri}"] and application["sign_in_audience"] == '"AzureADMyOrg"'
    assert [r["value"] for r in application["app_role"]] == ['"Images.Caller"', f'"{OPERATOR_ROLE}"']
    registration = (INFRA / "app" / "registration.bicep").read_text(encoding="utf-8")
    assert "signInAudience: 'AzureADMyOrg'" in registration and "requestedAccessTokenVersion: 2" in registration
    assert application["api"][0]["requested_access_token_version"] == 2


def test_both_tell_the_app_the_way_chosen_and_default_to_entra() -> None:
    assert "IMAGES_CALLER_AUTH: callerAuth\n" in (INFRA / "app" / "function.bicep").read_text(encoding="utf-8")
    assert tf_locals(parse_terraform())["app_settings"]["IMAGES_CALLER_AUTH"] == "${var.caller_auth}"
    bicep = parse_bicep()[INFRA / "main.bicep"]["parameters"]["callerAuth"]
    allowed = next(d["argument"] for d in bicep["decorators"] if d["type"] == "allowed")
    variables = tf_variables(parse_terraform())
    assert set(allowed) == {"entra", "key"} == set(re.findall(r'"(\w+)"', variables["caller_auth"]["validation"][0]["condition"]))
    assert bicep["default"] == "entra" == variables["caller_auth"]["default"].strip('"')
    assert Settings.model_fields["caller_auth"].default == "key"  # the app's own default: a deployment says entra
    for path in (INFRA / "main.parameters.json", TERRAFORM / "main.tfvars.json"):
        assert "${IMAGES_CALLER_AUTH=entra}" in path.read_text(encoding="utf-8")


def test_the_key_way_keeps_the_job_readers_and_the_entra_way_drops_them() -> None:
    main = (INFRA / "main.bicep").read_text(encoding="utf-8")
    assert "withCallerJobReader: !useEntraCallers" in main
    assert tf_locals(parse_terraform())["with_caller_job_reader"] == "${!local.use_entra_callers}"
    reader = tf_resources(parse_terraform())["azurerm_role_assignment.caller_job_reader"]
    assert reader["for_each"] == "${local.with_caller_job_reader ? toset(var.caller_principal_ids) : toset([])}"


def test_both_output_what_a_calling_service_asks_tokens_for() -> None:
    outputs = parse_bicep()[INFRA / "main.bicep"]["outputs"]
    assert {"IMAGES_CALLER_AUTH", "IMAGES_CALLER_APP_ID", "IMAGES_CALLER_SCOPE"} <= set(outputs)
    text = (TERRAFORM / "outputs.tf").read_text(encoding="utf-8")
    assert '"${local.caller_app_uri}/.default"' in text and "'${callerAppUri}/.default'" in (INFRA / "main.bicep").read_text(encoding="utf-8")


def test_both_let_a_person_sign_in_at_the_apps_host_without_a_secret() -> None:
    """App Service authentication's browser sign-in (/.auth/login/aad) returns to https://<host>/.auth/login/aad/callback,
    which Entra accepts only as a Web redirect URI of the registration; without a client secret the platform uses
    the implicit flow for an ID token, which the registration must issue. Missing either, no one opens /gallery."""
    parsed = parse_bicep()
    application = parsed[INFRA / "app" / "registration.bicep"]["resources"]["application"]["config"]
    implicit_grant = {"enableIdTokenIssuance": True, "enableAccessTokenIssuance": False}
    assert application["web"] == {"redirectUris": "signInRedirectUris", "implicitGrantSettings": implicit_grant}
    params = parsed[INFRA / "main.bicep"]["modules"]["registration"]["config"]["config"]["params"]
    assert params["signInRedirectUris"] == ["signInRedirectUri"]
    [web] = tf_resources(parse_terraform())["azuread_application.callers"]["web"]
    assert web["redirect_uris"] == ["${local.sign_in_redirect_uri}"]
    [grant] = web["implicit_grant"]
    assert {key: grant[key] for key in ("id_token_issuance_enabled", "access_token_issuance_enabled")} == {
        "id_token_issuance_enabled": True,
        "access_token_issuance_enabled": False,
    }
    # The app's default host name, the same in both; the site opts into no random-suffixed unique host name.
    for sample in SAMPLES:
        evaluate_bicep, _ = _bicep_main_scope(sample)
        host = f"{_bicep_names(sample)['function app']}.azurewebsites.net"
        uri = f"https://{host}/.auth/login/aad/callback"
        assert evaluate_bicep("signInRedirectUri") == uri == _terraform_evaluator(sample)("${local.sign_in_redirect_uri}")
    site_bicep = parsed[INFRA / "app" / "function.bicep"]["resources"]["site"]["config"]["properties"]
    site_tf = tf_resources(parse_terraform())["azapi_resource.function_app"]["body"]["properties"]
    assert "autoGeneratedDomainNameLabelScope" not in site_bicep and "autoGeneratedDomainNameLabelScope" not in site_tf
    # No secret anywhere: no password on the registration, no secret setting for the platform.
    assert set(_bicep_auth()["identityProviders"]["azureActiveDirectory"]["registration"]) == {"clientId", "openIdIssuer"}
    assert set(_terraform_auth()["identityProviders"]["azureActiveDirectory"]["registration"]) == {"clientId", "openIdIssuer"}
    assert "passwordCredentials" not in application
    assert not [name for name in tf_resources(parse_terraform()) if name.startswith("azuread_application_password")]
