output "dashboard_id" {
  description = "Id (projects/P/dashboards/D) of the segmentation dashboard."
  value       = google_monitoring_dashboard.this.id
}

output "log_metric_types" {
  description = "Metric type of every log-based metric, by name (outcomes, latency, mean_confidence, low_confidence_fraction, stage_latency/<stage>, class_fraction/<class>)."
  value       = local.log_metric_types
}

output "alert_policy_ids" {
  description = "Id of every alert policy, by name (mean_confidence only when a baseline is set)."
  value       = { for name, policy in google_monitoring_alert_policy.this : name => policy.id }
}

output "notification_channel_id" {
  description = "Id of the email notification channel (null when notification_email is null)."
  value       = one(google_monitoring_notification_channel.email[*].id)
}
