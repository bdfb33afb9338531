output "input_bucket" {
  description = "Name of the input (uploads) bucket."
  value       = google_storage_bucket.this["input"].name
}

output "output_bucket" {
  description = "Name of the output bucket (masks/ and errors/)."
  value       = google_storage_bucket.this["output"].name
}

output "models_bucket" {
  description = "Name of the models bucket (unet/<version>/, unet/latest.json, tfds/, checkpoints/)."
  value       = google_storage_bucket.this["models"].name
}

output "source_bucket" {
  description = "Name of the bucket holding the function and training source archives."
  value       = google_storage_bucket.this["source"].name
}

output "bucket_urls" {
  description = "gs:// URL of each bucket, by role (input, output, models, source)."
  value       = { for k, b in google_storage_bucket.this : k => b.url }
}

output "storage_service_agent_email" {
  description = "Email of the project's Cloud Storage service agent (publishes bucket notifications)."
  value       = data.google_storage_project_service_account.gcs.email_address
}
