output "uploads_topic" {
  description = "Name of the topic that receives the input bucket's OBJECT_FINALIZE notifications."
  value       = google_pubsub_topic.uploads.name
}

output "uploads_topic_id" {
  description = "Full id (projects/P/topics/T) of the uploads topic."
  value       = google_pubsub_topic.uploads.id
}

output "dead_letter_topic" {
  description = "Name of the dead-letter topic."
  value       = google_pubsub_topic.dead_letter.name
}

output "push_subscription" {
  description = "Name of the push subscription that delivers uploads to the function."
  value       = google_pubsub_subscription.uploads_push.name
}

output "dead_letter_subscription" {
  description = "Name of the pull subscription holding dead-lettered messages."
  value       = google_pubsub_subscription.dead_letter.name
}

output "notification_id" {
  description = "Id of the input bucket's notification configuration."
  value       = google_storage_notification.uploads.notification_id
}
