output "dashboard_id" {
  description = "Id (projects/P/dashboards/D) of the segmentation dashboard."
  value       = google_monitoring_dashboard.this.id
}

output "log_metric_types" {
  description = "Metric type of every log-based metric, by name (outcomes, latency, mean_confidence, low_confidence_fraction, stage_latency/<stage>, class_fraction/<class>)."
  value = merge(
    local.metric_types,
    { for stage, type in local.stage_metric_types : "stage_latency/${stage}" => type },
    { for name, type in local.class_metric_types : "class_fraction/${name}" => type },
  )
}

output "alert_policy_ids" {
  description = "Id of every alert policy, by name (mean_confidence only when a baseline is set)."
  value = merge(
    {
      dead_letter_backlog = google_monitoring_alert_policy.dead_letter_backlog.id
      push_backlog        = google_monitoring_alert_policy.push_backlog.id
      error_records       = google_monitoring_alert_policy.error_records.id
      failures            = google_monitoring_alert_policy.failures.id
      latency_p95         = google_monitoring_alert_policy.latency_p95.id
    },
    { for policy in google_monitoring_alert_policy.mean_confidence : "mean_confidence" => policy.id },
  )
}

output "notification_channel_id" {
  description = "Id of the email notification channel (null when notification_email is null)."
  value       = one(google_monitoring_notification_channel.email[*].id)
}
