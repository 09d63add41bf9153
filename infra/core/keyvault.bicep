// The keyvault way: a vault in RBAC mode with purge protection, holding the model key
// as one secret. The app reads it with its managed identity (Key Vault Secrets User on
// that secret only). No key is ever pasted: for a new AI account the key comes from
// listKeys() at deployment time; for an existing endpoint it is a secure parameter.
// Every read of the secret, every denied attempt and every change to the vault go to Log
// Analytics (AuditEvent), which PSRule's Azure.KeyVault.Logs asks for.
// API 2026-02-01: control-plane versions before it retire on 27 February 2027.

param name string
param location string = resourceGroup().location
param tags object = {}
param secretName string

@description('Log Analytics workspace receiving the vault\'s audit log (AuditEvent).')
param logAnalyticsWorkspaceId string

@description('Take the key from the AI account created by this deployment (else existingApiKey).')
param keyFromAiAccount bool
param aiAccountName string

@secure()
@description('The key of an existing endpoint (used when keyFromAiAccount is false).')
param existingApiKey string = ''

@description('Days a deleted vault stays recoverable; purge protection holds its name that long.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 7

resource vault 'Microsoft.KeyVault/vaults@2026-02-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    enablePurgeProtection: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = if (keyFromAiAccount) {
  name: aiAccountName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2026-02-01' = {
  parent: vault
  name: secretName
  properties: {
    contentType: 'text/plain'
    // ARM evaluates only the branch taken, so listKeys() runs only for an account made here.
    value: keyFromAiAccount ? account.listKeys().key1 : existingApiKey
    attributes: {
      enabled: true
    }
  }
}

resource auditLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-logs'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
output secretName string = secret.name
