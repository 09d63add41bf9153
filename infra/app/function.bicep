// The Flex Consumption plan and the function app (Python 3.11, user-assigned identity),
// and every app setting. The names in appSettings and keyVaultSettings are settings the
// app reads (shared/settings.py SETTINGS); platformSettings are read by the Functions host
// itself. tests/test_infra.py checks all three against the catalogue and against the
// Terraform twin (infra/terraform/function.tf).

param name string
param planName string
param location string = resourceGroup().location
param tags object = {}

param identityId string
param identityClientId string

param storageBlobEndpoint string
param storageQueueEndpoint string
param deploymentContainerName string
param applicationInsightsConnectionString string

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 20

@description('AZURE_OPENAI_AUTH: entra or keyvault (main.bicep says why key is not offered).')
@allowed([
  'entra'
  'keyvault'
])
param authMode string = 'entra'

param openAiEndpoint string
param deploymentName string
@description('Model family of the deployment (the model name, e.g. gpt-image-1-mini).')
param modelFamily string
@description('IMAGES_BACKENDS: the deployment pool as JSON; empty: the one deployment.')
param imagesBackends string = ''

param keyVaultEndpoint string = ''
param apiKeySecretName string = ''

param imagesContainerName string
param jobsContainerName string
param queueName string
param resultsQueueName string = ''

@description('IMAGES_RETENTION_DAYS: the days of the storage lifecycle rule, so records say when they go.')
param retentionDays int = 0

@description('IMAGES_CALLER_AUTH: entra (App Service authentication with Entra ID, configured below) or key (function keys).')
@allowed([
  'entra'
  'key'
])
param callerAuth string = 'entra'

@description('Entra way: the client id of the app registration callers get tokens for (app/registration.bicep).')
param authClientId string = ''

@description('Entra way: the audiences a caller\'s token may carry (the Application ID URI and the client id).')
param authAudiences array = []

@description('Entra way: object ids of the identities allowed to call (the calling services and the operators); empty: any identity holding an app role.')
param authIdentities array = []

@description('IMAGES_CALLER_LIMITS: each caller\'s limits as JSON; empty: none.')
param callerLimits string = ''

// Every value below comes from a param, known when this module starts, so the settings can
// be looped into siteConfig.appSettings (a loop cannot wait for a runtime reference).
// Read by the Functions host, not by the app. On Flex Consumption the runtime and its
// version live in functionAppConfig, so FUNCTIONS_WORKER_RUNTIME and
// FUNCTIONS_EXTENSION_VERSION must not be set.
var platformSettings = {
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD;ClientId=${identityClientId}'
  // The Python worker configures azure-monitor-opentelemetry and streams the app's spans and logs (host.json telemetryMode).
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
  // The HTTP streams extension (azurefunctions-extensions-http-fastapi) needs worker indexing at init on Python <= 3.12.
  PYTHON_ENABLE_INIT_INDEXING: '1'
}

// Read by the app (and, for AzureWebJobsStorage__*, by the host and the queue trigger).
// Tunables with a default in shared/settings.py (timeouts, limits, link lifetime) are left
// to the code; names of resources created here are set so the two cannot disagree.
var appSettings = {
  AZURE_OPENAI_ENDPOINT: openAiEndpoint
  AZURE_OPENAI_DEPLOYMENT: deploymentName
  AZURE_OPENAI_AUTH: authMode
  AZURE_CLIENT_ID: identityClientId
  IMAGES_DEPLOYMENTS: '${deploymentName}=${modelFamily}'
  IMAGES_API_STYLE: 'deployment'
  IMAGES_CONTAINER: imagesContainerName
  IMAGES_JOBS_CONTAINER: jobsContainerName
  IMAGES_QUEUE: queueName
  IMAGES_RESULTS_QUEUE: resultsQueueName
  IMAGES_BACKENDS: imagesBackends
  IMAGES_RETENTION_DAYS: string(retentionDays)
  IMAGES_CALLER_AUTH: callerAuth
  IMAGES_CALLER_LIMITS: callerLimits
  // Identity-based host storage: blob and queue only, as in Microsoft's Flex samples. No
  // AzureWebJobsStorage__accountName: from it the host derives a table endpoint too and
  // writes diagnostic events there, which needs a Table role this app has no use for
  // (403 warnings otherwise: Azure/azure-functions-host#10995).
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
  AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
}

// Only the keyvault way; the key itself (AZURE_OPENAI_API_KEY) is never an app setting.
var keyVaultSettings = {
  AZURE_KEY_VAULT_ENDPOINT: keyVaultEndpoint
  AZURE_OPENAI_API_KEY_SECRET_NAME: apiKeySecretName
}

var allSettings = union(platformSettings, appSettings, authMode == 'keyvault' ? keyVaultSettings : {})

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Flex Consumption rejects (or ignores) many siteConfig properties other plans take,
    // ftpsState among them; tests/test_infra_flex.py lists them with their sources. FTP is off
    // through basicPublishingCredentialsPolicies below instead.
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      appSettings: [for setting in items(allSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Entra way: App Service authentication in front of the app. Every request needs a token for this
// app's registration from this tenant (401 otherwise, /healthz excepted); a token of an identity not
// in authIdentities is 403. The platform removes any X-MS-CLIENT-PRINCIPAL* header a client sent and
// sets them from the token; the app reads them in entra mode only, and starts in entra mode only when
// the platform says authentication is on (WEBSITE_AUTH_ENABLED). Available on Flex Consumption
// (docs/callers.md).
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = if (callerAuth == 'entra') {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/healthz'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: authAudiences
          defaultAuthorizationPolicy: empty(authIdentities) ? {} : {
            allowedPrincipals: {
              identities: authIdentities
            }
          }
        }
      }
    }
  }
}

// Publishing with basic (FTP/SCM) credentials stays off: azd and the CLI deploy with Entra ID.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output uri string = 'https://${site.properties.defaultHostName}'
