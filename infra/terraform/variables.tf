# The same choices as infra/main.bicep's parameters; see terraform.tfvars.example.

variable "subscription_id" {
  description = "Subscription to deploy to; empty: ARM_SUBSCRIPTION_ID."
  type        = string
  default     = ""
}

variable "environment_name" {
  description = "Name of the environment; with the subscription and location it seeds every resource name."
  type        = string

  validation {
    condition     = length(var.environment_name) >= 1 && length(var.environment_name) <= 64
    error_message = "environment_name must be 1-64 characters."
  }
}

variable "location" {
  description = "Region of every resource except the AI account (see ai_location); it must offer Flex Consumption."
  type        = string
}

variable "resource_group_name" {
  description = "Resource group to create; empty: rg-<environment_name>."
  type        = string
  default     = ""
}

variable "resource_token" {
  description = "Suffix of every resource name (AZURE_RESOURCE_TOKEN); empty: derived from the subscription, environment_name and location. Set it to keep the names of an environment created under another naming scheme (docs/deploying.md: Names)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[a-z0-9]{0,16}$", var.resource_token))
    error_message = "resource_token must be up to 16 lowercase letters and digits."
  }
}

# The app's AZURE_OPENAI_AUTH ways by the same names. Its third way, key (the model key in an app
# setting), is not offered: the templates never write a key where whoever reads the site's
# configuration reads it too; keyvault serves a model that needs a key, from Key Vault.
variable "auth_mode" {
  description = "How the app authenticates to the model (AZURE_OPENAI_AUTH): entra (Entra ID, no key) or keyvault (the model key, read from Key Vault). key is not offered: the templates never put a key in an app setting."
  type        = string
  default     = "entra"

  validation {
    condition     = contains(["entra", "keyvault"], var.auth_mode)
    error_message = "auth_mode must be entra or keyvault (key is not offered: the templates never put a key in an app setting)."
  }
}

variable "existing_openai_endpoint" {
  description = "An existing Azure OpenAI endpoint (https://NAME.openai.azure.com); empty: create an AI Services account here."
  type        = string
  default     = ""
}

variable "existing_openai_api_key" {
  description = "The key of the existing endpoint, stored in Key Vault (keyvault way with existing_openai_endpoint only). Ephemeral: kept out of the state and the plan."
  type        = string
  default     = ""
  sensitive   = true
  ephemeral   = true
}

variable "ai_location" {
  description = "Region of the AI account; empty: location. gpt-image models are offered in a few regions only."
  type        = string
  default     = ""
}

variable "image_model_name" {
  description = "gpt-image model to deploy; also the model family the app applies its rules for. gpt-image-1-mini and gpt-image-1.5 need a registration (docs/deploying.md: The models)."
  type        = string
  default     = "gpt-image-2"

  validation {
    condition     = contains(["gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2"], var.image_model_name)
    error_message = "image_model_name must be gpt-image-1-mini, gpt-image-1.5 or gpt-image-2."
  }
}

variable "image_model_version" {
  description = "Version of image_model_name; empty: the version local.image_model_versions gives for it."
  type        = string
  default     = ""
}

variable "image_deployment_name" {
  description = "Deployment name; empty: the model name."
  type        = string
  default     = ""
}

variable "image_deployment_sku" {
  description = "Deployment type (SKU) of the model deployment: one Azure offers the model in (GlobalStandard; DataZoneStandard for gpt-image-1.5 and gpt-image-2)."
  type        = string
  default     = "GlobalStandard"
}

variable "image_deployment_capacity" {
  description = "Capacity of the model deployment in units of 3 requests per minute."
  type        = number
  default     = 1

  validation {
    condition     = var.image_deployment_capacity >= 1
    error_message = "image_deployment_capacity must be at least 1."
  }
}

variable "fallback_deployment_sku" {
  description = "Deployment type (SKU) of a second deployment of the same model, which the app fails over to (e.g. DataZoneStandard); empty: none. docs/pools.md."
  type        = string
  default     = ""
}

variable "fallback_deployment_capacity" {
  description = "Capacity of the fallback deployment, its own (a DataZone allowance is smaller than the Global Standard one)."
  type        = number
  default     = 1

  validation {
    condition     = var.fallback_deployment_capacity >= 1
    error_message = "fallback_deployment_capacity must be at least 1."
  }
}

variable "image_deployment_rpm" {
  description = "Requests per minute the pool sends the model deployment at most; 0: its capacity times 3."
  type        = number
  default     = 0

  validation {
    condition     = var.image_deployment_rpm >= 0
    error_message = "image_deployment_rpm must be 0 (from the capacity) or more."
  }
}

variable "fallback_deployment_rpm" {
  description = "Requests per minute the pool sends the fallback deployment at most; 0: its capacity times 3."
  type        = number
  default     = 0

  validation {
    condition     = var.fallback_deployment_rpm >= 0
    error_message = "fallback_deployment_rpm must be 0 (from the capacity) or more."
  }
}

variable "images_container_name" {
  description = "Container for archived images."
  type        = string
  default     = "images"
}

variable "jobs_container_name" {
  description = "Container for job records."
  type        = string
  default     = "image-jobs"
}

variable "queue_name" {
  description = "Queue the background trigger reads; its poison queue is <name>-poison."
  type        = string
  default     = "image-jobs"
}

variable "results_queue_name" {
  description = "Queue receiving {id, status, result|error} for each finished job; empty: off."
  type        = string
  default     = ""
}

variable "instance_memory_mb" {
  description = "Memory of each Flex Consumption instance."
  type        = number
  default     = 2048

  validation {
    condition     = contains([512, 2048, 4096], var.instance_memory_mb)
    error_message = "instance_memory_mb must be 512, 2048 or 4096."
  }
}

variable "maximum_instance_count" {
  description = "Most instances Flex Consumption scales out to."
  type        = number
  default     = 20

  validation {
    condition     = var.maximum_instance_count >= 1 && var.maximum_instance_count <= 1000
    error_message = "maximum_instance_count must be 1-1000."
  }
}

variable "storage_replication_type" {
  description = "Replication of the storage account (LRS, ZRS, GRS, GZRS, RAGRS, RAGZRS)."
  type        = string
  default     = "LRS"

  validation {
    condition     = contains(["LRS", "ZRS", "GRS", "GZRS", "RAGRS", "RAGZRS"], var.storage_replication_type)
    error_message = "storage_replication_type must be LRS, ZRS, GRS, GZRS, RAGRS or RAGZRS."
  }
}

variable "principal_id" {
  description = "Object id of a developer (or CI principal) to grant data access for local runs; empty: none."
  type        = string
  default     = ""
}

variable "principal_type" {
  description = "Type of principal_id: User, ServicePrincipal or Group."
  type        = string
  default     = "User"

  validation {
    condition     = contains(["User", "ServicePrincipal", "Group"], var.principal_type)
    error_message = "principal_type must be User, ServicePrincipal or Group."
  }
}

variable "caller_principal_ids" {
  description = "Object ids of the calling services (their managed identities): each gets Storage Queue Data Message Sender on the job queue and, the entra way (caller_auth), the caller app role; the key way, Storage Blob Data Reader on the jobs container instead."
  type        = list(string)
  default     = []
}

variable "caller_principal_type" {
  description = "Type of caller_principal_ids: ServicePrincipal, Group or User."
  type        = string
  default     = "ServicePrincipal"

  validation {
    condition     = contains(["ServicePrincipal", "Group", "User"], var.caller_principal_type)
    error_message = "caller_principal_type must be ServicePrincipal, Group or User."
  }
}

variable "caller_auth" {
  description = "How callers are known (IMAGES_CALLER_AUTH, docs/callers.md): entra (an app registration made here, App Service authentication, each calling identity a caller that sees only its own) or key (function keys, one caller)."
  type        = string
  default     = "entra"

  validation {
    condition     = contains(["entra", "key"], var.caller_auth)
    error_message = "caller_auth must be entra or key."
  }
}

variable "operator_principal_ids" {
  description = "Object ids of the operators (entra way): people or services that see every caller's jobs, images and records. Each gets the operator app role, and so does principal_id."
  type        = list(string)
  default     = []
}

variable "retention_days" {
  description = "Days archived images, records and job records are kept before a Blob lifecycle rule deletes them (IMAGES_RETENTION_DAYS); 0: kept."
  type        = number
  default     = 0

  validation {
    condition     = var.retention_days >= 0 && var.retention_days <= 36500
    error_message = "retention_days must be 0-36500."
  }
}

variable "caller_limits" {
  description = "Each caller's limits as JSON: images per minute, USD per day, deployments (IMAGES_CALLER_LIMITS; docs/callers.md); empty: none."
  type        = string
  default     = ""

  validation {
    condition     = var.caller_limits == "" || can(jsondecode(var.caller_limits))
    error_message = "caller_limits must be JSON (the app checks each entry when it starts), or empty."
  }
}

variable "role_wait_seconds" {
  description = "Seconds `terraform apply` gives the app identity's new roles to take effect before it returns (the publish after it uploads with that identity); 0: no wait."
  type        = number
  default     = 120

  validation {
    condition     = var.role_wait_seconds >= 0 && var.role_wait_seconds <= 1800
    error_message = "role_wait_seconds must be 0-1800."
  }
}
