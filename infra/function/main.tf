# The segmentation function (Cloud Functions 2nd gen, i.e. a Cloud Run service built from source).
#
# Trigger: none on the function itself. It is an HTTP function reached only by the uploads push
# subscription (infra/messaging, where the choice of push subscription over an Eventarc
# event_trigger is explained): ingress is internal-only (Pub/Sub push counts as internal traffic
# of the project) and only the push service account may invoke it (roles/run.invoker).

locals {
  function_name = "${var.prefix}-segment-image"

  # Content hash of the files that go into the zip: the object name changes (and the function
  # redeploys) exactly when a source file changes, whatever the zip's own metadata.
  source_files = sort([
    for f in fileset(var.source_dir, "**") : f
    if !strcontains(f, "__pycache__") && !endswith(f, ".pyc") && !startswith(f, ".")
  ])
  source_hash = sha256(join("\n", [for f in local.source_files : "${f} ${filesha256("${var.source_dir}/${f}")}"]))

  # Contract with functions/ (docs/architecture.md, "Settings"): read once at cold start and validated there.
  # The buckets and the model come from this module; every other setting from var.settings.
  # The instance's shape comes from this module's own variables, so it cannot drift from them.
  env_vars = merge(var.settings, {
    OUTPUT_BUCKET           = var.output_bucket
    MODEL_URI               = var.model_uri
    CONCURRENCY             = tostring(var.concurrency)
    MEMORY_MIB              = tostring(module.memory_budget.memory_mib)
    REQUEST_TIMEOUT_SECONDS = tostring(var.timeout_seconds)
    # functions-framework's gunicorn threads (its default is 4 per CPU): one per request Cloud
    # Run may send, so none waits behind another inside the instance.
    THREADS = tostring(var.concurrency)
  })
}

# Plan fails when concurrency x the worst request + baseline does not fit the memory: the rule
# the function applies at cold start, from the same memory_budget.json.
module "memory_budget" {
  source = "../memory_budget"

  memory           = var.memory
  concurrency      = var.concurrency
  max_image_pixels = tonumber(var.settings["MAX_IMAGE_PIXELS"])
  max_image_bytes  = tonumber(var.settings["MAX_IMAGE_BYTES"])
  budget_file      = "${var.source_dir}/segmentation/memory_budget.json"
}

# --- source --------------------------------------------------------------------------------------

data "archive_file" "source" {
  type             = "zip"
  source_dir       = var.source_dir
  output_path      = var.archive_output_path
  output_file_mode = "0644"
  excludes         = ["**/__pycache__/**", "**/*.pyc", ".*"]
}

resource "google_storage_bucket_object" "source" {
  bucket       = var.source_bucket
  name         = "function/source-${local.source_hash}.zip"
  source       = data.archive_file.source.output_path
  content_type = "application/zip"
}

# --- identities ----------------------------------------------------------------------------------

# Runtime identity: bucket-level roles only, no project-wide role at all. Logs need none: Cloud Run
# collects stdout/stderr itself, the function does not call the Logging API.
resource "google_service_account" "function" {
  project      = var.project_id
  account_id   = "${var.service_account_prefix}-fn"
  display_name = "Segmentation function runtime"
  description  = "Runs ${local.function_name}: reads uploads and models, writes masks."
}

resource "google_storage_bucket_iam_member" "function_input_reader" {
  bucket = var.input_bucket
  role   = "roles/storage.objectViewer"
  member = google_service_account.function.member
}

# objectUser (get, list, create, delete): masks are replaced when an image is re-uploaded, and the
# idempotency check reads the existing mask's metadata.
resource "google_storage_bucket_iam_member" "function_output_writer" {
  bucket = var.output_bucket
  role   = "roles/storage.objectUser"
  member = google_service_account.function.member
}

resource "google_storage_bucket_iam_member" "function_models_reader" {
  bucket = var.models_bucket
  role   = "roles/storage.objectViewer"
  member = google_service_account.function.member
}

# Build identity (Cloud Build runs the buildpack build of the function): reads the source, pushes
# the image to our repository. Project-level grants, each as narrow as the service allows:
# roles/logging.logWriter to write the build log (log entries belong to the project, there is no
# narrower resource), and roles/storage.objectViewer limited by an IAM condition to the
# gcf-v2-sources-* buckets Cloud Functions copies the source into before the build (created by
# the service on first deploy, so they cannot be named here).
resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = "${var.service_account_prefix}-fn-build"
  display_name = "Segmentation function build"
  description  = "Builds ${local.function_name} from source."
}

resource "google_project_iam_member" "build_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.build.member
}

resource "google_project_iam_member" "build_gcf_sources_reader" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = google_service_account.build.member

  condition {
    title       = "gcf-v2-sources buckets only"
    description = "Cloud Functions' staging copies of function sources."
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-\")"
  }
}

resource "google_storage_bucket_iam_member" "build_source_reader" {
  bucket = var.source_bucket
  role   = "roles/storage.objectViewer"
  member = google_service_account.build.member
}

data "google_project" "this" {
  project_id = var.project_id
}

# With CMEK, the Artifact Registry service agent encrypts the images with the key.
resource "google_kms_crypto_key_iam_member" "artifact_registry_cmek" {
  count = var.kms_key_name == null ? 0 : 1

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-artifactregistry.iam.gserviceaccount.com"
}

resource "google_artifact_registry_repository" "function" {
  project       = var.project_id
  location      = var.region
  repository_id = "${var.prefix}-functions"
  description   = "Images of ${local.function_name} built by Cloud Functions."
  format        = "DOCKER"
  kms_key_name  = var.kms_key_name
  labels        = var.labels

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.artifact_retention_count
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "2592000s"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.artifact_registry_cmek]
}

resource "google_artifact_registry_repository_iam_member" "build_writer" {
  project    = var.project_id
  location   = google_artifact_registry_repository.function.location
  repository = google_artifact_registry_repository.function.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.build.member
}

# Push identity: the uploads subscription authenticates as this account (OIDC); it may invoke the
# function and nothing else.
resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "${var.service_account_prefix}-push"
  display_name = "Segmentation uploads push"
  description  = "Identity of the Pub/Sub push subscription that invokes ${local.function_name}."
}

# --- function ------------------------------------------------------------------------------------

resource "google_cloudfunctions2_function" "this" {
  project     = var.project_id
  name        = local.function_name
  location    = var.region
  description = "Segments uploaded images into masks (U-Net, LiteRT)."
  labels      = var.labels

  build_config {
    runtime           = var.runtime
    entry_point       = var.entry_point
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.function.id

    source {
      storage_source {
        bucket = var.source_bucket
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.function.email
    available_memory                 = var.memory
    available_cpu                    = var.cpu
    max_instance_count               = var.max_instances
    min_instance_count               = var.min_instances
    max_instance_request_concurrency = var.concurrency
    timeout_seconds                  = var.timeout_seconds
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    environment_variables            = local.env_vars
  }

  depends_on = [
    google_project_iam_member.build_log_writer,
    google_project_iam_member.build_gcf_sources_reader,
    google_storage_bucket_iam_member.build_source_reader,
    google_artifact_registry_repository_iam_member.build_writer,
    google_storage_bucket_iam_member.function_input_reader,
    google_storage_bucket_iam_member.function_output_writer,
    google_storage_bucket_iam_member.function_models_reader,
  ]
}

# A 2nd gen function is served by the Cloud Run service of the same name: invoking it needs
# roles/run.invoker on that service.
resource "google_cloud_run_service_iam_member" "push_invoker" {
  project  = var.project_id
  location = google_cloudfunctions2_function.this.location
  service  = google_cloudfunctions2_function.this.name
  role     = "roles/run.invoker"
  member   = google_service_account.push.member
}
