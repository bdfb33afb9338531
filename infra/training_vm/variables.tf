variable "project_id" {
  type        = string
  description = "Project that owns the VM and its network."
}

variable "region" {
  type        = string
  description = "Region of the VM's subnet, router and Cloud NAT."
}

variable "zone" {
  type        = string
  description = "Zone of the VM; must offer the chosen GPU type (us-central1-a/b/c/f offer T4)."
}

variable "prefix" {
  type        = string
  description = "Name prefix: the VM is <prefix>-trainer, its network <prefix>-training."
}

variable "service_account_prefix" {
  type        = string
  description = "Prefix of the VM's service account id (<p>-trainer); at most 21 characters."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,19}[a-z0-9]$", var.service_account_prefix))
    error_message = "service_account_prefix must be 4-21 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels added to the VM and its disk."
  default     = {}
}

variable "models_bucket" {
  type        = string
  description = "Models bucket: tfds/ cache, checkpoints/<run-id>/, the published unet/<version>/, runs/<run-id>/ markers and logs (the VM gets roles/storage.objectUser on it)."
}

variable "source_bucket" {
  type        = string
  description = "Bucket the training source archives are uploaded to (the VM gets roles/storage.objectViewer on it)."
}

variable "source_packages" {
  type        = map(string)
  description = "Python packages the VM runs, as package name => directory (zipped with the package's files at the root, uploaded as training/<name>-<sha256>.zip and unpacked into <workdir>/src/<name>): model_build (with requirements-gpu.txt) and segmentation (functions/segmentation, the model contract model_build imports)."

  validation {
    condition     = contains(keys(var.source_packages), "model_build") && contains(keys(var.source_packages), "segmentation")
    error_message = "source_packages must include model_build and segmentation (model_build imports segmentation)."
  }

  validation {
    condition     = alltrue([for name in keys(var.source_packages) : can(regex("^[A-Za-z_][A-Za-z0-9_]*$", name))])
    error_message = "source_packages keys must be Python package names (letters, digits and '_', not starting with a digit)."
  }

  validation {
    condition     = alltrue([for dir in values(var.source_packages) : fileexists("${dir}/__init__.py")])
    error_message = "Every source_packages directory must be a Python package (contain __init__.py)."
  }
}

variable "archive_output_dir" {
  type        = string
  description = "Directory the package zips (training-<name>.zip) are written to locally before upload (an ignored build directory)."
}

variable "machine_type" {
  type        = string
  description = "Machine type; T4/P4/V100/P100 attach to N1 machine types only."
  default     = "n1-standard-8"
}

variable "gpu_type" {
  type        = string
  description = "Accelerator type attached to the VM."
  default     = "nvidia-tesla-t4"
}

variable "gpu_count" {
  type        = number
  description = "Number of GPUs (model_build trains on one)."
  default     = 1

  validation {
    condition     = contains([1, 2, 4, 8], var.gpu_count)
    error_message = "gpu_count must be 1, 2, 4 or 8."
  }
}

variable "spot" {
  type        = bool
  description = "Run as a Spot VM (60-91% cheaper, can be preempted: the VM stops and a restart resumes from the last checkpoint)."
  default     = false
}

variable "image" {
  type        = string
  description = "Boot image: a Deep Learning VM image family with the NVIDIA driver (Python 3.12 is installed by the startup script)."
  default     = "projects/deeplearning-platform-release/global/images/family/common-cu128-ubuntu-2204-nvidia-570"
}

variable "boot_disk_size_gb" {
  type        = number
  description = "Boot disk size (the DLVM image, the venv with CUDA wheels, the dataset cache and the run directory)."
  default     = 150
}

variable "boot_disk_type" {
  type        = string
  description = "Boot disk type."
  default     = "pd-balanced"
}

variable "desired_status" {
  type        = string
  description = "Status the VM is created in. TERMINATED (default): created stopped (google provider >= 6.7 creates, then stops it), training starts on demand (`gcloud compute instances start`, or the Cloud Build train step). Later changes are ignored so that an apply never stops a training run."
  default     = "TERMINATED"

  validation {
    condition     = contains(["RUNNING", "TERMINATED"], var.desired_status)
    error_message = "desired_status must be RUNNING or TERMINATED."
  }
}

variable "run_id" {
  type        = string
  description = "Default training run id (instance metadata training-run-id, which the train step overrides). Checkpoints live under checkpoints/<run-id>/: a restarted VM resumes the same run; a finished run (runs/<run-id>/DONE) is not trained again."
  default     = "run-001"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", var.run_id))
    error_message = "run_id must be 1-63 characters: letters, digits, '.', '_' and '-'."
  }
}

variable "epochs" {
  type        = number
  description = "--epochs for model_build (null = the CLI's default)."
  default     = null
}

variable "fine_tune_epochs" {
  type        = number
  description = "--fine-tune-epochs for model_build (null = the CLI's default)."
  default     = null
}

variable "max_run_hours" {
  type        = number
  description = "Safety net: Compute Engine stops the VM after this many hours of one run (0 = no limit)."
  default     = 12

  validation {
    condition     = var.max_run_hours >= 0
    error_message = "max_run_hours must be >= 0."
  }
}

variable "source_commit" {
  type        = string
  description = "Git commit of the training source; the startup script exports it as MODEL_BUILD_GIT_COMMIT, which model_build records in the published manifest. \"\" = unknown (not exported)."
  default     = ""

  validation {
    condition     = can(regex("^([0-9a-fA-F]{7,64})?$", var.source_commit))
    error_message = "source_commit must be empty or a git commit id (7-64 hex digits)."
  }
}

variable "move_latest" {
  type        = bool
  description = "Let a training run move unet/latest.json to the version it publishes. false = it only publishes the version; `segment models promote VERSION` moves latest after a look at its metrics and pictures."
  default     = false
}

variable "uv_version" {
  type        = string
  description = "uv release the startup script installs (requirements/uv.txt, the Makefile's UV_VERSION); uv then installs Python (the DLVM image ships 3.10)."
  default     = "0.13.9"
}

variable "uv_wheel_url" {
  type        = string
  description = "PyPI URL of uv_version's manylinux x86_64 wheel; the startup script downloads it, checks uv_wheel_sha256 and takes the uv binary out of it (no install script runs)."
  default     = "https://files.pythonhosted.org/packages/3d/aa/26d64642d808de4a652579ef950d7cd2d37f080a8babf9c67c6b75fc4c3f/uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"

  validation {
    condition     = can(regex("^https://files\\.pythonhosted\\.org/packages/.+/uv-[0-9][^/-]*-py3-none-manylinux[^/]*x86_64[^/]*\\.whl$", var.uv_wheel_url))
    error_message = "uv_wheel_url must be a uv manylinux x86_64 wheel on files.pythonhosted.org."
  }
}

variable "uv_wheel_sha256" {
  type        = string
  description = "sha256 of the wheel at uv_wheel_url (one of the hashes requirements/uv.txt lists); the startup script refuses any other file."
  default     = "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19"

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.uv_wheel_sha256))
    error_message = "uv_wheel_sha256 must be 64 lowercase hex digits."
  }
}

variable "python_version" {
  type        = string
  description = "Exact Python release uv installs for model_build (3.12, docs/architecture.md decision 1); uv checks the download against the sha256 recorded in its release."
  default     = "3.12.16"

  validation {
    condition     = can(regex("^3\\.12\\.[0-9]+$", var.python_version))
    error_message = "python_version must be an exact 3.12.x release."
  }
}

variable "subnet_cidr" {
  type        = string
  description = "IP range of the training subnet."
  default     = "10.10.0.0/24"
}

variable "enable_iap_ssh" {
  type        = bool
  description = "Allow SSH from Identity-Aware Proxy (35.235.240.0/20) for debugging; the VM has no external IP either way."
  default     = false
}

variable "enable_secure_boot" {
  type        = bool
  description = "Shielded VM Secure Boot. Off by default: it refuses unsigned kernel modules, and the NVIDIA driver the DLVM installs may not be signed. vTPM and integrity monitoring are always on."
  default     = false
}

variable "kms_key_self_link" {
  type        = string
  description = "Optional CMEK key for the boot disk; null = Google-managed keys. The Compute Engine service agent needs encrypter/decrypter on it."
  default     = null
}
