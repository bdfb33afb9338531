# The four buckets of the service. All of them: uniform bucket-level access (IAM only, no ACLs),
# public access prevention enforced, object versioning (an accidental overwrite or delete can be
# undone) with noncurrent versions cleaned up by lifecycle rules, optional CMEK.

locals {
  # Outputs outlive the upload they describe by at most output_retention_grace_days: the input
  # rule deletes an upload at input_retention_days, and its outputs are written after it.
  output_retention_days = (
    var.output_retention_days != null ? var.output_retention_days :
    var.input_retention_days > 0 ? var.input_retention_days + var.output_retention_grace_days : 0
  )

  buckets = {
    # Uploads; the bucket notification on it triggers the pipeline.
    input = {
      lifecycle = concat(
        var.input_retention_days > 0 ? [{ age = var.input_retention_days, prefix = null, noncurrent_days = null }] : [],
        [{ age = null, prefix = null, noncurrent_days = var.noncurrent_version_retention_days }],
      )
    }
    # masks/<name>.png and errors/<name>.json written by the function (never the input bucket: no
    # trigger loops). Error records expire; both kinds expire local.output_retention_days after
    # they were written, a backstop for the function deleting a deleted upload's outputs.
    output = {
      lifecycle = concat(
        var.error_record_retention_days > 0 ? [{ age = var.error_record_retention_days, prefix = "errors/", noncurrent_days = null }] : [],
        local.output_retention_days > 0 ? [
          for prefix in ["masks/", "errors/"] : { age = local.output_retention_days, prefix = prefix, noncurrent_days = null }
        ] : [],
        [{ age = null, prefix = null, noncurrent_days = var.noncurrent_version_retention_days }],
      )
    }
    # unet/<version>/{model.tflite,manifest.json}, unet/latest.json, tfds/ cache, checkpoints/<run>.
    # Versioned with a long noncurrent retention so that a published model can be rolled back.
    models = {
      lifecycle = concat(
        var.checkpoint_retention_days > 0 ? [{ age = var.checkpoint_retention_days, prefix = "checkpoints/", noncurrent_days = null }] : [],
        [{ age = null, prefix = null, noncurrent_days = var.model_noncurrent_version_retention_days }],
      )
    }
    # Zips of functions/ and model_build/ uploaded by Terraform under content-hash names; Terraform
    # deletes a superseded zip itself, the rule only cleans up noncurrent versions.
    source = {
      lifecycle = [{ age = null, prefix = null, noncurrent_days = var.noncurrent_version_retention_days }]
    }
  }
}

data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

# With CMEK, the Cloud Storage service agent encrypts/decrypts with the key on our behalf.
resource "google_kms_crypto_key_iam_member" "gcs_cmek" {
  count = var.kms_key_name == null ? 0 : 1

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_bucket" "this" {
  for_each = local.buckets

  project                     = var.project_id
  name                        = "${var.prefix}-${each.key}"
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = merge(var.labels, { component = each.key })

  versioning {
    enabled = true
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.lifecycle
    content {
      action {
        type = "Delete"
      }
      condition {
        age                        = lifecycle_rule.value.age
        matches_prefix             = lifecycle_rule.value.prefix == null ? null : [lifecycle_rule.value.prefix]
        days_since_noncurrent_time = lifecycle_rule.value.noncurrent_days
        with_state                 = lifecycle_rule.value.noncurrent_days == null ? "ANY" : "ARCHIVED"
      }
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.gcs_cmek]
}
