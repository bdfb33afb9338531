# Upload -> Pub/Sub -> function, with retries and a dead-letter topic.
#
# Delivery: an explicit push subscription (OIDC-authenticated) to the function's URL, not the
# function's Eventarc `event_trigger`. With `event_trigger`, Eventarc creates and owns the
# subscription: Terraform cannot attach a dead-letter policy or a retry backoff to it (and a change
# made out of band is lost whenever the trigger is recreated), and a message still failing when
# the 24 h retry window ends is silently dropped. Owning the subscription gives us the retry
# policy, the dead-letter policy, the ack deadline, message retention and no expiry, all in code.
# The function accepts both shapes: functions-framework turns a Pub/Sub push body into the same
# google.cloud.pubsub.topic.v1.messagePublished CloudEvent that Eventarc would deliver (the
# /projects/<p>/topics/<t> path of the push URL becomes the event's source).

data "google_project" "this" {
  project_id = var.project_id
}

data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

locals {
  function_url = trimsuffix(var.function_url, "/")
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_kms_crypto_key_iam_member" "pubsub_cmek" {
  count = var.kms_key_name == null ? 0 : 1

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.pubsub_agent
}

resource "google_pubsub_topic" "uploads" {
  project      = var.project_id
  name         = "${var.prefix}-uploads"
  kms_key_name = var.kms_key_name
  labels       = var.labels

  depends_on = [google_kms_crypto_key_iam_member.pubsub_cmek]
}

resource "google_pubsub_topic" "dead_letter" {
  project      = var.project_id
  name         = "${var.prefix}-uploads-dlq"
  kms_key_name = var.kms_key_name
  labels       = var.labels

  depends_on = [google_kms_crypto_key_iam_member.pubsub_cmek]
}

# The Cloud Storage service agent publishes the notifications: without this binding creating the
# notification fails with 403.
resource "google_pubsub_topic_iam_member" "gcs_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.uploads.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# OBJECT_FINALIZE: an upload to segment. OBJECT_DELETE / OBJECT_ARCHIVE: an upload deleted, made
# noncurrent (the bucket is versioned: a delete or an overwrite archives the live generation) or
# its noncurrent version expired: the function deletes that generation's outputs
# (DELETE_OUTPUTS_ON_DELETE; it acks them as ignored when that is off).
resource "google_storage_notification" "uploads" {
  bucket             = var.input_bucket
  topic              = google_pubsub_topic.uploads.id
  payload_format     = "JSON_API_V1"
  event_types        = ["OBJECT_FINALIZE", "OBJECT_DELETE", "OBJECT_ARCHIVE"]
  object_name_prefix = var.object_name_prefix == "" ? null : var.object_name_prefix

  depends_on = [google_pubsub_topic_iam_member.gcs_publisher]
}

resource "google_pubsub_subscription" "uploads_push" {
  project                    = var.project_id
  name                       = "${var.prefix}-uploads-push"
  topic                      = google_pubsub_topic.uploads.id
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = var.message_retention_duration
  labels                     = var.labels

  push_config {
    push_endpoint = "${local.function_url}/${google_pubsub_topic.uploads.id}"

    oidc_token {
      service_account_email = var.push_service_account_email
      audience              = local.function_url
    }
  }

  retry_policy {
    minimum_backoff = var.minimum_backoff
    maximum_backoff = var.maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  # Never expire: a quiet week must not delete the subscription (default TTL is 31 days).
  expiration_policy {
    ttl = ""
  }
}

# Holds dead-lettered messages until someone looks at them (pull; never expires).
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = "${var.prefix}-uploads-dlq-hold"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = var.message_retention_duration
  retain_acked_messages      = false
  labels                     = var.labels

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering is done by the Pub/Sub service agent: it must be able to publish to the
# dead-letter topic and to acknowledge (subscriber) on the source subscription.
resource "google_pubsub_topic_iam_member" "pubsub_agent_dlq_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_source_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.uploads_push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# Pub/Sub mints the push OIDC tokens as the push service account. Projects created before
# 2021-04-08 need this grant explicitly; it is scoped to that one service account.
resource "google_service_account_iam_member" "pubsub_agent_token_creator" {
  service_account_id = var.push_service_account_name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}
