# The same names as infra/main.bicep's outputs (UPPER_SNAKE, so azd can use either).

output "AZURE_LOCATION" {
  value = azurerm_resource_group.main.location
}

output "AZURE_TENANT_ID" {
  value = data.azurerm_client_config.current.tenant_id
}

output "AZURE_RESOURCE_GROUP" {
  value = azurerm_resource_group.main.name
}

output "AZURE_FUNCTION_APP_NAME" {
  value = azapi_resource.function_app.name
}

output "AZURE_FUNCTION_URL" {
  value = "https://${azapi_resource.function_app.output.properties.defaultHostName}"
}

# The app's identity: grant it roles of your own (an existing AI account) by this id.
output "AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID" {
  value = azurerm_user_assigned_identity.app.principal_id
}

# The identity whose new roles time_sleep.app_roles gave time to take effect: azd's postprovision
# hook (infra/hooks/wait-for-app-roles.sh) then need not wait again. Bicep has no such output.
output "IMAGES_ROLES_SETTLED_FOR" {
  value = time_sleep.app_roles.triggers.principal_id
}

output "AZURE_STORAGE_ACCOUNT_NAME" {
  value = azurerm_storage_account.main.name
}

output "AZURE_STORAGE_BLOB_ENDPOINT" {
  value = azurerm_storage_account.main.primary_blob_endpoint
}

output "AZURE_STORAGE_QUEUE_ENDPOINT" {
  value = azurerm_storage_account.main.primary_queue_endpoint
}

output "IMAGES_QUEUE" {
  value = var.queue_name
}

output "IMAGES_RESULTS_QUEUE" {
  value = var.results_queue_name
}

output "IMAGES_CONTAINER" {
  value = var.images_container_name
}

output "IMAGES_JOBS_CONTAINER" {
  value = var.jobs_container_name
}

output "AZURE_KEY_VAULT_NAME" {
  value = local.use_key_vault ? azurerm_key_vault.main[0].name : ""
}

output "AZURE_KEY_VAULT_ENDPOINT" {
  value = local.use_key_vault ? azurerm_key_vault.main[0].vault_uri : ""
}

output "AZURE_OPENAI_ENDPOINT" {
  value = local.openai_endpoint
}

output "AZURE_OPENAI_DEPLOYMENT" {
  value = local.deployment_name
}

output "AZURE_OPENAI_AUTH" {
  value = var.auth_mode
}

output "IMAGES_CALLER_AUTH" {
  value = var.caller_auth
}

# What a calling service asks tokens for (entra way): get_bearer_token_provider(credential, IMAGES_CALLER_SCOPE).
output "IMAGES_CALLER_APP_ID" {
  value = local.use_entra_callers ? azuread_application.callers[0].client_id : ""
}

output "IMAGES_CALLER_SCOPE" {
  value = local.use_entra_callers ? "${local.caller_app_uri}/.default" : ""
}
