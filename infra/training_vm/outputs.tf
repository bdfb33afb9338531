output "instance_name" {
  description = "Name of the training VM."
  value       = google_compute_instance.trainer.name
}

output "zone" {
  description = "Zone of the training VM."
  value       = google_compute_instance.trainer.zone
}

output "service_account_email" {
  description = "Service account of the training VM."
  value       = google_service_account.trainer.email
}

output "source_objects" {
  description = "gs:// URLs of the training source archives, by package name."
  value       = { for name, object in google_storage_bucket_object.source : name => "gs://${var.source_bucket}/${object.name}" }
}

output "start_command" {
  description = "Starts a training run (set the run id first to train a new model, see docs/deploy.md)."
  value       = "gcloud compute instances start ${google_compute_instance.trainer.name} --zone ${google_compute_instance.trainer.zone} --project ${var.project_id}"
}
