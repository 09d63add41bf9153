# The Flex Consumption plan and the function app (Python 3.11, user-assigned identity),
# and every app setting. The names in app_settings and keyvault_settings are settings the
# app reads (shared/settings.py SETTINGS); platform_settings are read by the Functions host
# itself. tests/test_infra.py checks all three against the catalogue and against the Bicep
# twin (infra/app/function.bicep).
#
# Why azapi and not azurerm_function_app_flex_consumption: that resource always writes an
# AzureWebJobsStorage connection string (with an empty key when storage_authentication_type
# is a managed identity), and an exact AzureWebJobsStorage setting wins over the
# identity-based AzureWebJobsStorage__* ones, so the host and the app would try a key that
# does not exist (hashicorp/terraform-provider-azurerm#29693). The site is declared here
# exactly as in infra/app/function.bicep.

locals {
  # Read by the Functions host, not by the app. On Flex Consumption the runtime and its
  # version live in functionAppConfig, so FUNCTIONS_WORKER_RUNTIME and
  # FUNCTIONS_EXTENSION_VERSION must not be set.
  platform_settings = {
    APPLICATIONINSIGHTS_CONNECTION_STRING     = azurerm_application_insights.main.connection_string
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "Authorization=AAD;ClientId=${azurerm_user_assigned_identity.app.client_id}"
    # The Python worker configures azure-monitor-opentelemetry and streams the app's spans and logs (host.json telemetryMode).
    PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY = "true"
    # The HTTP streams extension (azurefunctions-extensions-http-fastapi) needs worker indexing at init on Python <= 3.12.
    PYTHON_ENABLE_INIT_INDEXING = "1"
  }

  # Read by the app (and, for AzureWebJobsStorage__*, by the host and the queue trigger).
  # Tunables with a default in shared/settings.py (timeouts, limits, link lifetime) are
  # left to the code; names of resources created here are set so the two cannot disagree.
  app_settings = {
    AZURE_OPENAI_ENDPOINT   = local.openai_endpoint
    AZURE_OPENAI_DEPLOYMENT = local.deployment_name
    AZURE_OPENAI_AUTH       = var.auth_mode
    AZURE_CLIENT_ID         = azurerm_user_assigned_identity.app.client_id
    IMAGES_DEPLOYMENTS      = "${local.deployment_name}=${var.image_model_name}"
    IMAGES_API_STYLE        = "deployment"
    IMAGES_CONTAINER        = var.images_container_name
    IMAGES_JOBS_CONTAINER   = var.jobs_container_name
    IMAGES_QUEUE            = var.queue_name
    IMAGES_RESULTS_QUEUE    = var.results_queue_name
    IMAGES_BACKENDS         = local.images_backends
    IMAGES_RETENTION_DAYS   = tostring(var.retention_days)
    IMAGES_CALLER_AUTH      = var.caller_auth
    IMAGES_CALLER_LIMITS    = var.caller_limits
    # Identity-based host storage: blob and queue only, as in Microsoft's Flex samples. No
    # AzureWebJobsStorage__accountName: from it the host derives a table endpoint too and
    # writes diagnostic events there, which needs a Table role this app has no use for
    # (403 warnings otherwise: Azure/azure-functions-host#10995).
    AzureWebJobsStorage__blobServiceUri  = azurerm_storage_account.main.primary_blob_endpoint
    AzureWebJobsStorage__queueServiceUri = azurerm_storage_account.main.primary_queue_endpoint
    AzureWebJobsStorage__credential      = "managedidentity"
    AzureWebJobsStorage__clientId        = azurerm_user_assigned_identity.app.client_id
  }

  # Only the keyvault way; the key itself (AZURE_OPENAI_API_KEY) is never an app setting.
  keyvault_settings = {
    AZURE_KEY_VAULT_ENDPOINT         = try(azurerm_key_vault.main[0].vault_uri, "")
    AZURE_OPENAI_API_KEY_SECRET_NAME = local.api_key_secret_name
  }

  all_settings = merge(local.platform_settings, local.app_settings, local.use_key_vault ? local.keyvault_settings : {})
}

resource "azurerm_service_plan" "main" {
  name                = "plan-${local.resource_token}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  os_type             = "Linux"
  sku_name            = "FC1"
  tags                = local.tags
}

resource "azapi_resource" "function_app" {
  type      = "Microsoft.Web/sites@2024-04-01"
  name      = local.function_app_name
  parent_id = azurerm_resource_group.main.id
  location  = azurerm_resource_group.main.location
  tags      = merge(local.tags, { "azd-service-name" = "api" })

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }

  body = {
    kind = "functionapp,linux"
    properties = {
      serverFarmId = azurerm_service_plan.main.id
      httpsOnly    = true
      # Flex Consumption rejects (or ignores) many siteConfig properties other plans take,
      # ftpsState among them; tests/test_infra_flex.py lists them with their sources. FTP is
      # off through basicPublishingCredentialsPolicies below instead.
      siteConfig = {
        minTlsVersion = "1.2"
        http20Enabled = true
        appSettings   = [for name, value in local.all_settings : { name = name, value = value }]
      }
      functionAppConfig = {
        deployment = {
          storage = {
            type  = "blobContainer"
            value = "${azurerm_storage_account.main.primary_blob_endpoint}${local.deployment_container_name}"
            authentication = {
              type                           = "UserAssignedIdentity"
              userAssignedIdentityResourceId = azurerm_user_assigned_identity.app.id
            }
          }
        }
        scaleAndConcurrency = {
          instanceMemoryMB     = var.instance_memory_mb
          maximumInstanceCount = var.maximum_instance_count
        }
        runtime = {
          name    = "python"
          version = "3.11"
        }
      }
    }
  }

  response_export_values = ["properties.defaultHostName"]

  # The host and the app start as soon as the site exists: every role of the app's identity
  # must be there first, as Bicep's dependsOn on the whole rbac module makes sure; here also
  # given the time to take effect (time_sleep.app_roles waits after every app role, rbac.tf).
  depends_on = [
    time_sleep.app_roles,
    azurerm_storage_container.main,
    azurerm_storage_queue.main,
  ]
}

# Publishing with basic (FTP/SCM) credentials stays off: azd and the CLI deploy with Entra ID.
resource "azapi_resource" "basic_publishing_off" {
  for_each = toset(["ftp", "scm"])

  type      = "Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01"
  name      = each.value
  parent_id = azapi_resource.function_app.id
  body = {
    properties = {
      allow = false
    }
  }
}
