// One storage account for the Functions host (AzureWebJobsStorage), the Flex Consumption
// deployment package, the archived images, the job records and the job queues.
// Shared keys are off: the app, the host and the platform all use Entra ID, and the
// links the app hands out are user delegation SAS (signed with an Entra-issued key).

param name string
param location string = resourceGroup().location
param tags object = {}

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_LRS'

@description('Private blob containers to create.')
param containerNames array

@description('Queues to create.')
param queueNames array

@description('Log Analytics workspace receiving the blob and queue read, write and delete logs.')
param logAnalyticsWorkspaceId string

@description('Days a deleted blob or container can be restored.')
@minValue(1)
@maxValue(365)
param softDeleteRetentionDays int = 7

@description('Days a previous blob version is kept (job records are rewritten at every step).')
@minValue(1)
param previousVersionRetentionDays int = 30

@description('Days blobs under retentionPrefixes are kept before the lifecycle rule deletes them; 0: the rule is off.')
@minValue(0)
param retentionDays int = 0

@description('Where the retention rule applies: container/ prefixes (the archive and the job records).')
param retentionPrefixes array = []

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    // Covers only service and account SAS signed with an account key (none while shared keys are
    // off): logs one over 7 days should keys come back. The app's links are user delegation SAS,
    // outside this policy, bounded by their 7-day key (shared/settings.py MAX_LINK_TTL_SECONDS).
    sasPolicy: {
      expirationAction: 'Log'
      sasExpirationPeriod: '7.00:00:00'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }

  resource blobService 'blobServices' = {
    name: 'default'
    properties: {
      isVersioningEnabled: true
      deleteRetentionPolicy: {
        enabled: true
        days: softDeleteRetentionDays
      }
      containerDeleteRetentionPolicy: {
        enabled: true
        days: softDeleteRetentionDays
      }
    }
  }

  resource queueService 'queueServices' = {
    name: 'default'
  }

  // Versioning keeps every overwrite; without the first rule the rewritten job records would
  // pile up versions forever. The second is the archive's retention (IMAGES_RETENTION_DAYS):
  // off at 0; a deleted blob's previous version then goes by the first rule, its
  // soft-deleted copy after softDeleteRetentionDays.
  resource lifecycle 'managementPolicies' = {
    name: 'default'
    properties: {
      policy: {
        rules: [
          {
            name: 'expire-previous-versions'
            enabled: true
            type: 'Lifecycle'
            definition: {
              filters: {
                blobTypes: [
                  'blockBlob'
                ]
              }
              actions: {
                version: {
                  delete: {
                    daysAfterCreationGreaterThan: previousVersionRetentionDays
                  }
                }
              }
            }
          }
          {
            name: 'delete-after-retention'
            enabled: retentionDays > 0
            type: 'Lifecycle'
            definition: {
              filters: {
                blobTypes: [
                  'blockBlob'
                ]
                prefixMatch: retentionPrefixes
              }
              actions: {
                baseBlob: {
                  delete: {
                    daysAfterCreationGreaterThan: retentionDays
                  }
                }
              }
            }
          }
        ]
      }
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in containerNames: {
  parent: account::blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: account::queueService
  name: queueName
}]

// Who read, wrote or deleted what, through Azure Monitor (classic Storage Analytics logging
// and storage insights would need the account keys, which are off).
resource blobLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'storage-logs'
  scope: account::blobService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

resource queueLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'storage-logs'
  scope: account::queueService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
