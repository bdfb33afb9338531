variable "memory" {
  type        = string
  description = "Memory per function instance, as Cloud Run writes it: a whole number with Mi, Gi, M or G (\"1Gi\", \"2048Mi\")."

  validation {
    condition     = can(regex("^[1-9][0-9]*(Mi|Gi|M|G)$", var.memory))
    error_message = "memory must be a whole number followed by Mi, Gi, M or G (e.g. \"1Gi\", \"2048Mi\")."
  }
}

variable "concurrency" {
  type        = number
  description = "Requests one instance serves at a time (the function's CONCURRENCY)."

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000 && floor(var.concurrency) == var.concurrency
    error_message = "concurrency must be a whole number from 1 to 1000."
  }
}

variable "max_image_pixels" {
  type        = number
  description = "The function's MAX_IMAGE_PIXELS: the largest image a request decodes."

  validation {
    condition     = var.max_image_pixels >= 1
    error_message = "max_image_pixels must be at least 1."
  }
}

variable "max_image_bytes" {
  type        = number
  description = "The function's MAX_IMAGE_BYTES: the largest upload a request reads."

  validation {
    condition     = var.max_image_bytes >= 1
    error_message = "max_image_bytes must be at least 1."
  }
}

variable "budget_file" {
  type        = string
  description = "Path of the function's memory_budget.json (functions/segmentation/): the per-pixel, per-request and baseline figures the function checks at cold start."
}
