#!/bin/sh
# azd postprovision hook: give the app identity's new roles time to take effect before the first
# deploy. The platform uploads the package with the app's identity, whose Storage Blob Data
# Contributor on the package container was granted seconds earlier; Azure RBAC takes seconds to
# minutes to apply a new assignment (up to 30 documented), and neither azd nor Core Tools retries
# the 403 (Azure/azure-dev#8026). Waits once per identity: the identity's principal id is recorded
# in the azd environment (IMAGES_ROLES_SETTLED_FOR); Terraform's time_sleep records it itself.
set -eu

principal="${AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID:-}"
seconds="${IMAGES_ROLE_WAIT_SECONDS:-120}"

if [ -z "$principal" ]; then
  echo "wait-for-app-roles: no AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID output; nothing to wait for"
  exit 0
fi
if [ "${IMAGES_ROLES_SETTLED_FOR:-}" = "$principal" ]; then
  echo "wait-for-app-roles: the roles of identity $principal were given time already"
  exit 0
fi
echo "wait-for-app-roles: waiting ${seconds} s for the new roles of identity $principal to take effect (IMAGES_ROLE_WAIT_SECONDS)"
sleep "$seconds"
azd env set IMAGES_ROLES_SETTLED_FOR "$principal"
