// The app's one identity. User-assigned, so its client id is known before the function
// app exists: the app settings (AZURE_CLIENT_ID, AzureWebJobsStorage__clientId,
// APPLICATIONINSIGHTS_AUTHENTICATION_STRING) and every role assignment can name it.

param name string
param location string = resourceGroup().location
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
