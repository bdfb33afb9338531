output "input_bucket" {
  description = "Upload images here: gs://<input_bucket>/<name>."
  value       = module.storage.input_bucket
}

output "output_bucket" {
  description = "Masks appear at gs://<output_bucket>/masks/<name>.png, error records at gs://<output_bucket>/errors/<name>.json."
  value       = module.storage.output_bucket
}

output "models_bucket" {
  description = "Published models (unet/<version>/, unet/latest.json), the tfds cache and training checkpoints."
  value       = module.storage.models_bucket
}

output "source_bucket" {
  description = "Source archives of the function and of the training code."
  value       = module.storage.source_bucket
}

output "uploads_topic" {
  description = "Topic receiving the input bucket's OBJECT_FINALIZE notifications."
  value       = module.messaging.uploads_topic
}

output "dead_letter_topic" {
  description = "Dead-letter topic for uploads the function failed to process max_delivery_attempts times."
  value       = module.messaging.dead_letter_topic
}

output "dead_letter_subscription" {
  description = "Pull subscription holding dead-lettered upload events (inspect with gcloud pubsub subscriptions pull)."
  value       = module.messaging.dead_letter_subscription
}

output "push_subscription" {
  description = "Push subscription delivering upload events to the function."
  value       = module.messaging.push_subscription
}

output "function_name" {
  description = "Name of the segmentation function."
  value       = module.function.function_name
}

output "function_url" {
  description = "URL of the function (internal ingress; only the push subscription may invoke it)."
  value       = module.function.function_url
}

output "function_service_account" {
  description = "Runtime service account of the function."
  value       = module.function.service_account_email
}

output "model_uri" {
  description = "MODEL_URI the function is configured with."
  value       = "gs://${module.storage.models_bucket}/unet/${var.model_version}"
}

output "training_vm_name" {
  description = "Name of the GPU training VM (null when disabled)."
  value       = one(module.training_vm[*].instance_name)
}

output "training_vm_zone" {
  description = "Zone of the GPU training VM (null when disabled)."
  value       = one(module.training_vm[*].zone)
}

output "training_start_command" {
  description = "Command that starts a training run on the VM (null when disabled)."
  value       = one(module.training_vm[*].start_command)
}

output "upload_example" {
  description = "How to upload an image for segmentation."
  value       = "gcloud storage cp ./cat.jpg gs://${module.storage.input_bucket}/${var.notification_prefix}cat.jpg"
}

output "monitoring_dashboard_id" {
  description = "Id of the Cloud Monitoring dashboard (null when monitoring is disabled)."
  value       = one(module.monitoring[*].dashboard_id)
}

output "log_metric_types" {
  description = "Metric types of the log-based metrics read from the function's summary lines (null when monitoring is disabled)."
  value       = one(module.monitoring[*].log_metric_types)
}

# --- Cloud Build ---------------------------------------------------------------------------------

output "cloudbuild_ci_service_account" {
  description = "Identity of the test build (cloudbuild.yaml): writes build logs, cannot deploy."
  value       = google_service_account.cloudbuild_ci.email
}

output "cloudbuild_deployer_service_account" {
  description = "Identity of the deploy build (cloudbuild-deploy.yaml); its project roles are granted once by a project admin (docs/deploy.md)."
  value       = google_service_account.cloudbuild_deployer.email
}
