# The entra way of knowing callers (var.caller_auth, docs/callers.md): the Terraform twin of
# infra/app/registration.bicep and of the authsettingsV2 in infra/app/function.bicep.
#
# The app registration callers get tokens for, with its two app roles (the values the app
# checks: shared/callers/identity.py CALLER_ROLE, OPERATOR_ROLE), its service principal
# (assignment required, so Entra issues tokens only to identities given a role), and the roles
# of the calling services and the operators. The deployer needs the right to create
# applications and Application Administrator (or AppRoleAssignment.ReadWrite.All).

resource "azuread_application" "callers" {
  count = local.use_entra_callers ? 1 : 0

  display_name     = "Image generation (${var.environment_name})"
  sign_in_audience = "AzureADMyOrg"
  identifier_uris  = [local.caller_app_uri]

  api {
    # v2 tokens: aud is the client id, iss https://login.microsoftonline.com/<tenant>/v2.0.
    requested_access_token_version = 2
  }

  # A person (an operator opening /gallery) signs in through App Service authentication
  # (/.auth/login/aad), which returns to the redirect URI. No client secret is stored anywhere:
  # without one App Service authentication signs people in with the OpenID Connect implicit flow
  # and asks for an ID token only, so ID token issuance is on and access token issuance stays off.
  web {
    redirect_uris = [local.sign_in_redirect_uri]

    implicit_grant {
      id_token_issuance_enabled     = true
      access_token_issuance_enabled = false
    }
  }

  app_role {
    id                   = local.caller_role_id
    value                = "Images.Caller"
    display_name         = "Images caller"
    description          = "Generates and edits images, and sees its own jobs, images and records."
    allowed_member_types = ["Application", "User"]
    enabled              = true
  }

  app_role {
    id                   = local.operator_role_id
    value                = "Images.Operator"
    display_name         = "Images operator"
    description          = "Sees every caller's jobs, images, records and usage."
    allowed_member_types = ["Application", "User"]
    enabled              = true
  }
}

resource "azuread_service_principal" "callers" {
  count = local.use_entra_callers ? 1 : 0

  client_id                    = azuread_application.callers[0].client_id
  app_role_assignment_required = true
}

resource "azuread_app_role_assignment" "caller" {
  for_each = local.use_entra_callers ? toset(var.caller_principal_ids) : toset([])

  app_role_id         = local.caller_role_id
  principal_object_id = each.value
  resource_object_id  = azuread_service_principal.callers[0].object_id
}

resource "azuread_app_role_assignment" "operator" {
  for_each = local.use_entra_callers ? toset(local.operator_ids) : toset([])

  app_role_id         = local.operator_role_id
  principal_object_id = each.value
  resource_object_id  = azuread_service_principal.callers[0].object_id
}

# App Service authentication in front of the app: every request needs a token for this app's
# registration from this tenant (401 otherwise, /healthz excepted); a token of an identity not
# listed is 403. The platform removes any X-MS-CLIENT-PRINCIPAL* header a client sent and sets
# them from the token; the app reads them in entra mode only, and starts in entra mode only when
# the platform says authentication is on (WEBSITE_AUTH_ENABLED).
resource "azapi_resource" "auth_settings" {
  count = local.use_entra_callers ? 1 : 0

  type      = "Microsoft.Web/sites/config@2024-04-01"
  name      = "authsettingsV2"
  parent_id = azapi_resource.function_app.id
  body = {
    properties = {
      platform = {
        enabled = true
      }
      globalValidation = {
        requireAuthentication       = true
        unauthenticatedClientAction = "Return401"
        excludedPaths               = ["/healthz"]
      }
      httpSettings = {
        requireHttps = true
      }
      login = {
        tokenStore = {
          enabled = false
        }
      }
      identityProviders = {
        azureActiveDirectory = {
          enabled = true
          registration = {
            clientId     = azuread_application.callers[0].client_id
            openIdIssuer = "https://login.microsoftonline.com/${data.azurerm_client_config.current.tenant_id}/v2.0"
          }
          validation = {
            allowedAudiences = [local.caller_app_uri, azuread_application.callers[0].client_id]
            defaultAuthorizationPolicy = length(concat(var.caller_principal_ids, local.operator_ids)) == 0 ? {} : {
              allowedPrincipals = {
                identities = concat(var.caller_principal_ids, local.operator_ids)
              }
            }
          }
        }
      }
    }
  }
}
