# azd postprovision hook (Windows): the twin of wait-for-app-roles.sh, which says why.
$ErrorActionPreference = 'Stop'

$principal = $env:AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID
$seconds = if ($env:IMAGES_ROLE_WAIT_SECONDS) { [int]$env:IMAGES_ROLE_WAIT_SECONDS } else { 120 }

if (-not $principal) {
    Write-Host "wait-for-app-roles: no AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID output; nothing to wait for"
    exit 0
}
if ($env:IMAGES_ROLES_SETTLED_FOR -eq $principal) {
    Write-Host "wait-for-app-roles: the roles of identity $principal were given time already"
    exit 0
}
Write-Host "wait-for-app-roles: waiting $seconds s for the new roles of identity $principal to take effect (IMAGES_ROLE_WAIT_SECONDS)"
Start-Sleep -Seconds $seconds
azd env set IMAGES_ROLES_SETTLED_FOR $principal
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
