# Every role the app's identity (and, optionally, the deploying developer and the calling services) holds, each at
# the narrowest scope the service allows; the same set as infra/app/rbac.bicep, whose
# header says why each is needed. Role GUIDs rather than names: one lookup less, and the
# same values as the Bicep twin. Each name is Bicep's guid(scope id, principal, role GUID),
# computed with uuidv5() over ARM's guid namespace (main.tf), so both templates give every
# assignment the same name and re-creating one is idempotent.

locals {
  roles = {
    storage_blob_data_contributor     = "ba92f5b4-2d11-453d-a403-e96b0029c9fe" # Storage Blob Data Contributor
    storage_blob_data_reader          = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1" # Storage Blob Data Reader
    storage_blob_delegator            = "db58b8e5-c6ad-4a2a-8342-4190687cbf4a" # Storage Blob Delegator
    storage_queue_data_contributor    = "974c5e8b-45b9-4653-ba55-5f855dd0fb88" # Storage Queue Data Contributor
    storage_queue_data_message_sender = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a" # Storage Queue Data Message Sender
    key_vault_secrets_user            = "4633458b-17de-408a-b874-0445c86b69e6" # Key Vault Secrets User
    cognitive_services_openai_user    = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd" # Cognitive Services OpenAI User
    monitoring_metrics_publisher      = "3913510d-42f4-4e42-8a64-420c390055eb" # Monitoring Metrics Publisher
  }
  role_id = { for key, guid in local.roles : key => "/subscriptions/${data.azurerm_subscription.current.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/${guid}" }

  app_principal_id = azurerm_user_assigned_identity.app.principal_id
  with_developer   = var.principal_id != ""
  # On an existing endpoint the operator grants Cognitive Services OpenAI User (infra/README.md).
  with_openai_user = local.create_ai_account && !local.use_key_vault
  # The developer gets what a local run of the app and host needs; the deployment package
  # is the platform's business.
  developer_containers = concat(local.app_container_names, local.host_container_names)
  secret_scope         = local.use_key_vault ? "${azurerm_key_vault.main[0].id}/secrets/${local.api_key_secret_name}" : ""

  # The scope ids Bicep's guid() hashes: resourceId() of the same names, spelled as Bicep spells
  # the types (guid() is case-sensitive), known before anything exists.
  resource_group_id = "${local.subscription_id}/resourceGroups/${local.resource_group_name}"
  arm_id = {
    storage_account      = "${local.resource_group_id}/providers/Microsoft.Storage/storageAccounts/${local.storage_account_name}"
    application_insights = "${local.resource_group_id}/providers/Microsoft.Insights/components/${local.application_insights_name}"
    ai_account           = "${local.resource_group_id}/providers/Microsoft.CognitiveServices/accounts/${local.ai_account_name}"
    secret               = "${local.resource_group_id}/providers/Microsoft.KeyVault/vaults/${local.key_vault_name}/secrets/${local.api_key_secret_name}"
  }
}

# ---- the app's identity ----

resource "azurerm_role_assignment" "app_container_writer" {
  for_each = toset(local.container_names)

  name               = uuidv5(local.arm_guid_namespace, join("-", ["${local.arm_id.storage_account}/blobServices/default/containers/${each.value}", local.app_principal_id, local.roles.storage_blob_data_contributor]))
  scope              = azurerm_storage_container.main[each.value].id
  role_definition_id = local.role_id.storage_blob_data_contributor
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
}

# The host's AzureWebJobsStorage health probe lists containers: an account-level read.
resource "azurerm_role_assignment" "app_account_reader" {
  name               = uuidv5(local.arm_guid_namespace, join("-", [local.arm_id.storage_account, local.app_principal_id, local.roles.storage_blob_data_reader]))
  scope              = azurerm_storage_account.main.id
  role_definition_id = local.role_id.storage_blob_data_reader
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
}

# A user delegation key (for the read-only SAS links) can only be requested at account scope.
resource "azurerm_role_assignment" "app_delegator" {
  name               = uuidv5(local.arm_guid_namespace, join("-", [local.arm_id.storage_account, local.app_principal_id, local.roles.storage_blob_delegator]))
  scope              = azurerm_storage_account.main.id
  role_definition_id = local.role_id.storage_blob_delegator
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "app_queue_contributor" {
  for_each = toset(local.queue_names)

  name               = uuidv5(local.arm_guid_namespace, join("-", ["${local.arm_id.storage_account}/queueServices/default/queues/${each.value}", local.app_principal_id, local.roles.storage_queue_data_contributor]))
  scope              = azurerm_storage_queue.main[each.value].id
  role_definition_id = local.role_id.storage_queue_data_contributor
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "app_metrics_publisher" {
  name               = uuidv5(local.arm_guid_namespace, join("-", [local.arm_id.application_insights, local.app_principal_id, local.roles.monitoring_metrics_publisher]))
  scope              = azurerm_application_insights.main.id
  role_definition_id = local.role_id.monitoring_metrics_publisher
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "app_secrets_user" {
  count = local.use_key_vault ? 1 : 0

  name               = uuidv5(local.arm_guid_namespace, join("-", [local.arm_id.secret, local.app_principal_id, local.roles.key_vault_secrets_user]))
  scope              = local.secret_scope
  role_definition_id = local.role_id.key_vault_secrets_user
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
  depends_on         = [azapi_resource.api_key_secret]
}

resource "azurerm_role_assignment" "app_openai_user" {
  count = local.with_openai_user ? 1 : 0

  name               = uuidv5(local.arm_guid_namespace, join("-", [local.arm_id.ai_account, local.app_principal_id, local.roles.cognitive_services_openai_user]))
  scope              = azapi_resource.ai_account[0].id
  role_definition_id = local.role_id.cognitive_services_openai_user
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
}

# The platform uploads the app's package with the app's identity, whose role on the package
# container was granted seconds earlier; Azure RBAC takes seconds to minutes to apply a new
# assignment (up to 30 documented), and neither azd nor Core Tools retries the 403
# (Azure/azure-dev#8026). So `terraform apply` returns only once the app's roles have had this
# long: the publish after it finds them in effect. Created (and waited for) once per identity.
resource "time_sleep" "app_roles" {
  create_duration = "${var.role_wait_seconds}s"
  triggers = {
    principal_id = local.app_principal_id
  }

  depends_on = [
    azurerm_role_assignment.app_container_writer,
    azurerm_role_assignment.app_account_reader,
    azurerm_role_assignment.app_delegator,
    azurerm_role_assignment.app_queue_contributor,
    azurerm_role_assignment.app_metrics_publisher,
    azurerm_role_assignment.app_secrets_user,
    azurerm_role_assignment.app_openai_user,
  ]
}

# ---- the developer, for local runs against the cloud (optional) ----

resource "azurerm_role_assignment" "developer_container_writer" {
  for_each = local.with_developer ? toset(local.developer_containers) : toset([])

  name               = uuidv5(local.arm_guid_namespace, join("-", ["${local.arm_id.storage_account}/blobServices/default/containers/${each.value}", var.principal_id, local.roles.storage_blob_data_contributor]))
  scope              = azurerm_storage_container.main[each.value].id
  role_definition_id = local.role_id.storage_blob_data_contributor
  principal_id       = var.principal_id
  principal_type     = var.principal_type
}

resource "azurerm_role_assignment" "developer_account_reader" {
  count = local.with_developer ? 1 : 0

  name               = uuidv5(local.arm_guid_namespace, join("-", [local.arm_id.storage_account, var.principal_id, local.roles.storage_blob_data_reader]))
  scope              = azurerm_storage_account.main.id
  role_definition_id = local.role_id.storage_blob_data_reader
  principal_id       = var.principal_id
  principal_type     = var.principal_type
}

resource "azurerm_role_assignment" "developer_delegator" {
  count = local.with_developer ? 1 : 0

  name               = uuidv5(local.arm_guid_namespace, join("-", [local.arm_id.storage_account, var.principal_id, local.roles.storage_blob_delegator]))
  scope              = azurerm_storage_account.main.id
  role_definition_id = local.role_id.storage_blob_delegator
  principal_id       = var.principal_id
  principal_type     = var.principal_type
}

resource "azurerm_role_assignment" "developer_queue_contributor" {
  for_each = local.with_developer ? toset(local.queue_names) : toset([])

  name               = uuidv5(local.arm_guid_namespace, join("-", ["${local.arm_id.storage_account}/queueServices/default/queues/${each.value}", var.principal_id, local.roles.storage_queue_data_contributor]))
  scope              = azurerm_storage_queue.main[each.value].id
  role_definition_id = local.role_id.storage_queue_data_contributor
  principal_id       = var.principal_id
  principal_type     = var.principal_type
}

resource "azurerm_role_assignment" "developer_secrets_user" {
  count = local.with_developer && local.use_key_vault ? 1 : 0

  name               = uuidv5(local.arm_guid_namespace, join("-", [local.arm_id.secret, var.principal_id, local.roles.key_vault_secrets_user]))
  scope              = local.secret_scope
  role_definition_id = local.role_id.key_vault_secrets_user
  principal_id       = var.principal_id
  principal_type     = var.principal_type
  depends_on         = [azapi_resource.api_key_secret]
}

resource "azurerm_role_assignment" "developer_openai_user" {
  count = local.with_developer && local.with_openai_user ? 1 : 0

  name               = uuidv5(local.arm_guid_namespace, join("-", [local.arm_id.ai_account, var.principal_id, local.roles.cognitive_services_openai_user]))
  scope              = azapi_resource.ai_account[0].id
  role_definition_id = local.role_id.cognitive_services_openai_user
  principal_id       = var.principal_id
  principal_type     = var.principal_type
}

# ---- the calling services (optional): queue in; job records out in the key way only ----
# (the entra way leaves the container-wide read out: it would show every caller's job records,
# which the API shows each caller only its own of; callers.tf gives them the caller app role)

resource "azurerm_role_assignment" "caller_queue_sender" {
  for_each = toset(var.caller_principal_ids)

  name               = uuidv5(local.arm_guid_namespace, join("-", ["${local.arm_id.storage_account}/queueServices/default/queues/${var.queue_name}", each.value, local.roles.storage_queue_data_message_sender]))
  scope              = azurerm_storage_queue.main[var.queue_name].id
  role_definition_id = local.role_id.storage_queue_data_message_sender
  principal_id       = each.value
  principal_type     = var.caller_principal_type
}

resource "azurerm_role_assignment" "caller_job_reader" {
  for_each = local.with_caller_job_reader ? toset(var.caller_principal_ids) : toset([])

  name               = uuidv5(local.arm_guid_namespace, join("-", ["${local.arm_id.storage_account}/blobServices/default/containers/${var.jobs_container_name}", each.value, local.roles.storage_blob_data_reader]))
  scope              = azurerm_storage_container.main[var.jobs_container_name].id
  role_definition_id = local.role_id.storage_blob_data_reader
  principal_id       = each.value
  principal_type     = var.caller_principal_type
}
