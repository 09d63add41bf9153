# The Terraform twin of infra/main.bicep: the same resources, settings and roles. The
# function app and its settings are in function.tf, the roles in rbac.tf.

data "azurerm_client_config" "current" {}

data "azurerm_subscription" "current" {}

locals {
  # ARM's guid(a, b, ...) is a version-5 UUID over this namespace of "a-b-...", so uuidv5() gives
  # Bicep's guid() exactly: the resource token and every role assignment name come from it.
  arm_guid_namespace = "11fb06fb-712d-4ddd-98c7-e71bbd588830"
  subscription_id    = "/subscriptions/${data.azurerm_subscription.current.subscription_id}"
  # Bicep's token exactly: take(replace(guid(subscription().id, environmentName, location), '-', ''), 16).
  # Not azapi's unique_string: it differs from ARM's uniqueString for some inputs, the README's
  # example among them (tests/test_infra_parity.py shows where; docs/deploying.md: Names).
  resource_token = var.resource_token != "" ? var.resource_token : substr(replace(uuidv5(local.arm_guid_namespace, join("-", [local.subscription_id, var.environment_name, var.location])), "-", ""), 0, 16)
  tags           = { "azd-env-name" = var.environment_name }

  # Azure's model version of each model var.image_model_name allows: the rows of
  # shared/models/families.py marked for the templates (tests/test_infra_models.py keeps this
  # table, Bicep's and the rows equal). A model has its own version.
  image_model_versions = {
    "gpt-image-1-mini" = "2025-10-06"
    "gpt-image-1.5"    = "2025-12-16"
    "gpt-image-2"      = "2026-04-21"
  }
  image_model_version = var.image_model_version == "" ? local.image_model_versions[var.image_model_name] : var.image_model_version

  # The app registration of the entra way (callers.tf): its Application ID URI and role ids,
  # Bicep's guid(token, 'Images.Caller') and guid(token, 'Images.Operator') exactly.
  use_entra_callers      = var.caller_auth == "entra"
  with_caller_job_reader = !local.use_entra_callers
  caller_app_uri         = "api://${data.azurerm_client_config.current.tenant_id}/images-${local.resource_token}"
  caller_role_id         = uuidv5(local.arm_guid_namespace, join("-", [local.resource_token, "Images.Caller"]))
  operator_role_id       = uuidv5(local.arm_guid_namespace, join("-", [local.resource_token, "Images.Operator"]))
  # The deploying user (principal_id) operates what it deployed: it sees every caller's work and can
  # run infra/smoke_test.py, whose queued job is the queue's caller's.
  operator_ids = concat(var.principal_id == "" ? [] : [var.principal_id], var.operator_principal_ids)

  create_ai_account         = var.existing_openai_endpoint == ""
  use_key_vault             = var.auth_mode == "keyvault"
  deployment_name           = var.image_deployment_name == "" ? var.image_model_name : var.image_deployment_name
  resource_group_name       = var.resource_group_name == "" ? "rg-${var.environment_name}" : var.resource_group_name
  storage_account_name      = "st${local.resource_token}"
  application_insights_name = "appi-${local.resource_token}"
  function_app_name         = "func-${local.resource_token}"
  ai_account_name           = "cog-${local.resource_token}"
  key_vault_name            = "kv-${local.resource_token}"
  api_key_secret_name       = "azure-openai-api-key"
  openai_endpoint           = local.create_ai_account ? "https://${local.ai_account_name}.openai.azure.com/" : var.existing_openai_endpoint

  deployment_container_name = "app-package-${substr(local.function_app_name, 0, 32)}-${substr(local.resource_token, 0, 7)}"
  app_container_names       = [var.images_container_name, var.jobs_container_name]
  # Created here, so the host never needs account-wide write to create them (rbac.tf).
  host_container_names = ["azure-webjobs-hosts", "azure-webjobs-secrets"]
  container_names      = concat(local.app_container_names, local.host_container_names, [local.deployment_container_name])
  # The host moves a message to <queue>-poison after maxDequeueCount failed attempts.
  queue_names = concat([var.queue_name, "${var.queue_name}-poison"], var.results_queue_name == "" ? [] : [var.results_queue_name])
}

resource "azurerm_resource_group" "main" {
  name     = local.resource_group_name
  location = var.location
  tags     = local.tags
}

# The app's one identity; user-assigned so settings and roles can name it up front.
resource "azurerm_user_assigned_identity" "app" {
  name                = "id-${local.resource_token}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

# ---- monitoring: local (key) auth off; telemetry goes with the managed identity ----

resource "azurerm_log_analytics_workspace" "main" {
  name                         = "log-${local.resource_token}"
  location                     = azurerm_resource_group.main.location
  resource_group_name          = azurerm_resource_group.main.name
  sku                          = "PerGB2018"
  retention_in_days            = 30
  local_authentication_enabled = false
  tags                         = local.tags
}

resource "azurerm_application_insights" "main" {
  name                         = local.application_insights_name
  location                     = azurerm_resource_group.main.location
  resource_group_name          = azurerm_resource_group.main.name
  application_type             = "web"
  workspace_id                 = azurerm_log_analytics_workspace.main.id
  local_authentication_enabled = false
  tags                         = local.tags
}

# ---- storage: host, deployment package, images, job records, queues; no shared keys ----

resource "azurerm_storage_account" "main" {
  name                              = local.storage_account_name
  location                          = azurerm_resource_group.main.location
  resource_group_name               = azurerm_resource_group.main.name
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = var.storage_replication_type
  access_tier                       = "Hot"
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  allow_nested_items_to_be_public   = false
  cross_tenant_replication_enabled  = false
  local_user_enabled                = false
  sftp_enabled                      = false
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  infrastructure_encryption_enabled = true
  queue_encryption_key_type         = "Account"
  table_encryption_key_type         = "Account"
  public_network_access_enabled     = true
  tags                              = local.tags

  blob_properties {
    versioning_enabled = true

    delete_retention_policy {
      days = 7
    }

    container_delete_retention_policy {
      days = 7
    }
  }

  # Covers only service and account SAS signed with an account key (none while shared keys are
  # off): logs one over 7 days should keys come back. The app's links are user delegation SAS,
  # outside this policy, bounded by their 7-day key (shared/settings.py MAX_LINK_TTL_SECONDS).
  sas_policy {
    expiration_period = "07.00:00:00"
    expiration_action = "Log"
  }

  network_rules {
    default_action = "Allow"
    bypass         = ["AzureServices"]
  }
}

resource "azurerm_storage_container" "main" {
  for_each = toset(local.container_names)

  name                  = each.value
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

resource "azurerm_storage_queue" "main" {
  for_each = toset(local.queue_names)

  name               = each.value
  storage_account_id = azurerm_storage_account.main.id
}

# Versioning keeps every overwrite; without the first rule the rewritten job records would
# pile up versions forever. The second is the archive's retention (IMAGES_RETENTION_DAYS): off
# at 0; a deleted blob's previous version then goes by the first rule, its soft-deleted copy
# after 7 days.
resource "azurerm_storage_management_policy" "main" {
  storage_account_id = azurerm_storage_account.main.id

  rule {
    name    = "expire-previous-versions"
    enabled = true

    filters {
      blob_types = ["blockBlob"]
    }

    actions {
      version {
        delete_after_days_since_creation = 30
      }
    }
  }

  rule {
    name    = "delete-after-retention"
    enabled = var.retention_days > 0

    filters {
      blob_types   = ["blockBlob"]
      prefix_match = [for name in local.app_container_names : "${name}/"]
    }

    actions {
      base_blob {
        delete_after_days_since_creation_greater_than = var.retention_days
      }
    }
  }
}

# ---- the model: a new AI Services account with one gpt-image deployment ----

# An azapi resource, like infra/core/ai.bicep, rather than azurerm_cognitive_account: azurerm reads
# the account's keys into the state on every refresh whenever local auth is on (the keyvault
# way), so the model key would sit in the state file. Here nothing in the state holds it: the
# vault secret gets it from an ephemeral listKeys (below) through a write-only argument.
resource "azapi_resource" "ai_account" {
  count = local.create_ai_account ? 1 : 0

  type      = "Microsoft.CognitiveServices/accounts@2024-10-01"
  name      = local.ai_account_name
  parent_id = azurerm_resource_group.main.id
  location  = var.ai_location == "" ? azurerm_resource_group.main.location : var.ai_location
  tags      = local.tags

  identity {
    type = "SystemAssigned"
  }

  body = {
    kind = "AIServices"
    sku = {
      name = "S0"
    }
    properties = {
      # Entra ID tokens need a custom subdomain.
      customSubDomainName = local.ai_account_name
      # Keyless: Entra ID only. The keyvault way keeps keys on: the key is what the vault holds.
      disableLocalAuth    = !local.use_key_vault
      publicNetworkAccess = "Enabled"
      networkAcls = {
        defaultAction = "Allow"
      }
    }
  }

  # Destroyed first, then purged (below): a soft-deleted account holds its name for 48 hours,
  # and the next apply of the same environment would fail on it.
  depends_on = [azapi_resource_action.purge_ai_account]
}

# After `terraform destroy` deletes the account, purge its soft-deleted copy, as azurerm's
# cognitive_account.purge_soft_delete_on_destroy did, so the environment can be applied again.
resource "azapi_resource_action" "purge_ai_account" {
  count = local.create_ai_account ? 1 : 0

  type        = "Microsoft.CognitiveServices/locations/resourceGroups/deletedAccounts@2024-10-01"
  resource_id = "${local.subscription_id}/providers/Microsoft.CognitiveServices/locations/${var.ai_location == "" ? var.location : var.ai_location}/resourceGroups/${local.resource_group_name}/deletedAccounts/${local.ai_account_name}"
  method      = "DELETE"
  when        = "destroy"
}

locals {
  # The deployment types Azure offers each model in (the rows of shared/models/families.py;
  # tests/test_infra_models.py keeps this table, Bicep's and the rows equal).
  image_model_skus = {
    "gpt-image-1-mini" = ["GlobalStandard"]
    "gpt-image-1.5"    = ["GlobalStandard", "DataZoneStandard"]
    "gpt-image-2"      = ["GlobalStandard", "DataZoneStandard"]
  }
  # An image deployment's capacity unit is 3 requests per minute (Learn, quotas and limits: "2
  # capacity units (6 requests per minute)"): the pool never sends a deployment more than that.
  rpm_per_capacity_unit = 3
  image_deployment_rpm  = var.image_deployment_rpm > 0 ? var.image_deployment_rpm : var.image_deployment_capacity * local.rpm_per_capacity_unit
  fallback_rpm          = var.fallback_deployment_rpm > 0 ? var.fallback_deployment_rpm : var.fallback_deployment_capacity * local.rpm_per_capacity_unit
  # A fallback deployment makes the deployment name a pool of two (shared/pool/config.py).
  fallback_deployment_name = local.create_ai_account && var.fallback_deployment_sku != "" ? "${local.deployment_name}-fallback" : ""
  images_backends = local.fallback_deployment_name == "" ? "" : jsonencode({
    (local.deployment_name) = [
      { endpoint = local.openai_endpoint, deployment = local.deployment_name, rpm = local.image_deployment_rpm, priority = 0 },
      { endpoint = local.openai_endpoint, deployment = local.fallback_deployment_name, rpm = local.fallback_rpm, priority = 1 },
    ]
  })
}

# versionUpgradeOption OnceCurrentVersionExpired: the deployment keeps the version the app's
# rules were written for (rules are per family, and a new default version may change what the
# model accepts), and moves to the model's default version only when that version retires,
# instead of stopping (NoAutoUpgrade) or changing under the app within two weeks of a new
# default (OnceNewDefaultVersionAvailable). Learn: Azure OpenAI model versions, "How model
# versions work". The app warns before a family retires (shared/models/lifecycle.py).
resource "azurerm_cognitive_deployment" "image" {
  count = local.create_ai_account ? 1 : 0

  name                   = local.deployment_name
  cognitive_account_id   = azapi_resource.ai_account[0].id
  version_upgrade_option = "OnceCurrentVersionExpired"

  model {
    format  = "OpenAI"
    name    = var.image_model_name
    version = local.image_model_version
  }

  sku {
    name     = var.image_deployment_sku
    capacity = var.image_deployment_capacity
  }

  lifecycle {
    precondition {
      condition     = contains(local.image_model_skus[var.image_model_name], var.image_deployment_sku)
      error_message = "${var.image_model_name} is not offered as ${var.image_deployment_sku}; its deployment types: ${join(", ", local.image_model_skus[var.image_model_name])}."
    }
  }
}

resource "azurerm_cognitive_deployment" "fallback" {
  count = local.fallback_deployment_name == "" ? 0 : 1

  name                   = local.fallback_deployment_name
  cognitive_account_id   = azapi_resource.ai_account[0].id
  version_upgrade_option = "OnceCurrentVersionExpired"

  model {
    format  = "OpenAI"
    name    = var.image_model_name
    version = local.image_model_version
  }

  # Its own capacity: a DataZone allowance is smaller than the Global Standard one, so the
  # primary's capacity could exceed it.
  sku {
    name     = var.fallback_deployment_sku
    capacity = var.fallback_deployment_capacity
  }

  lifecycle {
    precondition {
      condition     = contains(local.image_model_skus[var.image_model_name], var.fallback_deployment_sku)
      error_message = "${var.image_model_name} is not offered as ${var.fallback_deployment_sku}; its deployment types: ${join(", ", local.image_model_skus[var.image_model_name])}."
    }
  }

  # Deployments of one account are created one at a time.
  depends_on = [azurerm_cognitive_deployment.image]
}

# Who managed the account, who called the model and how it answered (no prompts, no images).
resource "azurerm_monitor_diagnostic_setting" "ai_account" {
  count = local.create_ai_account ? 1 : 0

  name                       = "audit-logs"
  target_resource_id         = azapi_resource.ai_account[0].id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category = "Audit"
  }

  enabled_log {
    category = "RequestResponse"
  }
}

# ---- the keyvault way: the model key in a vault (RBAC mode, purge protection) ----

resource "azurerm_key_vault" "main" {
  count = local.use_key_vault ? 1 : 0

  name                       = local.key_vault_name
  location                   = azurerm_resource_group.main.location
  resource_group_name        = azurerm_resource_group.main.name
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  rbac_authorization_enabled = true
  purge_protection_enabled   = true
  # Purge protection holds a deleted vault's name this long.
  soft_delete_retention_days    = 7
  public_network_access_enabled = true
  tags                          = local.tags

  network_acls {
    default_action = "Allow"
    bypass         = "AzureServices"
  }
}

# Written through ARM (control plane), like the Bicep template: Terraform needs neither a
# data-plane role on the vault nor a network path to it. The value is write-only
# (sensitive_body); after regenerating the model key, re-run with
# -replace='azapi_resource.api_key_secret[0]'.
resource "azapi_resource" "api_key_secret" {
  count = local.use_key_vault ? 1 : 0

  type      = "Microsoft.KeyVault/vaults/secrets@2026-02-01"
  name      = local.api_key_secret_name
  parent_id = azurerm_key_vault.main[0].id
  # 2026-02-01: Key Vault control-plane versions before it retire on 27 February 2027; older
  # azapi builds may not know it yet, so skip their offline schema check.
  schema_validation_enabled = false

  body = {
    properties = {
      contentType = "text/plain"
      attributes = {
        enabled = true
      }
    }
  }

  # Write-only (never in the state or the plan): the new account's key from an ephemeral
  # listKeys, or the existing endpoint's key from an ephemeral variable.
  sensitive_body = {
    properties = {
      value = local.create_ai_account ? ephemeral.azapi_resource_action.ai_keys[0].output.key1 : var.existing_openai_api_key
    }
  }
}

# The account's keys, read when the secret is written and never stored.
ephemeral "azapi_resource_action" "ai_keys" {
  count = local.use_key_vault && local.create_ai_account ? 1 : 0

  type                   = "Microsoft.CognitiveServices/accounts@2024-10-01"
  resource_id            = azapi_resource.ai_account[0].id
  action                 = "listKeys"
  method                 = "POST"
  response_export_values = ["key1"]
}

# Who read, wrote or deleted what, through Azure Monitor (classic Storage Analytics logging
# and storage insights would need the account keys, which are off).
resource "azurerm_monitor_diagnostic_setting" "storage" {
  for_each = toset(["blobServices", "queueServices"])

  name                       = "storage-logs"
  target_resource_id         = "${azurerm_storage_account.main.id}/${each.value}/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category = "StorageRead"
  }

  enabled_log {
    category = "StorageWrite"
  }

  enabled_log {
    category = "StorageDelete"
  }
}

# Every read of the secret, every denied attempt and every change to the vault (AuditEvent),
# which PSRule's Azure.KeyVault.Logs asks for.
resource "azurerm_monitor_diagnostic_setting" "key_vault" {
  count = local.use_key_vault ? 1 : 0

  name                       = "audit-logs"
  target_resource_id         = azurerm_key_vault.main[0].id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category = "AuditEvent"
  }
}
