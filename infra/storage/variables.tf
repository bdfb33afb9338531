variable "project_id" {
  type        = string
  description = "Project that owns the buckets."
}

variable "prefix" {
  type        = string
  description = "Name prefix: the buckets are <prefix>-input, <prefix>-output, <prefix>-models and <prefix>-source (bucket names are global)."
}

variable "location" {
  type        = string
  description = "Bucket location: a region (same as the function, cheapest and fastest) or a multi/dual-region."
  default     = "us-central1"
}

variable "labels" {
  type        = map(string)
  description = "Labels added to every bucket."
  default     = {}
}

variable "force_destroy" {
  type        = bool
  description = "Let `terraform destroy` delete non-empty buckets. Keep false outside throwaway environments."
  default     = false
}

variable "kms_key_name" {
  type        = string
  description = "Optional CMEK key (projects/P/locations/L/keyRings/R/cryptoKeys/K) for the default encryption of every bucket; null = Google-managed keys. The key must be in the buckets' location; the Cloud Storage service agent is granted encrypter/decrypter on it."
  default     = null
}

variable "input_retention_days" {
  type        = number
  description = "Delete uploaded images this many days after upload (0 = keep forever)."
  default     = 30

  validation {
    condition     = var.input_retention_days >= 0
    error_message = "input_retention_days must be >= 0."
  }
}

variable "error_record_retention_days" {
  type        = number
  description = "Delete error records (errors/ in the output bucket) after this many days (0 = keep forever)."
  default     = 90

  validation {
    condition     = var.error_record_retention_days >= 0
    error_message = "error_record_retention_days must be >= 0."
  }
}

variable "output_retention_days" {
  type        = number
  description = "Delete masks and error records (masks/ and errors/ in the output bucket) this many days after they were written (0 = keep forever). null = input_retention_days + output_retention_grace_days when input_retention_days is set (a backstop for the function's deletion of a deleted upload's outputs), else keep forever."
  default     = null

  validation {
    condition     = var.output_retention_days == null || try(var.output_retention_days >= 0, false)
    error_message = "output_retention_days must be null or >= 0."
  }
}

variable "output_retention_grace_days" {
  type        = number
  description = "With output_retention_days null: how many days outputs may outlive input_retention_days (uploads are deleted asynchronously, up to about a day late, and their outputs are written after them)."
  default     = 7

  validation {
    condition     = var.output_retention_grace_days >= 1
    error_message = "output_retention_grace_days must be >= 1."
  }
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Delete overwritten/deleted (noncurrent) object versions in the input, output and source buckets after this many days."
  default     = 7

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be >= 1."
  }
}

variable "model_noncurrent_version_retention_days" {
  type        = number
  description = "Delete noncurrent versions in the models bucket (e.g. an overwritten unet/latest.json) after this many days; long enough to roll back."
  default     = 90

  validation {
    condition     = var.model_noncurrent_version_retention_days >= 1
    error_message = "model_noncurrent_version_retention_days must be >= 1."
  }
}

variable "checkpoint_retention_days" {
  type        = number
  description = "Delete training checkpoints (checkpoints/ in the models bucket) after this many days (0 = keep forever)."
  default     = 30

  validation {
    condition     = var.checkpoint_retention_days >= 0
    error_message = "checkpoint_retention_days must be >= 0."
  }
}
