# --- project and naming --------------------------------------------------------------------------

variable "project_id" {
  type        = string
  description = "Google Cloud project to deploy into."
}

variable "region" {
  type        = string
  description = "Region of the function, the buckets (unless storage_location is set) and the training subnet."
  default     = "us-central1"
}

variable "zone" {
  type        = string
  description = "Zone of the training VM; must offer gpu_type. null = <region>-b."
  default     = null
}

variable "prefix" {
  type        = string
  description = "Prefix of every resource name. Buckets are <prefix>-input, -output, -models and -source, and bucket names are global. null or \"\" = the project id (project ids are globally unique)."
  default     = null

  validation {
    condition     = var.prefix == null || var.prefix == "" || can(regex("^[a-z][a-z0-9-]{2,28}[a-z0-9]$", var.prefix))
    error_message = "prefix must be 4-30 characters: lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels on every resource that takes labels (also applied as the provider's default_labels)."
  default = {
    app = "serverless-segmentation"
  }
}

variable "enable_apis" {
  type        = bool
  description = "Enable the Google APIs the deployment needs (never disabled on destroy)."
  default     = true
}

# --- storage -------------------------------------------------------------------------------------

variable "storage_location" {
  type        = string
  description = "Location of the buckets. null = region (same place as the function: no egress, lowest latency)."
  default     = null
}

variable "force_destroy" {
  type        = bool
  description = "Let `terraform destroy` delete non-empty buckets. Keep false outside throwaway environments."
  default     = false
}

variable "kms_key_name" {
  type        = string
  description = "Optional CMEK key (projects/P/locations/L/keyRings/R/cryptoKeys/K) for the buckets, the topics and the function's image repository; null = Google-managed keys. Must be in the same location as those resources."
  default     = null
}

variable "input_retention_days" {
  type        = number
  description = "Delete uploads this many days after upload (0 = keep)."
  default     = 30
}

variable "error_record_retention_days" {
  type        = number
  description = "Delete error records (gs://<prefix>-output/errors/) after this many days (0 = keep)."
  default     = 90
}

variable "checkpoint_retention_days" {
  type        = number
  description = "Delete training checkpoints (gs://<prefix>-models/checkpoints/) after this many days (0 = keep)."
  default     = 30
}

# --- messaging -----------------------------------------------------------------------------------

variable "notification_prefix" {
  type        = string
  description = "Only uploads whose object name starts with this prefix trigger segmentation (\"\" = all)."
  default     = ""
}

variable "max_delivery_attempts" {
  type        = number
  description = "Deliveries of an upload event before it goes to the dead-letter topic (5-100)."
  default     = 5
}

variable "retry_minimum_backoff" {
  type        = string
  description = "Shortest delay before a redelivery, e.g. \"10s\"."
  default     = "10s"
}

variable "retry_maximum_backoff" {
  type        = string
  description = "Longest delay between redeliveries (at most \"600s\")."
  default     = "600s"
}

# --- function ------------------------------------------------------------------------------------

variable "model_version" {
  type        = string
  description = "Model version the function loads: a published unet/<version>, or \"latest\" to follow gs://<prefix>-models/unet/latest.json."
  default     = "latest"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*$", var.model_version))
    error_message = "model_version must be a version directory name or \"latest\"."
  }
}

variable "function_memory" {
  type        = string
  description = "Memory per function instance. 4Gi holds function_concurrency 4 worst-case requests at the default image limits (docs/performance.md, \"Memory budget\"; plan fails when it cannot)."
  default     = "4Gi"
}

variable "function_cpu" {
  type        = string
  description = "vCPUs per function instance."
  default     = "1"
}

variable "function_max_instances" {
  type        = number
  description = "Maximum concurrent function instances."
  default     = 10
}

variable "function_min_instances" {
  type        = number
  description = "Function instances kept warm (0 = scale to zero)."
  default     = 0
}

variable "function_concurrency" {
  type        = number
  description = "Requests one function instance serves at a time. 4: an image costs 2.8x less than at 1 (storage round trips overlap; p95 1.13x), measured by make bench (docs/performance.md)."
  default     = 4
}

variable "function_timeout_seconds" {
  type        = number
  description = "Function timeout; also the push subscription's ack deadline (10-600)."
  default     = 300
}

variable "max_image_bytes" {
  type        = number
  description = "MAX_IMAGE_BYTES: larger uploads get an error record."
  default     = 20971520
}

variable "max_image_pixels" {
  type        = number
  description = "MAX_IMAGE_PIXELS: larger images get an error record."
  default     = 40000000
}

variable "num_threads" {
  type        = number
  description = "NUM_THREADS: LiteRT interpreter threads; keep it at the instance's vCPU count (more threads than vCPUs only contend)."
  default     = 1
}

variable "log_level" {
  type        = string
  description = "LOG_LEVEL of the function."
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "model_refresh_seconds" {
  type        = number
  description = "MODEL_REFRESH_SECONDS: how often (at most) a warm instance re-reads unet/latest.json and swaps in a promoted or rolled-back version; 0 = never (only new instances pick it up). No effect when model_version pins a version."
  default     = 300

  validation {
    condition     = var.model_refresh_seconds >= 0 && floor(var.model_refresh_seconds) == var.model_refresh_seconds
    error_message = "model_refresh_seconds must be a whole number of seconds, 0 or more."
  }
}

variable "canary_model_version" {
  type        = string
  description = "CANARY_MODEL_VERSION: a published unet/<version> beside latest that segments canary_percent of uploads (\"\" = no canary)."
  default     = ""

  validation {
    condition     = var.canary_model_version == "" || (can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", var.canary_model_version)) && var.canary_model_version != "latest")
    error_message = "canary_model_version must be a version directory name (not \"latest\"), or \"\"."
  }
}

variable "canary_percent" {
  type        = number
  description = "CANARY_PERCENT: share of uploads (0-100) segmented by canary_model_version, chosen by a hash of bucket, name and generation so redeliveries stay on one model; 0 = off."
  default     = 0

  validation {
    condition     = var.canary_percent >= 0 && var.canary_percent <= 100
    error_message = "canary_percent must be between 0 and 100."
  }
}

variable "delete_outputs_on_delete" {
  type        = bool
  description = "DELETE_OUTPUTS_ON_DELETE: when an upload is deleted (or archived, or overwritten) its mask and error record of that generation are deleted too (the notification also sends OBJECT_DELETE and OBJECT_ARCHIVE); false = outputs outlive their uploads until the output bucket's lifecycle rule."
  default     = true
}

variable "function_extra_env_vars" {
  type        = map(string)
  description = "Additional environment variables for the function (the settings above take precedence)."
  default     = {}
}

# --- training VM ---------------------------------------------------------------------------------

variable "training_vm_enabled" {
  type        = bool
  description = "Create the GPU training VM and its network (it costs only its disk while stopped)."
  default     = true
}

variable "training_machine_type" {
  type        = string
  description = "Machine type of the training VM (N1 for T4)."
  default     = "n1-standard-8"
}

variable "training_gpu_type" {
  type        = string
  description = "GPU type of the training VM."
  default     = "nvidia-tesla-t4"
}

variable "training_gpu_count" {
  type        = number
  description = "GPUs on the training VM."
  default     = 1
}

variable "training_spot" {
  type        = bool
  description = "Use a Spot VM for training (cheaper; preemption stops it and a restart resumes from checkpoints)."
  default     = false
}

variable "training_image" {
  type        = string
  description = "Boot image of the training VM (a Deep Learning VM image family with the NVIDIA driver)."
  default     = "projects/deeplearning-platform-release/global/images/family/common-cu128-ubuntu-2204-nvidia-570"
}

variable "training_boot_disk_size_gb" {
  type        = number
  description = "Boot disk size of the training VM."
  default     = 150
}

variable "training_desired_status" {
  type        = string
  description = "Status the training VM is created in (TERMINATED = stopped until a training is started on demand); ignored afterwards."
  default     = "TERMINATED"
}

variable "training_run_id" {
  type        = string
  description = "Default training run id (checkpoints/<run-id>/, runs/<run-id>/DONE); the Cloud Build train step sets a new one per run."
  default     = "run-001"
}

variable "training_epochs" {
  type        = number
  description = "--epochs passed to model_build (null = its default)."
  default     = null
}

variable "training_fine_tune_epochs" {
  type        = number
  description = "--fine-tune-epochs passed to model_build (null = its default)."
  default     = null
}

variable "training_max_run_hours" {
  type        = number
  description = "Compute Engine stops the training VM after this many hours of one run (0 = no limit)."
  default     = 12
}

variable "training_moves_latest" {
  type        = bool
  description = "Let a training run move unet/latest.json to the version it publishes. false (default) = it only publishes; `segment models promote VERSION` moves latest."
  default     = false
}

variable "source_commit" {
  type        = string
  description = "Git commit of the deployed source; the training VM exports it as MODEL_BUILD_GIT_COMMIT, so published model manifests record it. \"\" = unknown (not recorded). Cloud Build sets it to $COMMIT_SHA (empty in builds not started by a trigger)."
  default     = ""

  validation {
    condition     = can(regex("^([0-9a-fA-F]{7,64})?$", var.source_commit))
    error_message = "source_commit must be empty or a git commit id (7-64 hex digits)."
  }
}

variable "training_subnet_cidr" {
  type        = string
  description = "IP range of the training subnet."
  default     = "10.10.0.0/24"
}

variable "training_enable_iap_ssh" {
  type        = bool
  description = "Allow SSH to the training VM through IAP (debugging)."
  default     = false
}

# --- monitoring ----------------------------------------------------------------------------------

variable "monitoring_enabled" {
  type        = bool
  description = "Create the log-based metrics, alert policies and dashboard of infra/monitoring."
  default     = true
}

variable "alert_email" {
  type        = string
  description = "Email address the alert policies notify. null = no notification channel (incidents only show in the console)."
  default     = null
}

variable "alert_dead_letter_backlog" {
  type        = number
  description = "Alert when the dead-letter subscription holds more than this many messages (0 = any dead letter)."
  default     = 0
}

variable "alert_oldest_unacked_age_seconds" {
  type        = number
  description = "Alert when the push subscription's oldest unacknowledged upload event is older than this (seconds) for 5 minutes."
  default     = 1800
}

variable "alert_error_records_per_minute" {
  type        = number
  description = "Alert when error records (uploads that cannot be segmented) are written faster than this per minute over 15 minutes."
  default     = 1
}

variable "alert_latency_p95_ms" {
  type        = number
  description = "Alert when the p95 end-to-end latency of written masks stays above this many milliseconds for 10 minutes."
  default     = 10000
}

variable "mean_confidence_baseline" {
  type        = number
  description = "Mean confidence per mask of the served model on its test split: metrics.tflite.quality_signals.mean_confidence in its manifest.json. null = no quality alert."
  default     = null
}

variable "mean_confidence_margin" {
  type        = number
  description = "Alert when the hourly mean confidence of the masks falls more than this below mean_confidence_baseline."
  default     = 0.1
}

# --- Cloud Build ---------------------------------------------------------------------------------

variable "cloudbuild_github" {
  type = object({
    owner         = string
    name          = string
    deploy_branch = optional(string, "main")
  })
  description = "GitHub repository (owner, name), connected to Cloud Build through the Cloud Build GitHub App, to create the two build triggers for: <prefix>-test runs cloudbuild.yaml on every push as the ci account, <prefix>-deploy runs cloudbuild-deploy.yaml (_APPLY=true) on pushes to deploy_branch as the deployer account, after an approval. null = no triggers (run the builds by hand, docs/deploy.md)."
  default     = null
}
