// The app registration callers get Entra ID tokens for (callerAuth entra; docs/callers.md), made
// with the Microsoft Graph Bicep extension: the application with its two app roles, its service
// principal (assignment required, so only identities given a role get tokens), and the roles of
// the calling services (Images.Caller) and of the operators (Images.Operator). The role values
// are the ones the app checks (shared/callers/identity.py CALLER_ROLE, OPERATOR_ROLE).
// The deployer needs the right to create applications in the tenant (by default every member
// may, unless an admin turned that off) and Application Administrator (or the Graph permission
// AppRoleAssignment.ReadWrite.All) to assign app roles; docs/deploying.md (Who can deploy) says what to do without.
// checkov cannot read Bicep extensions and has no check for Graph resources: .checkov.yaml skips
// this file, which holds Graph resources only (tests/test_infra.py checks that).
extension microsoftGraphV1

@description('Unique name of the application in the tenant (stable across deployments of one environment).')
param uniqueName string

param displayName string

@description('The Application ID URI callers ask tokens for (api://<tenant id>/images-<token>).')
param identifierUri string

@description('Ids of the two app roles (guid() in main.bicep, uuidv5() in Terraform: the same in both).')
param callerRoleId string
param operatorRoleId string

@description('Object ids of the calling services: each gets the caller app role.')
param callerPrincipalIds array = []

@description('Object ids of the operators (people or services that see every caller\'s jobs): each gets the operator app role.')
param operatorPrincipalIds array = []

@description('Web redirect URIs of App Service authentication\'s browser sign-in: https://<app host>/.auth/login/aad/callback.')
param signInRedirectUris array = []

resource application 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: 'AzureADMyOrg'
  identifierUris: [
    identifierUri
  ]
  api: {
    // v2 tokens: aud is the client id, iss https://login.microsoftonline.com/<tenant>/v2.0.
    requestedAccessTokenVersion: 2
  }
  // A person (an operator opening /gallery) signs in through App Service authentication
  // (/.auth/login/aad), which returns to the redirect URI. No client secret is stored anywhere:
  // without one App Service authentication signs people in with the OpenID Connect implicit flow
  // and asks for an ID token only, so ID token issuance is on and access token issuance stays off.
  web: {
    redirectUris: signInRedirectUris
    implicitGrantSettings: {
      enableIdTokenIssuance: true
      enableAccessTokenIssuance: false
    }
  }
  appRoles: [
    {
      id: callerRoleId
      value: 'Images.Caller'
      displayName: 'Images caller'
      description: 'Generates and edits images, and sees its own jobs, images and records.'
      allowedMemberTypes: [
        'Application'
        'User'
      ]
      isEnabled: true
    }
    {
      id: operatorRoleId
      value: 'Images.Operator'
      displayName: 'Images operator'
      description: 'Sees every caller\'s jobs, images, records and usage.'
      allowedMemberTypes: [
        'Application'
        'User'
      ]
      isEnabled: true
    }
  ]
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: application.appId
  // Entra issues tokens for this app only to identities assigned one of its roles.
  appRoleAssignmentRequired: true
}

resource callerRoles 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for callerId in callerPrincipalIds: {
  appRoleId: callerRoleId
  principalId: callerId
  resourceId: servicePrincipal.id
}]

resource operatorRoles 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for operatorId in operatorPrincipalIds: {
  appRoleId: operatorRoleId
  principalId: operatorId
  resourceId: servicePrincipal.id
}]

output clientId string = application.appId
