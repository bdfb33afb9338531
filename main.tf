# Serverless Segmentation: root module. See docs/deploy.md for the deploy guide and
# docs/architecture.md for the architecture. The modules under infra/ follow the flow:
#   storage -> function (reads input/models, writes output) -> messaging (upload notification,
#   push subscription to the function, dead-letter topic); training_vm publishes models;
#   monitoring watches the function's structured logs and the subscriptions.
#
# State: copy backend.tf.example to backend.tf for a GCS backend (Cloud Build does so).

provider "google" {
  project        = var.project_id
  region         = var.region
  default_labels = var.labels
}

locals {
  prefix = coalesce(var.prefix, var.project_id)
  # Service account ids are at most 30 characters: <sa_prefix>-fn-build must fit.
  sa_prefix        = trimsuffix(substr(local.prefix, 0, 21), "-")
  zone             = coalesce(var.zone, "${var.region}-b")
  storage_location = coalesce(var.storage_location, var.region)
  build_dir        = "${path.root}/build/terraform"

  services = [
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "storage.googleapis.com",
  ]
}

resource "google_project_service" "this" {
  for_each = var.enable_apis ? toset(local.services) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

module "storage" {
  source = "./infra/storage"

  project_id                  = var.project_id
  prefix                      = local.prefix
  location                    = local.storage_location
  labels                      = var.labels
  force_destroy               = var.force_destroy
  kms_key_name                = var.kms_key_name
  input_retention_days        = var.input_retention_days
  error_record_retention_days = var.error_record_retention_days
  checkpoint_retention_days   = var.checkpoint_retention_days

  depends_on = [google_project_service.this]
}

module "function" {
  source = "./infra/function"

  project_id             = var.project_id
  region                 = var.region
  prefix                 = local.prefix
  service_account_prefix = local.sa_prefix
  labels                 = var.labels
  kms_key_name           = var.kms_key_name

  source_dir          = "${path.root}/functions"
  archive_output_path = "${local.build_dir}/function-source.zip"
  source_bucket       = module.storage.source_bucket
  input_bucket        = module.storage.input_bucket
  output_bucket       = module.storage.output_bucket
  models_bucket       = module.storage.models_bucket
  model_uri           = "gs://${module.storage.models_bucket}/unet/${var.model_version}"

  memory          = var.function_memory
  cpu             = var.function_cpu
  max_instances   = var.function_max_instances
  min_instances   = var.function_min_instances
  concurrency     = var.function_concurrency
  timeout_seconds = var.function_timeout_seconds
  # The function's settings (functions/segmentation/settings.py): one line per setting.
  settings = merge(var.function_extra_env_vars, {
    MAX_IMAGE_BYTES       = tostring(var.max_image_bytes)
    MAX_IMAGE_PIXELS      = tostring(var.max_image_pixels)
    NUM_THREADS           = tostring(var.num_threads)
    LOG_LEVEL             = var.log_level
    MODEL_REFRESH_SECONDS = tostring(var.model_refresh_seconds)
    CANARY_MODEL_VERSION  = var.canary_model_version
    CANARY_PERCENT        = tostring(var.canary_percent)
    # Only this bucket's events are processed (events of other readable buckets are ignored).
    INPUT_BUCKET             = module.storage.input_bucket
    DELETE_OUTPUTS_ON_DELETE = tostring(var.delete_outputs_on_delete)
  })

  depends_on = [google_project_service.this]
}

module "messaging" {
  source = "./infra/messaging"

  project_id   = var.project_id
  prefix       = local.prefix
  labels       = var.labels
  kms_key_name = var.kms_key_name

  input_bucket       = module.storage.input_bucket
  object_name_prefix = var.notification_prefix

  function_url               = module.function.function_url
  push_service_account_email = module.function.push_service_account_email
  push_service_account_name  = module.function.push_service_account_name
  # Pub/Sub must not redeliver while the function is still working on the message.
  ack_deadline_seconds  = var.function_timeout_seconds
  max_delivery_attempts = var.max_delivery_attempts
  minimum_backoff       = var.retry_minimum_backoff
  maximum_backoff       = var.retry_maximum_backoff

  depends_on = [google_project_service.this]
}

module "training_vm" {
  source = "./infra/training_vm"
  count  = var.training_vm_enabled ? 1 : 0

  project_id             = var.project_id
  region                 = var.region
  zone                   = local.zone
  prefix                 = local.prefix
  service_account_prefix = local.sa_prefix
  labels                 = var.labels

  models_bucket      = module.storage.models_bucket
  source_bucket      = module.storage.source_bucket
  archive_output_dir = local.build_dir
  # model_build imports segmentation (the model contract): the VM gets both packages.
  source_packages = {
    model_build  = "${path.root}/model_build"
    segmentation = "${path.root}/functions/segmentation"
  }

  machine_type      = var.training_machine_type
  gpu_type          = var.training_gpu_type
  gpu_count         = var.training_gpu_count
  spot              = var.training_spot
  image             = var.training_image
  boot_disk_size_gb = var.training_boot_disk_size_gb
  desired_status    = var.training_desired_status
  run_id            = var.training_run_id
  epochs            = var.training_epochs
  fine_tune_epochs  = var.training_fine_tune_epochs
  max_run_hours     = var.training_max_run_hours
  source_commit     = var.source_commit
  move_latest       = var.training_moves_latest
  subnet_cidr       = var.training_subnet_cidr
  enable_iap_ssh    = var.training_enable_iap_ssh

  depends_on = [google_project_service.this]
}

module "monitoring" {
  source = "./infra/monitoring"
  count  = var.monitoring_enabled ? 1 : 0

  project_id = var.project_id
  prefix     = local.prefix
  labels     = var.labels

  function_name            = module.function.function_name
  push_subscription        = module.messaging.push_subscription
  dead_letter_subscription = module.messaging.dead_letter_subscription

  notification_email                   = var.alert_email
  dead_letter_backlog_threshold        = var.alert_dead_letter_backlog
  oldest_unacked_age_threshold_seconds = var.alert_oldest_unacked_age_seconds
  error_records_per_minute_threshold   = var.alert_error_records_per_minute
  latency_p95_threshold_ms             = var.alert_latency_p95_ms
  mean_confidence_baseline             = var.mean_confidence_baseline
  mean_confidence_margin               = var.mean_confidence_margin

  depends_on = [google_project_service.this]
}

# --- Cloud Build: two builds, two identities -----------------------------------------------------
# Cloud Build runs a whole build as one service account (its trigger's, or `gcloud builds submit
# --service-account`), so tests and deploy are two build configs run as two accounts
# (docs/deploy.md, "Cloud Build"):
#   cloudbuild.yaml         tests + offline IaC checks, as <sa_prefix>-ci: it may write its build
#                           logs and nothing else (no state, no resources, no actAs): it cannot
#                           deploy, whatever code the tests run;
#   cloudbuild-deploy.yaml  terraform plan / apply (+ training), as <sa_prefix>-deployer, whose
#                           project roles a project admin grants once (docs/deploy.md lists them:
#                           they include IAM administration, so the pipeline does not grant them to
#                           itself); here only its log writing and actAs on exactly the accounts
#                           it deploys as.
# With cloudbuild_github set, the two triggers bind each config to its account; the deploy
# trigger waits for an approval (after the test build of the same commit has passed).

resource "google_service_account" "cloudbuild_ci" {
  project      = var.project_id
  account_id   = "${local.sa_prefix}-ci"
  display_name = "Cloud Build tests"
  description  = "Runs cloudbuild.yaml (tests, offline IaC checks): writes its build logs, nothing else; cannot deploy."

  depends_on = [google_project_service.this]
}

# Builds with a user-specified service account log to Cloud Logging (CLOUD_LOGGING_ONLY), which
# needs this role; log entries belong to the project, there is no narrower resource.
resource "google_project_iam_member" "cloudbuild_ci_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.cloudbuild_ci.member
}

resource "google_service_account" "cloudbuild_deployer" {
  project      = var.project_id
  account_id   = "${local.sa_prefix}-deployer"
  display_name = "Cloud Build deploy"
  description  = "Runs cloudbuild-deploy.yaml: terraform plan and apply of this configuration, training runs."

  depends_on = [google_project_service.this]
}

resource "google_project_iam_member" "cloudbuild_deployer_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.cloudbuild_deployer.member
}

# Deploying the function (runtime and build identities), the authenticated push subscription and
# the training VM (and setting its metadata) requires actAs on their service accounts: granted on
# each of those accounts, never project-wide.
resource "google_service_account_iam_member" "cloudbuild_deployer_act_as" {
  for_each = merge(
    {
      function       = module.function.service_account_email
      function_build = module.function.build_service_account_email
      push           = module.function.push_service_account_email
    },
    var.training_vm_enabled ? { trainer = module.training_vm[0].service_account_email } : {},
  )

  service_account_id = "projects/${var.project_id}/serviceAccounts/${each.value}"
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.cloudbuild_deployer.member
}

resource "google_cloudbuild_trigger" "test" {
  count = var.cloudbuild_github == null ? 0 : 1

  project         = var.project_id
  location        = "global"
  name            = "${local.prefix}-test"
  description     = "Tests and offline checks of every push (cloudbuild.yaml), as the ci account: cannot deploy."
  filename        = "cloudbuild.yaml"
  service_account = google_service_account.cloudbuild_ci.id

  github {
    owner = var.cloudbuild_github.owner
    name  = var.cloudbuild_github.name
    push {
      branch = ".*"
    }
  }

  depends_on = [google_project_iam_member.cloudbuild_ci_log_writer]
}

resource "google_cloudbuild_trigger" "deploy" {
  count = var.cloudbuild_github == null ? 0 : 1

  project         = var.project_id
  location        = "global"
  name            = "${local.prefix}-deploy"
  description     = "terraform apply of ${var.cloudbuild_github.deploy_branch} (cloudbuild-deploy.yaml), as the deployer account, after approval."
  filename        = "cloudbuild-deploy.yaml"
  service_account = google_service_account.cloudbuild_deployer.id

  github {
    owner = var.cloudbuild_github.owner
    name  = var.cloudbuild_github.name
    push {
      branch = "^${var.cloudbuild_github.deploy_branch}$"
    }
  }

  # The build applies with TF_VAR_cloudbuild_github from _CLOUDBUILD_GITHUB, so that its apply
  # keeps the triggers (the variable's default, null, would delete them).
  substitutions = {
    _APPLY             = "true"
    _REGION            = var.region
    _PREFIX            = local.prefix
    _CLOUDBUILD_GITHUB = jsonencode(var.cloudbuild_github)
  }

  # An approver releases the apply once the test build of the same commit has passed.
  approval_config {
    approval_required = true
  }

  depends_on = [google_project_iam_member.cloudbuild_deployer_log_writer]
}
