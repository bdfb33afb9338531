variable "project_id" {
  type        = string
  description = "Project that owns the topics and subscriptions."
}

variable "prefix" {
  type        = string
  description = "Name prefix: topics <prefix>-uploads and <prefix>-uploads-dlq."
}

variable "labels" {
  type        = map(string)
  description = "Labels added to topics and subscriptions."
  default     = {}
}

variable "input_bucket" {
  type        = string
  description = "Name of the bucket whose OBJECT_FINALIZE, OBJECT_DELETE and OBJECT_ARCHIVE events are published to the uploads topic."
}

variable "object_name_prefix" {
  type        = string
  description = "Only notify for objects whose name starts with this prefix (\"\" = every object)."
  default     = ""
}

variable "function_url" {
  type        = string
  description = "HTTPS URL of the function. The subscription pushes to <url>/projects/<p>/topics/<t> (functions-framework takes the CloudEvent source from that path) with an OIDC token whose audience is <url>."
}

variable "push_service_account_email" {
  type        = string
  description = "Email of the service account whose OIDC token authenticates each push (holds roles/run.invoker on the function)."
}

variable "push_service_account_name" {
  type        = string
  description = "Resource name (projects/P/serviceAccounts/EMAIL) of the push service account; the Pub/Sub service agent gets token creator on it."
}

variable "ack_deadline_seconds" {
  type        = number
  description = "How long Pub/Sub waits for the push endpoint's answer before retrying: at least the function timeout (10-600)."
  default     = 300

  validation {
    condition     = var.ack_deadline_seconds >= 10 && var.ack_deadline_seconds <= 600
    error_message = "ack_deadline_seconds must be between 10 and 600."
  }
}

variable "max_delivery_attempts" {
  type        = number
  description = "Deliveries (first one included) before a message goes to the dead-letter topic (5-100)."
  default     = 5

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100 (Pub/Sub limits)."
  }
}

variable "minimum_backoff" {
  type        = string
  description = "Shortest delay before a redelivery (exponential backoff), e.g. \"10s\"."
  default     = "10s"
}

variable "maximum_backoff" {
  type        = string
  description = "Longest delay between redeliveries, at most \"600s\"."
  default     = "600s"
}

variable "message_retention_duration" {
  type        = string
  description = "How long unacknowledged messages are kept on the uploads subscription and the dead-letter subscription (max 7 days)."
  default     = "604800s"
}

variable "kms_key_name" {
  type        = string
  description = "Optional CMEK key for both topics; null = Google-managed keys. The Pub/Sub service agent is granted encrypter/decrypter on it."
  default     = null
}
