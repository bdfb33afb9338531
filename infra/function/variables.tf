variable "project_id" {
  type        = string
  description = "Project that owns the function."
}

variable "region" {
  type        = string
  description = "Region of the function (and of its Artifact Registry repository)."
}

variable "prefix" {
  type        = string
  description = "Name prefix: the function is <prefix>-segment-image."
}

variable "service_account_prefix" {
  type        = string
  description = "Prefix of the service account ids (<p>-fn, <p>-fn-build, <p>-push); at most 21 characters so that the ids fit in 30."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,19}[a-z0-9]$", var.service_account_prefix))
    error_message = "service_account_prefix must be 4-21 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels added to the function and its repository."
  default     = {}
}

variable "source_dir" {
  type        = string
  description = "Directory zipped as the function's source (the repository's functions/: main.py, requirements.txt, the segmentation package)."
}

variable "archive_output_path" {
  type        = string
  description = "Where the zip of source_dir is written locally before upload (an ignored build directory)."
}

variable "source_bucket" {
  type        = string
  description = "Bucket the source zip is uploaded to, as function/source-<content hash>.zip."
}

variable "input_bucket" {
  type        = string
  description = "Bucket the function reads uploads from (granted roles/storage.objectViewer)."
}

variable "output_bucket" {
  type        = string
  description = "Bucket the function writes masks and error records to (granted roles/storage.objectUser)."
}

variable "models_bucket" {
  type        = string
  description = "Bucket the function loads the model from (granted roles/storage.objectViewer)."
}

variable "model_uri" {
  type        = string
  description = "MODEL_URI of the function: gs://<models>/unet/<version>, or gs://<models>/unet/latest to follow the unet/latest.json pointer."
}

variable "runtime" {
  type        = string
  description = "Cloud Functions runtime (docs/architecture.md, decision 1: Python 3.12)."
  default     = "python312"
}

variable "entry_point" {
  type        = string
  description = "Python function functions-framework serves."
  default     = "segment_image"
}

variable "memory" {
  type        = string
  description = "Memory per instance (e.g. \"1Gi\", \"2048Mi\"): must hold concurrency worst-case requests plus a baseline (infra/memory_budget checks it at plan time; docs/performance.md has the table)."
  default     = "4Gi"
}

variable "cpu" {
  type        = string
  description = "vCPUs per instance (e.g. \"1\", \"2\"); must fit the memory (Cloud Run CPU/memory limits)."
  default     = "1"
}

variable "max_instances" {
  type        = number
  description = "Upper bound on concurrently running instances (cost and quota guard)."
  default     = 10

  validation {
    condition     = var.max_instances >= 1
    error_message = "max_instances must be >= 1."
  }
}

variable "min_instances" {
  type        = number
  description = "Instances kept warm (0 = scale to zero; each warm instance is billed)."
  default     = 0

  validation {
    condition     = var.min_instances >= 0
    error_message = "min_instances must be >= 0."
  }
}

variable "concurrency" {
  type        = number
  description = "Requests one instance serves at a time (the function's CONCURRENCY): each may hold a worst-case image, so memory must grow with it (infra/memory_budget)."
  default     = 4

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000
    error_message = "concurrency must be between 1 and 1000."
  }
}

variable "timeout_seconds" {
  type        = number
  description = "Request timeout; the push subscription's ack deadline follows it (at most 600 s)."
  default     = 300

  validation {
    condition     = var.timeout_seconds >= 10 && var.timeout_seconds <= 600
    error_message = "timeout_seconds must be between 10 and 600 (the Pub/Sub push ack deadline limit)."
  }
}

variable "settings" {
  type        = map(string)
  description = "The function's other settings as environment variables (MAX_IMAGE_BYTES, NUM_THREADS, ...: functions/segmentation/settings.py documents and validates each at cold start); MAX_IMAGE_PIXELS and MAX_IMAGE_BYTES are required. OUTPUT_BUCKET, MODEL_URI, CONCURRENCY, MEMORY_MIB and REQUEST_TIMEOUT_SECONDS are set by this module."

  validation {
    condition     = alltrue([for k in keys(var.settings) : can(regex("^[A-Z][A-Z0-9_]*$", k))])
    error_message = "settings keys must be environment variable names (A-Z, 0-9, _)."
  }

  validation {
    condition     = length(setintersection(keys(var.settings), ["OUTPUT_BUCKET", "MODEL_URI", "CONCURRENCY", "MEMORY_MIB", "REQUEST_TIMEOUT_SECONDS", "THREADS"])) == 0
    error_message = "settings must not set OUTPUT_BUCKET, MODEL_URI, CONCURRENCY, MEMORY_MIB, REQUEST_TIMEOUT_SECONDS or THREADS: the module derives them from its own variables."
  }

  validation {
    condition     = alltrue([for k in ["MAX_IMAGE_PIXELS", "MAX_IMAGE_BYTES"] : can(tonumber(lookup(var.settings, k, "")))])
    error_message = "settings must set MAX_IMAGE_PIXELS and MAX_IMAGE_BYTES (whole numbers): the memory budget (infra/memory_budget) needs them."
  }
}

variable "artifact_retention_count" {
  type        = number
  description = "Function images kept in the Artifact Registry repository (older ones are cleaned up)."
  default     = 5
}

variable "kms_key_name" {
  type        = string
  description = "Optional CMEK key for the function's image repository; null = Google-managed keys."
  default     = null
}
