# Pinned to a major version range from the first release that has every argument these files
# use (tests/test_infra_providers.py keeps the list, with the release notes it comes from);
# commit .terraform.lock.hcl after `terraform init` to pin the exact builds.
terraform {
  required_version = ">= 1.11, < 2.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.78"
    }
    # The function app and the vault secret go through ARM directly (azapi), see function.tf.
    azapi = {
      source  = "Azure/azapi"
      version = "~> 2.5"
    }
    # The app registration callers get tokens for, its app roles and their assignments (callers.tf).
    azuread = {
      source  = "hashicorp/azuread"
      version = "~> 3.0"
    }
    # time_sleep: the wait for the app's roles before apply returns (rbac.tf).
    time = {
      source  = "hashicorp/time"
      version = "~> 0.9"
    }
  }
}

provider "azurerm" {
  # Empty: taken from ARM_SUBSCRIPTION_ID (azd and `az login` users set it, see infra/README.md).
  subscription_id = var.subscription_id == "" ? null : var.subscription_id

  # Shared keys are disabled on the storage account, so a data-plane call, should the provider
  # make one, uses Entra ID rather than a key.
  storage_use_azuread = true

  features {
    storage {
      # Every storage call stays on ARM, where the deployer's Contributor role suffices. With the
      # data plane "available" (the 4.x default), azurerm reads the account's queue properties with
      # the deployer's Entra token, which needs a data role an Owner or Contributor lacks: the
      # first apply fails at the storage account, which is then tainted and recreated, losing the
      # role just granted (hashicorp/terraform-provider-azurerm#29984, #33454). The containers and
      # queues here are ARM resources (storage_account_id) and no queue_properties or
      # static_website block is used, which this setting would refuse.
      data_plane_available = false
    }
    key_vault {
      # Purge protection is on; a purge would fail anyway.
      purge_soft_delete_on_destroy = false
    }
  }
}

provider "azapi" {
  subscription_id = var.subscription_id == "" ? null : var.subscription_id
}

provider "azuread" {
  # The tenant of the subscription: ARM_TENANT_ID, or the one `az login` chose.
}
