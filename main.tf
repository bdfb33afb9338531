# Serverless Segmentation: root module. See docs/deploy.md for the deploy guide and
# docs/architecture.md for the architecture. The modules under infra/ follow the flow:
#   storage -> function (reads input/models, writes output) -> messaging (upload notification,
#   push subscription to the function, dead-letter topic); training_vm publishes models.
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

  memory           = var.function_memory
  cpu              = var.function_cpu
  max_instances    = var.function_max_instances
  min_instances    = var.function_min_instances
  concurrency      = var.function_concurrency
  timeout_seconds  = var.function_timeout_seconds
  max_image_bytes  = var.max_image_bytes
  max_image_pixels = var.max_image_pixels
  num_threads      = var.num_threads
  log_level        = var.log_level
  extra_env_vars   = var.function_extra_env_vars

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
  subnet_cidr       = var.training_subnet_cidr
  enable_iap_ssh    = var.training_enable_iap_ssh

  depends_on = [google_project_service.this]
}
