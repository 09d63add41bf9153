// Image generation on Azure Functions (Flex Consumption): the function app, its storage,
// monitoring, the model (a new AI Services account with a gpt-image deployment, or an
// existing endpoint) and, for the keyvault way, the vault holding the model key.
// Deploy with `azd up`, or `az deployment sub create` (see infra/README.md).

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment; with the subscription and location it seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource except the AI account (see aiLocation); it must offer Flex Consumption.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Suffix of every resource name (AZURE_RESOURCE_TOKEN); empty: derived from the subscription, environmentName and location. Set it to keep the names of an environment created under another naming scheme (docs/deploying.md: Names).')
@maxLength(16)
param resourceToken string = ''

// The app's AZURE_OPENAI_AUTH ways by the same names. Its third way, key (the model key in an app
// setting), is not offered: the templates never write a key where whoever reads the site's
// configuration reads it too; keyvault serves a model that needs a key, from Key Vault.
@description('How the app authenticates to the model (AZURE_OPENAI_AUTH): entra (Entra ID, no key) or keyvault (the model key, read from Key Vault). key is not offered: the templates never put a key in an app setting.')
@allowed([
  'entra'
  'keyvault'
])
param authMode string = 'entra'

@description('An existing Azure OpenAI endpoint (https://NAME.openai.azure.com); empty: create an AI Services account here.')
param existingOpenAiEndpoint string = ''

@secure()
@description('The key of the existing endpoint, stored in Key Vault (keyvault way with existingOpenAiEndpoint only).')
param existingOpenAiApiKey string = ''

@description('Region of the AI account; empty: location. gpt-image models are offered in a few regions only.')
param aiLocation string = ''

@description('gpt-image model to deploy; also the model family the app applies its rules for. gpt-image-1-mini and gpt-image-1.5 need a registration (docs/deploying.md: The models).')
@allowed([
  'gpt-image-1-mini'
  'gpt-image-1.5'
  'gpt-image-2'
])
param imageModelName string = 'gpt-image-2'

@description('Version of imageModelName; empty: the version imageModelVersions gives for it.')
param imageModelVersion string = ''

@description('Deployment name; empty: the model name.')
param imageDeploymentName string = ''

@description('Deployment type (SKU) of the model deployment: one Azure offers the model in (GlobalStandard; DataZoneStandard for gpt-image-1.5 and gpt-image-2).')
param imageDeploymentSku string = 'GlobalStandard'

@description('Capacity of the model deployment in units of 3 requests per minute.')
@minValue(1)
param imageDeploymentCapacity int = 1

@description('Deployment type (SKU) of a second deployment of the same model, which the app fails over to (e.g. DataZoneStandard); empty: none. docs/pools.md.')
param fallbackDeploymentSku string = ''

@description('Capacity of the fallback deployment, its own (a DataZone allowance is smaller than the Global Standard one).')
@minValue(1)
param fallbackDeploymentCapacity int = 1

@description('Requests per minute the pool sends the model deployment and the fallback at most; 0: the capacity times 3.')
@minValue(0)
param imageDeploymentRpm int = 0
@minValue(0)
param fallbackDeploymentRpm int = 0

param imagesContainerName string = 'images'
param jobsContainerName string = 'image-jobs'
param queueName string = 'image-jobs'

@description('Queue receiving {id, status, result|error} for each finished job; empty: off.')
param resultsQueueName string = ''

@description('Memory of each Flex Consumption instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Most instances Flex Consumption scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 20

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param storageSkuName string = 'Standard_LRS'

@description('Object id of the deploying user (azd sets AZURE_PRINCIPAL_ID) to grant data access for local runs; empty: none.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Object ids of the calling services (their managed identities): each gets Storage Queue Data Message Sender on the job queue and, the entra way (callerAuth), the caller app role; the key way, Storage Blob Data Reader on the jobs container instead.')
param callerPrincipalIds array = []

@allowed([
  'ServicePrincipal'
  'Group'
  'User'
])
param callerPrincipalType string = 'ServicePrincipal'

@description('How callers are known (IMAGES_CALLER_AUTH, docs/callers.md): entra (an app registration made here, App Service authentication, each calling identity a caller that sees only its own) or key (function keys, one caller).')
@allowed([
  'entra'
  'key'
])
param callerAuth string = 'entra'
@description('Object ids of the operators (entra way): people or services that see every caller\'s jobs, images and records. Each gets the operator app role, and so does principalId.')
param operatorPrincipalIds array = []
@description('Days archived images, records and job records are kept before a Blob lifecycle rule deletes them (IMAGES_RETENTION_DAYS); 0: kept.')
@minValue(0)
@maxValue(36500)
param retentionDays int = 0

@description('Each caller\'s limits as JSON: images per minute, USD per day, deployments (IMAGES_CALLER_LIMITS; docs/callers.md); empty: none.')
param callerLimits string = ''

var abbrs = loadJsonContent('abbreviations.json')
// One naming scheme that Bicep and Terraform compute alike: ARM's guid() is a version-5 UUID over a
// fixed namespace, which Terraform's uuidv5() computes too, while uniqueString() has no exact
// Terraform twin (azapi's unique_string differs from it for some inputs, the README's example
// among them). The first 16 hex digits (60 bits of the hash; the 13th digit is the UUID version).
// tests/test_infra_parity.py evaluates both templates and checks them against ARM's algorithms.
var token = empty(resourceToken) ? take(replace(guid(subscription().id, environmentName, location), '-', ''), 16) : resourceToken
var tags = {
  'azd-env-name': environmentName
}
// Azure's model version of each model offered above: the rows of shared/models/families.py
// marked for the templates (tests/test_infra_models.py keeps this table, Terraform's and the
// rows equal). A model has its own version; one default for all fitted only one of them.
var imageModelVersions = {
  'gpt-image-1-mini': '2025-10-06'
  'gpt-image-1.5': '2025-12-16'
  'gpt-image-2': '2026-04-21'
}
var modelVersion = empty(imageModelVersion) ? imageModelVersions[imageModelName] : imageModelVersion
// The deployment types Azure offers each model in, as '<model> <type>' (the rows' quota tables;
// tests/test_infra_models.py keeps this table, Terraform's and the rows equal). Looking a pair up
// here stops a deployment that asks for one Azure does not offer before anything is created, with
// ARM naming the pairs that exist ("The language expression property '...' doesn't exist,
// available properties are ..."), instead of a half-finished deployment.
var offeredDeployments = {
  'gpt-image-1-mini GlobalStandard': 'GlobalStandard'
  'gpt-image-1.5 GlobalStandard': 'GlobalStandard'
  'gpt-image-1.5 DataZoneStandard': 'DataZoneStandard'
  'gpt-image-2 GlobalStandard': 'GlobalStandard'
  'gpt-image-2 DataZoneStandard': 'DataZoneStandard'
}
var deploymentSku = offeredDeployments['${imageModelName} ${imageDeploymentSku}']
var fallbackSku = empty(fallbackDeploymentSku) ? '' : offeredDeployments['${imageModelName} ${fallbackDeploymentSku}']
// An image deployment's capacity unit is 3 requests per minute (Learn, quotas and limits: "2
// capacity units (6 requests per minute)"): the pool never sends a deployment more than that.
var rpmPerCapacityUnit = 3
var primaryRpm = imageDeploymentRpm > 0 ? imageDeploymentRpm : imageDeploymentCapacity * rpmPerCapacityUnit
var fallbackRpm = fallbackDeploymentRpm > 0 ? fallbackDeploymentRpm : fallbackDeploymentCapacity * rpmPerCapacityUnit
var createAiAccount = empty(existingOpenAiEndpoint)
var useKeyVault = authMode == 'keyvault'
var deploymentName = empty(imageDeploymentName) ? imageModelName : imageDeploymentName
var functionAppName = '${abbrs.webSitesFunctions}${token}'
// The function app's default host name: its name's, since the site sets no autoGeneratedDomainNameLabelScope (the opt-in
// <name>-<hash>.<region>-01 unique default hostname). Known before the site exists, so the app registration
// can name the browser sign-in's return address without waiting for the site (no dependency cycle).
var functionAppHost = '${functionAppName}.azurewebsites.net'
var signInRedirectUri = 'https://${functionAppHost}/.auth/login/aad/callback'
var storageAccountName = '${abbrs.storageStorageAccounts}${token}'
// Always computed (never empty), even when the resource is not created.
var aiAccountName = '${abbrs.cognitiveServicesAccounts}${token}'
var keyVaultName = '${abbrs.keyVaultVaults}${token}'
var apiKeySecretName = 'azure-openai-api-key'
// Names that follow from other names, so outputs need no conditional module outputs.
var openAiEndpoint = createAiAccount ? 'https://${aiAccountName}.openai.azure.com/' : existingOpenAiEndpoint
// A fallback deployment makes the deployment name a pool of two (shared/pool/config.py).
var fallbackDeploymentName = createAiAccount && !empty(fallbackDeploymentSku) ? '${deploymentName}-fallback' : ''
var imagesBackends = empty(fallbackDeploymentName) ? '' : string({
  '${deploymentName}': [
    { endpoint: openAiEndpoint, deployment: deploymentName, rpm: primaryRpm, priority: 0 }
    { endpoint: openAiEndpoint, deployment: fallbackDeploymentName, rpm: fallbackRpm, priority: 1 }
  ]
})
// The app registration of the entra way (app/registration.bicep): its Application ID URI and role ids.
var useEntraCallers = callerAuth == 'entra'
var callerAppUri = 'api://${tenant().tenantId}/images-${token}'
var callerRoleId = guid(token, 'Images.Caller')
var operatorRoleId = guid(token, 'Images.Operator')
// The deploying user (principalId) operates what it deployed: it sees every caller's work and can run
// infra/smoke_test.py, whose queued job is the queue's caller's.
var operators = concat(empty(principalId) ? [] : [
  principalId
], operatorPrincipalIds)
var keyVaultEndpoint = useKeyVault ? 'https://${keyVaultName}${environment().suffixes.keyvaultDns}/' : ''

var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(token, 7)}'
var appContainerNames = [
  imagesContainerName
  jobsContainerName
]
// Created here, so the host never needs account-wide write to create them (app/rbac.bicep).
var hostContainerNames = [
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]
// The host moves a message to <queue>-poison after maxDequeueCount failed attempts.
var queueNames = concat([
  queueName
  '${queueName}-poison'
], empty(resultsQueueName) ? [] : [
  resultsQueueName
])

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: empty(resourceGroupName) ? '${abbrs.resourcesResourceGroups}${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module identity 'core/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}${token}'
    location: location
    tags: tags
  }
}

module monitoring 'core/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${token}'
    applicationInsightsName: '${abbrs.insightsComponents}${token}'
    location: location
    tags: tags
  }
}

module storage 'core/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: storageAccountName
    location: location
    tags: tags
    skuName: storageSkuName
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    containerNames: concat(appContainerNames, hostContainerNames, [
      deploymentContainerName
    ])
    queueNames: queueNames
    retentionDays: retentionDays
    retentionPrefixes: [for containerName in appContainerNames: '${containerName}/']
  }
}

module ai 'core/ai.bicep' = if (createAiAccount) {
  name: 'ai'
  scope: rg
  params: {
    name: aiAccountName
    location: empty(aiLocation) ? location : aiLocation
    tags: tags
    disableLocalAuth: !useKeyVault
    deploymentName: deploymentName
    modelName: imageModelName
    modelVersion: modelVersion
    skuName: deploymentSku
    capacity: imageDeploymentCapacity
    fallbackDeploymentName: fallbackDeploymentName
    fallbackSkuName: fallbackSku
    fallbackCapacity: fallbackDeploymentCapacity
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
  }
}

module keyVault 'core/keyvault.bicep' = if (useKeyVault) {
  name: 'keyvault'
  scope: rg
  params: {
    name: keyVaultName
    location: location
    tags: tags
    secretName: apiKeySecretName
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    keyFromAiAccount: createAiAccount
    aiAccountName: aiAccountName
    existingApiKey: existingOpenAiApiKey
  }
  dependsOn: [
    ai
  ]
}

module registration 'app/registration.bicep' = if (useEntraCallers) {
  name: 'registration'
  scope: rg
  params: {
    uniqueName: 'images-${token}'
    displayName: 'Image generation (${environmentName})'
    identifierUri: callerAppUri
    callerRoleId: callerRoleId
    operatorRoleId: operatorRoleId
    callerPrincipalIds: callerPrincipalIds
    operatorPrincipalIds: operators
    signInRedirectUris: [
      signInRedirectUri
    ]
  }
}
module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    developerPrincipalId: principalId
    developerPrincipalType: principalType
    storageAccountName: storage.outputs.name
    appContainerNames: appContainerNames
    hostContainerNames: hostContainerNames
    deploymentContainerName: deploymentContainerName
    queueNames: queueNames
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    withKeyVault: useKeyVault
    keyVaultName: keyVaultName
    secretName: apiKeySecretName
    // On an existing endpoint the operator grants this role (infra/README.md).
    withOpenAiUser: createAiAccount && !useKeyVault
    openAiAccountName: aiAccountName
    callerPrincipalIds: callerPrincipalIds
    callerPrincipalType: callerPrincipalType
    // Entra way: the job records are read through the API, each caller its own; a container-wide
    // read would show every caller's (docs/callers.md).
    withCallerJobReader: !useEntraCallers
    jobQueueName: queueName
    jobsContainerName: jobsContainerName
  }
  dependsOn: [
    keyVault
    ai
  ]
}

module api 'app/function.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${token}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    authMode: authMode
    openAiEndpoint: openAiEndpoint
    deploymentName: deploymentName
    modelFamily: imageModelName
    imagesBackends: imagesBackends
    keyVaultEndpoint: keyVaultEndpoint
    apiKeySecretName: apiKeySecretName
    imagesContainerName: imagesContainerName
    jobsContainerName: jobsContainerName
    queueName: queueName
    resultsQueueName: resultsQueueName
    retentionDays: retentionDays
    callerAuth: callerAuth
    authClientId: useEntraCallers ? registration.outputs.clientId : ''
    authAudiences: useEntraCallers ? [
      callerAppUri
      registration.outputs.clientId
    ] : []
    authIdentities: concat(callerPrincipalIds, operators)
    callerLimits: callerLimits
  }
  // The host starts as soon as the app exists; its roles should be there first.
  dependsOn: [
    rbac
  ]
}

// UPPER_SNAKE outputs land in azd's .env; those named like app settings also serve a local
// run against the cloud resources.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_URL string = api.outputs.uri
// The app's identity: the postprovision hook waits once per identity for its new roles; grant it
// roles of your own (an existing AI account) by this id.
output AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
output IMAGES_QUEUE string = queueName
output IMAGES_RESULTS_QUEUE string = resultsQueueName
output IMAGES_CONTAINER string = imagesContainerName
output IMAGES_JOBS_CONTAINER string = jobsContainerName
output AZURE_KEY_VAULT_NAME string = useKeyVault ? keyVaultName : ''
output AZURE_KEY_VAULT_ENDPOINT string = keyVaultEndpoint
output AZURE_OPENAI_ENDPOINT string = openAiEndpoint
output AZURE_OPENAI_DEPLOYMENT string = deploymentName
output AZURE_OPENAI_AUTH string = authMode
output IMAGES_CALLER_AUTH string = callerAuth
// What a calling service asks tokens for (entra way): get_bearer_token_provider(credential, IMAGES_CALLER_SCOPE).
output IMAGES_CALLER_APP_ID string = useEntraCallers ? registration.outputs.clientId : ''
output IMAGES_CALLER_SCOPE string = useEntraCallers ? '${callerAppUri}/.default' : ''
