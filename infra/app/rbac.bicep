// Every role the app's identity (and, optionally, the deploying developer and the calling
// services) holds, each at the narrowest scope the service allows. Names come from guid(scope, principal, role),
// so a re-deployment finds the same assignments instead of duplicating them.
//
// Why these and no more:
// - Storage Blob Data Contributor on named containers only: images and job records (the
//   app), the deployment package (the platform, with the same identity), and the host's
//   own azure-webjobs-hosts (locks) and azure-webjobs-secrets (function keys), all created
//   by core/storage.bicep so the host never needs account-wide write to create them.
//   Microsoft's templates grant Storage Blob Data Owner on the whole account instead: that
//   writes everywhere and adds ACL, ownership and blob-tag rights that nothing here uses.
// - Storage Blob Data Reader on the account: the host's AzureWebJobsStorage health probe
//   lists containers, an account-level read. Reading is all it adds: every container holds
//   the app's own data, which the identity can already read. Writes stay container-scoped.
// - Storage Blob Delegator on the account: a user delegation key (for the read-only SAS
//   links in data[].url) can only be requested at account scope. A SAS never grants more
//   than its signer holds, so links stay limited to what the identity can read. (The Reader
//   above happens to include this action; the app's need is stated on its own.)
// - Storage Queue Data Contributor on each queue: the trigger reads and deletes, the host
//   moves poison messages (and creates the poison queue if missing), the app enqueues and
//   posts results.
// - Key Vault Secrets User on the one secret (keyvault way).
// - Cognitive Services OpenAI User on the AI account (keyless way, account created here;
//   for an existing endpoint the operator grants it, see infra/README.md).
// - Monitoring Metrics Publisher on Application Insights: telemetry with Entra ID auth.
// Calling services (callerPrincipalIds): Storage Queue Data Message Sender on the job queue
// (drop jobs, nothing else); in the key way also Storage Blob Data Reader on the jobs container
// (job status), which the entra way leaves out: it would show every caller's job records, which
// the API shows each caller only its own of. They call the HTTP API with an Entra ID token (the
// entra way, app/registration.bicep) or the function key (the key way), neither a role here.

@description('Principal (object) id of the app\'s user-assigned identity.')
param principalId string

@description('Object id of a developer (or CI principal) to grant the same data access for local runs; empty for none.')
param developerPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param developerPrincipalType string = 'User'

param storageAccountName string

@description('Containers the app reads and writes: images and job records.')
param appContainerNames array

@description('Containers the Functions host keeps its own state in.')
param hostContainerNames array

param deploymentContainerName string

@description('The job queue, its poison queue and the optional results queue.')
param queueNames array

param applicationInsightsName string

@description('Grant read on the model key in Key Vault (the keyvault way).')
param withKeyVault bool = false
param keyVaultName string
param secretName string

@description('Grant Cognitive Services OpenAI User on the AI account (entra way, account created here).')
param withOpenAiUser bool = false
param openAiAccountName string

@description('Object ids of the calling services: they may send to the job queue and read job records.')
param callerPrincipalIds array = []

@allowed([
  'ServicePrincipal'
  'Group'
  'User'
])
param callerPrincipalType string = 'ServicePrincipal'

@description('Grant the calling services read on the jobs container (the key way: one caller anyway).')
param withCallerJobReader bool = true

param jobQueueName string
param jobsContainerName string

var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1' // Storage Blob Data Reader
var storageBlobDelegator = 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a' // Storage Blob Delegator
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
var storageQueueDataMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a' // Storage Queue Data Message Sender
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User
var cognitiveServicesOpenAiUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd' // Cognitive Services OpenAI User
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher

// The developer gets what a local run of the app and host needs; the deployment package
// is the platform's business, so it comes last and the developer's loop stops before it.
var writableContainers = concat(appContainerNames, hostContainerNames, [deploymentContainerName])
var developerContainers = concat(appContainerNames, hostContainerNames)
var withDeveloper = !empty(developerPrincipalId)

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName

  resource blobService 'blobServices' existing = {
    name: 'default'
  }

  resource queueService 'queueServices' existing = {
    name: 'default'
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for containerName in writableContainers: {
  parent: storageAccount::blobService
  name: containerName
}]

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = [for queueName in queueNames: {
  parent: storageAccount::queueService
  name: queueName
}]

resource jobQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: storageAccount::queueService
  name: jobQueueName
}

resource jobsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: storageAccount::blobService
  name: jobsContainerName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2026-02-01' existing = if (withKeyVault) {
  name: keyVaultName

  resource secret 'secrets' existing = {
    name: secretName
  }
}

resource openAiAccount 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = if (withOpenAiUser) {
  name: openAiAccountName
}

// ---- the app's identity ----

resource appContainerWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (containerName, i) in writableContainers: {
  name: guid(containers[i].id, principalId, storageBlobDataContributor)
  scope: containers[i]
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}]

resource appAccountReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageAccount.id, principalId, storageBlobDataReader)
  scope: storageAccount
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
  }
}

resource appDelegator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageAccount.id, principalId, storageBlobDelegator)
  scope: storageAccount
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDelegator)
  }
}

resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (queueName, i) in queueNames: {
  name: guid(queues[i].id, principalId, storageQueueDataContributor)
  scope: queues[i]
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
  }
}]

resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, principalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
  }
}

resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withKeyVault) {
  name: guid(vault::secret.id, principalId, keyVaultSecretsUser)
  scope: vault::secret
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

resource appOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withOpenAiUser) {
  name: guid(openAiAccount.id, principalId, cognitiveServicesOpenAiUser)
  scope: openAiAccount
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesOpenAiUser)
  }
}

// ---- the developer, for local runs against the cloud (optional) ----

resource developerContainerWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (containerName, i) in developerContainers: if (withDeveloper) {
  name: guid(containers[i].id, developerPrincipalId, storageBlobDataContributor)
  scope: containers[i]
  properties: {
    principalId: developerPrincipalId
    principalType: developerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}]

resource developerAccountReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withDeveloper) {
  name: guid(storageAccount.id, developerPrincipalId, storageBlobDataReader)
  scope: storageAccount
  properties: {
    principalId: developerPrincipalId
    principalType: developerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
  }
}

resource developerDelegator 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withDeveloper) {
  name: guid(storageAccount.id, developerPrincipalId, storageBlobDelegator)
  scope: storageAccount
  properties: {
    principalId: developerPrincipalId
    principalType: developerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDelegator)
  }
}

resource developerQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (queueName, i) in queueNames: if (withDeveloper) {
  name: guid(queues[i].id, developerPrincipalId, storageQueueDataContributor)
  scope: queues[i]
  properties: {
    principalId: developerPrincipalId
    principalType: developerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
  }
}]

resource developerSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withDeveloper && withKeyVault) {
  name: guid(vault::secret.id, developerPrincipalId, keyVaultSecretsUser)
  scope: vault::secret
  properties: {
    principalId: developerPrincipalId
    principalType: developerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

resource developerOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withDeveloper && withOpenAiUser) {
  name: guid(openAiAccount.id, developerPrincipalId, cognitiveServicesOpenAiUser)
  scope: openAiAccount
  properties: {
    principalId: developerPrincipalId
    principalType: developerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesOpenAiUser)
  }
}

// ---- the calling services (optional): queue in, job records out ----

resource callerQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for callerId in callerPrincipalIds: {
  name: guid(jobQueue.id, callerId, storageQueueDataMessageSender)
  scope: jobQueue
  properties: {
    principalId: callerId
    principalType: callerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
  }
}]

resource callerJobReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for callerId in callerPrincipalIds: if (withCallerJobReader) {
  name: guid(jobsContainer.id, callerId, storageBlobDataReader)
  scope: jobsContainer
  properties: {
    principalId: callerId
    principalType: callerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
  }
}]
