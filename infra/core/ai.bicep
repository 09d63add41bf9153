// An Azure AI Services account with one gpt-image deployment (and an optional fallback of
// another deployment type). Created only when no existing endpoint is given. Keyless (the default) turns local auth off, so the only
// way in is Entra ID (Cognitive Services OpenAI User); the keyvault way keeps keys on
// because the key is what the vault holds.

param name string
param location string = resourceGroup().location
param tags object = {}

@description('Turn key auth off (the keyless way).')
param disableLocalAuth bool = true

param deploymentName string
param modelName string
param modelVersion string
param skuName string = 'GlobalStandard'

@minValue(1)
param capacity int = 1

@description('A second deployment of the same model (another SKU), the fallback of the pool; empty: none.')
param fallbackDeploymentName string = ''
param fallbackSkuName string = ''

@description('Capacity of the fallback, its own: a DataZone allowance is smaller than the Global Standard one.')
@minValue(1)
param fallbackCapacity int = 1

@description('Log Analytics workspace receiving the account\'s audit and request logs.')
param logAnalyticsWorkspaceId string

// OnceCurrentVersionExpired: the deployment keeps the version the app's rules were written for
// (rules are per family, and a new default version may change what the model accepts), and moves
// to the model's default version only when that version retires, instead of stopping
// (NoAutoUpgrade) or changing under the app within two weeks of a new default
// (OnceNewDefaultVersionAvailable). Learn: Azure OpenAI model versions, "How model versions work".
// The app warns before a family retires (shared/models/lifecycle.py).
var versionUpgradeOption = 'OnceCurrentVersionExpired'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  tags: tags
  kind: 'AIServices'
  sku: {
    name: 'S0'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    // Entra ID tokens need a custom subdomain; the name is unique per resourceToken.
    customSubDomainName: name
    disableLocalAuth: disableLocalAuth
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
    }
  }
}

resource deployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: skuName
    capacity: capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
    versionUpgradeOption: versionUpgradeOption
  }
}

// Deployments of one account are created one at a time.
resource fallback 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = if (!empty(fallbackDeploymentName)) {
  parent: account
  name: empty(fallbackDeploymentName) ? 'none' : fallbackDeploymentName
  sku: {
    name: empty(fallbackSkuName) ? skuName : fallbackSkuName
    capacity: fallbackCapacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
    versionUpgradeOption: versionUpgradeOption
  }
  dependsOn: [
    deployment
  ]
}

// Who managed the account, who called the model and how it answered (no prompts, no images).
resource auditLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-logs'
  scope: account
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'Audit'
        enabled: true
      }
      {
        category: 'RequestResponse'
        enabled: true
      }
    ]
  }
}

output name string = account.name
output endpoint string = 'https://${account.properties.customSubDomainName}.openai.azure.com/'
output deploymentName string = deployment.name
