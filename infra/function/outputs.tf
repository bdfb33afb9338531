output "function_name" {
  description = "Name of the function (and of the Cloud Run service behind it)."
  value       = google_cloudfunctions2_function.this.name
}

output "function_url" {
  description = "HTTPS URL of the function (internal ingress only)."
  value       = google_cloudfunctions2_function.this.service_config[0].uri
}

output "service_account_email" {
  description = "Runtime service account of the function."
  value       = google_service_account.function.email
}

output "build_service_account_email" {
  description = "Service account Cloud Build uses to build the function."
  value       = google_service_account.build.email
}

output "push_service_account_email" {
  description = "Service account the push subscription authenticates as."
  value       = google_service_account.push.email
}

output "push_service_account_name" {
  description = "Resource name (projects/P/serviceAccounts/EMAIL) of the push service account."
  value       = google_service_account.push.name
}

output "source_object" {
  description = "gs:// URL of the deployed source zip."
  value       = "gs://${var.source_bucket}/${google_storage_bucket_object.source.name}"
}

output "artifact_repository" {
  description = "Artifact Registry repository holding the function's images."
  value       = google_artifact_registry_repository.function.id
}
