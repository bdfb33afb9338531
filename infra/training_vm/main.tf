# GPU training VM: created stopped, started on demand; its startup script trains, publishes the
# model to the models bucket and stops the VM (see startup.sh.tftpl and README.md).

locals {
  name = "${var.prefix}-trainer"

  # Content hash of each package directory: its archive object is named by it, so the VM always
  # fetches the source that matches the current configuration, and an unchanged tree uploads
  # nothing (the same filter as the archive's excludes).
  source_files = {
    for name, dir in var.source_packages : name => sort([
      for f in fileset(dir, "**") : f
      if !strcontains(f, "__pycache__") && !endswith(f, ".pyc") && !startswith(f, ".")
    ])
  }
  source_hashes = {
    for name, files in local.source_files :
    name => sha256(join("\n", [for f in files : "${f} ${filesha256("${var.source_packages[name]}/${f}")}"]))
  }
  # package name -> object in the source bucket: training/<package>-<sha256>.zip
  source_objects = { for name, hash in local.source_hashes : name => "training/${name}-${hash}.zip" }
}

# --- source --------------------------------------------------------------------------------------

# The VM runs `python -m model_build` from <workdir>/src, and model_build imports the function's
# `segmentation` package (the model contract): one zip per package of var.source_packages, each
# holding the package's files at its root, unpacked into <workdir>/src/<package>
# (requirements-gpu.txt is inside model_build).
data "archive_file" "source" {
  for_each = var.source_packages

  type             = "zip"
  source_dir       = each.value
  output_path      = "${var.archive_output_dir}/training-${each.key}.zip"
  output_file_mode = "0644"
  excludes         = ["**/__pycache__/**", "**/*.pyc", ".*"]
}

locals {
  # Every variable the template uses; tests/iac renders the template with these keys.
  startup_vars = {
    models_bucket  = var.models_bucket
    source_bucket  = var.source_bucket
    source_objects = local.source_objects
    # sha256 of each zip as uploaded: the VM checks what it downloads against it (sha256sum -c).
    source_sha256    = { for name, archive in data.archive_file.source : name => archive.output_sha256 }
    default_run_id   = var.run_id
    epochs           = var.epochs == null ? "" : tostring(var.epochs)
    fine_tune_epochs = var.fine_tune_epochs == null ? "" : tostring(var.fine_tune_epochs)
    uv_version       = var.uv_version
    uv_wheel_url     = var.uv_wheel_url
    uv_wheel_sha256  = var.uv_wheel_sha256
    python_version   = var.python_version
    source_commit    = var.source_commit
    move_latest      = var.move_latest
  }
}

resource "google_storage_bucket_object" "source" {
  for_each = var.source_packages

  bucket       = var.source_bucket
  name         = local.source_objects[each.key]
  source       = data.archive_file.source[each.key].output_path
  content_type = "application/zip"
}

# The single model_build archive of earlier versions is now the "model_build" instance (an
# unchanged tree keeps its object instead of a delete racing the re-upload of the same name).
moved {
  from = google_storage_bucket_object.source
  to   = google_storage_bucket_object.source["model_build"]
}

# --- identity ------------------------------------------------------------------------------------

resource "google_service_account" "trainer" {
  project      = var.project_id
  account_id   = "${var.service_account_prefix}-trainer"
  display_name = "Segmentation GPU trainer"
  description  = "Runs model_build on ${local.name}: reads the source archives, writes the models bucket."
}

# Writes checkpoints, the tfds cache, markers and the published model (objectUser: create,
# overwrite and delete, e.g. checkpoint rotation and unet/latest.json).
resource "google_storage_bucket_iam_member" "trainer_models_writer" {
  bucket = var.models_bucket
  role   = "roles/storage.objectUser"
  member = google_service_account.trainer.member
}

resource "google_storage_bucket_iam_member" "trainer_source_reader" {
  bucket = var.source_bucket
  role   = "roles/storage.objectViewer"
  member = google_service_account.trainer.member
}

# Project-level by necessity (log entries and metrics are written to the project, there is no
# narrower resource): the guest agent ships the startup script's output to Cloud Logging and the
# Ops Agent, when installed, writes logs and GPU metrics.
resource "google_project_iam_member" "trainer_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.trainer.member
}

resource "google_project_iam_member" "trainer_metric_writer" {
  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = google_service_account.trainer.member
}

# --- network: private subnet, egress through Cloud NAT (pip, uv, tfds downloads) -----------------

resource "google_compute_network" "training" {
  project                 = var.project_id
  name                    = "${var.prefix}-training"
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"
}

resource "google_compute_subnetwork" "training" {
  project                  = var.project_id
  name                     = "${var.prefix}-training-${var.region}"
  region                   = var.region
  network                  = google_compute_network.training.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_router" "training" {
  project = var.project_id
  name    = "${var.prefix}-training-router"
  region  = var.region
  network = google_compute_network.training.id
}

resource "google_compute_router_nat" "training" {
  project                            = var.project_id
  name                               = "${var.prefix}-training-nat"
  region                             = var.region
  router                             = google_compute_router.training.name
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.training.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# Nothing can connect in (no external IP, and the VPC's implied deny-ingress rule), except SSH
# through IAP when enabled for debugging.
resource "google_compute_firewall" "iap_ssh" {
  count = var.enable_iap_ssh ? 1 : 0

  project   = var.project_id
  name      = "${var.prefix}-training-iap-ssh"
  network   = google_compute_network.training.id
  direction = "INGRESS"
  priority  = 1000

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }

  source_ranges           = ["35.235.240.0/20"]
  target_service_accounts = [google_service_account.trainer.email]

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# --- the VM --------------------------------------------------------------------------------------

resource "google_compute_instance" "trainer" {
  project                   = var.project_id
  name                      = local.name
  zone                      = var.zone
  machine_type              = var.machine_type
  desired_status            = var.desired_status
  allow_stopping_for_update = true
  labels                    = var.labels

  boot_disk {
    auto_delete       = true
    kms_key_self_link = var.kms_key_self_link

    initialize_params {
      image  = var.image
      size   = var.boot_disk_size_gb
      type   = var.boot_disk_type
      labels = var.labels
    }
  }

  # No access_config block: no external IP. Egress goes through Cloud NAT.
  network_interface {
    subnetwork = google_compute_subnetwork.training.id
  }

  guest_accelerator {
    type  = var.gpu_type
    count = var.gpu_count
  }

  # GPU VMs cannot live-migrate: they must stop for host maintenance. Spot VMs are stopped (not
  # deleted) when preempted and never restart on their own; a restart resumes from checkpoints.
  scheduling {
    on_host_maintenance         = "TERMINATE"
    provisioning_model          = var.spot ? "SPOT" : "STANDARD"
    preemptible                 = var.spot
    automatic_restart           = !var.spot
    instance_termination_action = var.spot || var.max_run_hours > 0 ? "STOP" : null

    dynamic "max_run_duration" {
      for_each = var.max_run_hours > 0 ? [var.max_run_hours] : []
      content {
        seconds = max_run_duration.value * 3600
      }
    }
  }

  shielded_instance_config {
    enable_secure_boot          = var.enable_secure_boot
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  service_account {
    email  = google_service_account.trainer.email
    scopes = ["cloud-platform"]
  }

  metadata = {
    install-nvidia-driver  = "True"
    enable-oslogin         = "TRUE"
    block-project-ssh-keys = "TRUE"
    training-run-id        = var.run_id
    startup-script         = templatefile("${path.module}/startup.sh.tftpl", local.startup_vars)
  }

  lifecycle {
    # Training is started on demand and stops itself: an apply must neither stop a running
    # training nor undo the run id the train step set.
    ignore_changes = [desired_status, metadata["training-run-id"]]

    # The startup script takes uv-<uv_version>.data/scripts/uv out of the wheel.
    precondition {
      condition     = startswith(basename(var.uv_wheel_url), "uv-${var.uv_version}-")
      error_message = "uv_wheel_url must be the wheel of uv_version (uv-<uv_version>-...whl)."
    }
  }

  depends_on = [
    google_compute_router_nat.training,
    google_storage_bucket_iam_member.trainer_models_writer,
    google_storage_bucket_iam_member.trainer_source_reader,
    google_storage_bucket_object.source,
  ]
}
