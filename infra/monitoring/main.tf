# Monitoring as code: log-based metrics read from the function's summary lines, alert policies
# on them and on the upload subscriptions, and a dashboard (dashboard.json, rendered here).
#
# The function logs one JSON line per invocation on stdout (functions/segmentation/pipeline.py,
# _log_summary). Cloud Run turns it into a log entry of resource type cloud_run_revision (service
# name = the function's name): `severity` becomes the entry's severity, every other key lands in
# jsonPayload: outcome, reason, model_version, timings_ms.<stage> and timings_ms.total (ms), and
# for masks quality.mean_confidence, quality.low_confidence_fraction, quality.class_fractions.<c>.
# tests/integration/test_monitoring_log_fields.py checks every jsonPayload field read below
# against the lines the function really writes.

locals {
  # The function's per-invocation summary lines (only they carry an outcome).
  summary_filter = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${var.function_name}\" AND jsonPayload.outcome:*"
  mask_filter    = "${local.summary_filter} AND jsonPayload.outcome=\"mask_written\""

  # timings_ms keys the function measures (segment/function_logs.py STAGES): model_load only on
  # the invocation that loaded the model, the others whenever the stage ran.
  stages = ["check", "download", "model_load", "decode", "infer", "encode", "upload"]
  # quality.class_fractions keys: the model's classes in index order (segmentation/contract.py).
  classes = ["pet", "background", "border"]

  user_metric = "logging.googleapis.com/user"
  metric_types = {
    outcomes                = "${local.user_metric}/${google_logging_metric.outcomes.name}"
    latency                 = "${local.user_metric}/${google_logging_metric.latency.name}"
    mean_confidence         = "${local.user_metric}/${google_logging_metric.mean_confidence.name}"
    low_confidence_fraction = "${local.user_metric}/${google_logging_metric.low_confidence_fraction.name}"
  }
  stage_metric_types = { for stage, metric in google_logging_metric.stage_latency : stage => "${local.user_metric}/${metric.name}" }
  class_metric_types = { for name, metric in google_logging_metric.class_fraction : name => "${local.user_metric}/${metric.name}" }

  confidence_floor = var.mean_confidence_baseline == null ? null : var.mean_confidence_baseline - var.mean_confidence_margin

  notification_channels = google_monitoring_notification_channel.email[*].id
  runbook               = "docs/operations.md, \"Monitoring\", in the repository"
}

# --- log-based metrics ---------------------------------------------------------------------------

resource "google_logging_metric" "outcomes" {
  project     = var.project_id
  name        = "${var.prefix}/outcomes"
  description = "Invocations of ${var.function_name} by outcome, reason and model version (one per summary line)."
  filter      = local.summary_filter

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "${var.prefix}: invocations by outcome"

    labels {
      key         = "outcome"
      value_type  = "STRING"
      description = "mask_written, error_recorded, duplicate, superseded, ignored, object_gone, malformed_event, rejected, transient_error, configuration_error, internal_error."
    }
    labels {
      key         = "reason"
      value_type  = "STRING"
      description = "Why, for errors (e.g. not_an_image, model_integrity); empty otherwise."
    }
    labels {
      key         = "model_version"
      value_type  = "STRING"
      description = "Version of the model that served (or was loaded), empty before a load."
    }
  }

  label_extractors = {
    outcome       = "EXTRACT(jsonPayload.outcome)"
    reason        = "EXTRACT(jsonPayload.reason)"
    model_version = "EXTRACT(jsonPayload.model_version)"
  }
}

resource "google_logging_metric" "latency" {
  project         = var.project_id
  name            = "${var.prefix}/latency_ms"
  description     = "End-to-end time of one invocation of ${var.function_name} (timings_ms.total), by outcome and model version."
  filter          = "${local.summary_filter} AND jsonPayload.timings_ms.total:*"
  value_extractor = "EXTRACT(jsonPayload.timings_ms.total)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "ms"
    display_name = "${var.prefix}: end-to-end latency"

    labels {
      key        = "outcome"
      value_type = "STRING"
    }
    labels {
      key        = "model_version"
      value_type = "STRING"
    }
  }

  label_extractors = {
    outcome       = "EXTRACT(jsonPayload.outcome)"
    model_version = "EXTRACT(jsonPayload.model_version)"
  }

  # 1 ms .. about 650 s in steps of 25% (the function times out at 300 s at most).
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 60
      growth_factor      = 1.25
      scale              = 1
    }
  }
}

resource "google_logging_metric" "stage_latency" {
  for_each = toset(local.stages)

  project         = var.project_id
  name            = "${var.prefix}/stage_latency_ms/${each.key}"
  description     = "Time ${var.function_name} spent in the ${each.key} stage of one invocation (timings_ms.${each.key})."
  filter          = "${local.summary_filter} AND jsonPayload.timings_ms.${each.key}:*"
  value_extractor = "EXTRACT(jsonPayload.timings_ms.${each.key})"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "ms"
    display_name = "${var.prefix}: ${each.key} latency"

    labels {
      key        = "model_version"
      value_type = "STRING"
    }
  }

  label_extractors = {
    model_version = "EXTRACT(jsonPayload.model_version)"
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 60
      growth_factor      = 1.25
      scale              = 0.1
    }
  }
}

resource "google_logging_metric" "mean_confidence" {
  project         = var.project_id
  name            = "${var.prefix}/mean_confidence"
  description     = "Mean over the pixels of a written mask of the top class probability (quality.mean_confidence), by model version; compare with the manifest's metrics.tflite.quality_signals.mean_confidence."
  filter          = local.mask_filter
  value_extractor = "EXTRACT(jsonPayload.quality.mean_confidence)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "1"
    display_name = "${var.prefix}: mean confidence per mask"

    labels {
      key        = "model_version"
      value_type = "STRING"
    }
  }

  label_extractors = {
    model_version = "EXTRACT(jsonPayload.model_version)"
  }

  bucket_options {
    linear_buckets {
      num_finite_buckets = 40
      width              = 0.025
      offset             = 0
    }
  }
}

resource "google_logging_metric" "low_confidence_fraction" {
  project         = var.project_id
  name            = "${var.prefix}/low_confidence_fraction"
  description     = "Share of a written mask's pixels whose top class probability is below the contract's threshold (quality.low_confidence_fraction), by model version."
  filter          = local.mask_filter
  value_extractor = "EXTRACT(jsonPayload.quality.low_confidence_fraction)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "1"
    display_name = "${var.prefix}: low-confidence share per mask"

    labels {
      key        = "model_version"
      value_type = "STRING"
    }
  }

  label_extractors = {
    model_version = "EXTRACT(jsonPayload.model_version)"
  }

  bucket_options {
    linear_buckets {
      num_finite_buckets = 40
      width              = 0.025
      offset             = 0
    }
  }
}

resource "google_logging_metric" "class_fraction" {
  for_each = toset(local.classes)

  project         = var.project_id
  name            = "${var.prefix}/class_fraction/${each.key}"
  description     = "Share of a written mask's pixels (at the model's resolution) of class ${each.key} (quality.class_fractions.${each.key}), by model version."
  filter          = local.mask_filter
  value_extractor = "EXTRACT(jsonPayload.quality.class_fractions.${each.key})"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "1"
    display_name = "${var.prefix}: ${each.key} share per mask"

    labels {
      key        = "model_version"
      value_type = "STRING"
    }
  }

  label_extractors = {
    model_version = "EXTRACT(jsonPayload.model_version)"
  }

  bucket_options {
    linear_buckets {
      num_finite_buckets = 40
      width              = 0.025
      offset             = 0
    }
  }
}

# --- notification ---------------------------------------------------------------------------------

resource "google_monitoring_notification_channel" "email" {
  count = var.notification_email == null ? 0 : 1

  project      = var.project_id
  display_name = "${var.prefix}: segmentation alerts"
  type         = "email"
  labels = {
    email_address = var.notification_email
  }
  user_labels = var.labels
}

# --- alert policies -------------------------------------------------------------------------------

resource "google_monitoring_alert_policy" "dead_letter_backlog" {
  project               = var.project_id
  display_name          = "${var.prefix}: dead-lettered uploads waiting"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "${var.dead_letter_subscription} holds more than ${var.dead_letter_backlog_threshold} message(s)"

    condition_threshold {
      filter          = "resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${var.dead_letter_subscription}\" AND metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.dead_letter_backlog_threshold
      duration        = "0s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.prefix}: uploads were dead-lettered"
    content   = "Uploads failed ${var.function_name} on every delivery attempt and wait in `${var.dead_letter_subscription}`. Find the cause in the function's error lines (outcome transient_error, configuration_error or internal_error), fix it, then replay with `segment dlq replay`. Runbook: ${local.runbook}."
  }
}

resource "google_monitoring_alert_policy" "push_backlog" {
  project               = var.project_id
  display_name          = "${var.prefix}: upload deliveries falling behind"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "oldest unacked message on ${var.push_subscription} older than ${var.oldest_unacked_age_threshold_seconds} s"

    condition_threshold {
      filter          = "resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${var.push_subscription}\" AND metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.oldest_unacked_age_threshold_seconds
      duration        = "300s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.prefix}: uploads wait longer than ${var.oldest_unacked_age_threshold_seconds} s"
    content   = "The push subscription `${var.push_subscription}` has had an unacknowledged upload event for over ${var.oldest_unacked_age_threshold_seconds} s: the function is failing or too slow for the load (max instances, latency). Check the outcome and latency charts of the dashboard. Runbook: ${local.runbook}."
  }
}

resource "google_monitoring_alert_policy" "error_records" {
  project               = var.project_id
  display_name          = "${var.prefix}: many uploads rejected with an error record"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "error records above ${var.error_records_per_minute_threshold} per minute over 15 minutes"

    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"${local.metric_types.outcomes}\" AND metric.label.outcome=\"error_recorded\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.error_records_per_minute_threshold / 60
      duration        = "0s"

      aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.prefix}: error records above ${var.error_records_per_minute_threshold}/min"
    content   = "The function wrote error records (gs://<prefix>-output/errors/...) for uploads it cannot segment faster than ${var.error_records_per_minute_threshold} per minute. The dashboard's error-record chart splits them by reason (not_an_image, image_too_large, too_many_pixels, ...): usually an uploader sending the wrong files. Runbook: ${local.runbook}."
  }
}

resource "google_monitoring_alert_policy" "failures" {
  project               = var.project_id
  display_name          = "${var.prefix}: function failing (configuration or internal errors)"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "configuration_error or internal_error logged"

    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"${local.metric_types.outcomes}\" AND metric.label.outcome=one_of(\"configuration_error\", \"internal_error\")"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.outcome", "metric.label.reason"]
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.prefix}: configuration or internal errors"
    content   = "The function raised on an upload for a reason retries will not fix by themselves (a bad setting or model, missing permissions or bucket, a bug); the message is redelivered and will be dead-lettered. The reason label names it (e.g. model_integrity, storage_permission). Runbook: ${local.runbook}."
  }
}

resource "google_monitoring_alert_policy" "latency_p95" {
  project               = var.project_id
  display_name          = "${var.prefix}: slow segmentation (p95 end-to-end latency)"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "p95 of timings_ms.total (mask_written) above ${var.latency_p95_threshold_ms} ms"

    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"${local.metric_types.latency}\" AND metric.label.outcome=\"mask_written\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.latency_p95_threshold_ms
      duration        = "600s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_95"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.prefix}: p95 latency above ${var.latency_p95_threshold_ms} ms"
    content   = "The 95th percentile of the end-to-end time of invocations that wrote a mask stayed above ${var.latency_p95_threshold_ms} ms for 10 minutes. The dashboard's per-stage chart shows where the time goes (download, model_load on cold starts, decode of large images, infer, upload). Runbook: ${local.runbook}."
  }
}

resource "google_monitoring_alert_policy" "mean_confidence" {
  count = var.mean_confidence_baseline == null ? 0 : 1

  project               = var.project_id
  display_name          = "${var.prefix}: mask confidence below the model's baseline"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "hourly mean confidence below ${local.confidence_floor} (baseline ${var.mean_confidence_baseline} - margin ${var.mean_confidence_margin})"

    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"${local.metric_types.mean_confidence}\""
      comparison      = "COMPARISON_LT"
      threshold_value = local.confidence_floor
      duration        = "0s"

      aggregations {
        alignment_period     = "3600s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_MEAN"
        group_by_fields      = ["metric.label.model_version"]
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.prefix}: masks less confident than the model's baseline"
    content   = "Over the last hour the masks of one model version were on average less confident than its manifest's baseline (metrics.tflite.quality_signals.mean_confidence = ${var.mean_confidence_baseline}) by more than ${var.mean_confidence_margin}: the uploads differ from the images the model was measured on, or the served model is not the one the baseline belongs to. Look at masks with a low quality-mean-confidence metadata value. Runbook: ${local.runbook}."
  }
}

# --- dashboard ------------------------------------------------------------------------------------

resource "google_monitoring_dashboard" "this" {
  project = var.project_id
  dashboard_json = templatefile("${path.module}/dashboard.json", {
    title                    = "${var.prefix}: serverless segmentation"
    metrics                  = local.metric_types
    stages                   = local.stage_metric_types
    classes                  = local.class_metric_types
    push_subscription        = var.push_subscription
    dead_letter_subscription = var.dead_letter_subscription
    confidence_floor         = local.confidence_floor == null ? "none (no baseline set)" : tostring(local.confidence_floor)
  })
}
