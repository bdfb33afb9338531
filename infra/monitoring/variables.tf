variable "project_id" {
  type        = string
  description = "Project that owns the function, the subscriptions, the metrics and the alert policies."
}

variable "prefix" {
  type        = string
  description = "Name prefix: log-based metrics are <prefix>/<metric>, alert policies and the dashboard are titled <prefix>: ..."
}

variable "labels" {
  type        = map(string)
  description = "User labels added to the alert policies and the notification channel."
  default     = {}
}

variable "function_name" {
  type        = string
  description = "Name of the segmentation function; its Cloud Run service (resource.labels.service_name of its log entries) has the same name."
}

variable "push_subscription" {
  type        = string
  description = "Name (not the full id) of the push subscription that delivers uploads to the function."
}

variable "dead_letter_subscription" {
  type        = string
  description = "Name (not the full id) of the pull subscription holding dead-lettered upload events."
}

variable "notification_email" {
  type        = string
  description = "Email address the alert policies notify (one email notification channel). null = no channel: incidents only show in the console."
  default     = null

  validation {
    condition     = var.notification_email == null || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.notification_email))
    error_message = "notification_email must be null or an email address."
  }
}

variable "dead_letter_backlog_threshold" {
  type        = number
  description = "Alert when the dead-letter subscription holds more than this many undelivered messages (0 = any dead letter)."
  default     = 0

  validation {
    condition     = var.dead_letter_backlog_threshold >= 0
    error_message = "dead_letter_backlog_threshold must be >= 0."
  }
}

variable "oldest_unacked_age_threshold_seconds" {
  type        = number
  description = "Alert when the push subscription's oldest unacknowledged message is older than this for 5 minutes. Above the time a failing message needs to be dead-lettered (retries with backoff), so it means a backlog, not one bad upload."
  default     = 1800

  validation {
    condition     = var.oldest_unacked_age_threshold_seconds >= 60
    error_message = "oldest_unacked_age_threshold_seconds must be at least 60."
  }
}

variable "error_records_per_minute_threshold" {
  type        = number
  description = "Alert when the function writes error records (uploads it cannot segment: not an image, too large, ...) faster than this many per minute, averaged over 15 minutes."
  default     = 1

  validation {
    condition     = var.error_records_per_minute_threshold > 0
    error_message = "error_records_per_minute_threshold must be > 0."
  }
}

variable "latency_p95_threshold_ms" {
  type        = number
  description = "Alert when the 95th percentile of the end-to-end time of invocations that wrote a mask (timings_ms.total) stays above this many milliseconds for 10 minutes."
  default     = 10000

  validation {
    condition     = var.latency_p95_threshold_ms > 0
    error_message = "latency_p95_threshold_ms must be > 0."
  }
}

variable "mean_confidence_baseline" {
  type        = number
  description = "Baseline mean confidence per mask: the served model's metrics.tflite.quality_signals.mean_confidence from its manifest.json. null = no quality alert (the dashboard still charts it)."
  default     = null

  validation {
    condition     = var.mean_confidence_baseline == null || (try(var.mean_confidence_baseline >= 0 && var.mean_confidence_baseline <= 1, false))
    error_message = "mean_confidence_baseline must be null or between 0 and 1."
  }
}

variable "mean_confidence_margin" {
  type        = number
  description = "Alert when the hourly mean of the masks' mean confidence falls more than this below mean_confidence_baseline (per model version)."
  default     = 0.1

  validation {
    condition     = var.mean_confidence_margin > 0 && var.mean_confidence_margin < 1
    error_message = "mean_confidence_margin must be between 0 and 1 (exclusive)."
  }
}
