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

  # --- log-based metrics, as data -----------------------------------------------------------------
  #
  # google_logging_metric.this makes one metric of each entry, by key (the keys of the
  # log_metric_types output):
  #   name, display_name  the metric's name, after "<prefix>/", and display name, after "<prefix>: "
  #   filter              the summary lines it reads
  #   value_extractor     the field whose values a distribution collects (null: counts the lines)
  #   labels              label -> description (or null); each label is a STRING read from the
  #                       summary-line field of its name
  #   kind                one of value_kinds: the descriptor's value_type and unit, and buckets
  log_metrics = merge(local.summary_metrics, local.stage_metrics, local.class_metrics)

  # buckets: a distribution's bucket_options, exponential or linear buckets (null: a counter).
  value_kinds = {
    # One per summary line matched.
    count = { value_type = "INT64", unit = "1", buckets = null }
    # End to end: 1 ms .. about 650 s in steps of 25% (the function times out at 300 s at most).
    total_ms = { value_type = "DISTRIBUTION", unit = "ms", buckets = { exponential = { num_finite_buckets = 60, growth_factor = 1.25, scale = 1 }, linear = null } }
    # One stage: 0.1 ms .. about 65 s in steps of 25%.
    stage_ms = { value_type = "DISTRIBUTION", unit = "ms", buckets = { exponential = { num_finite_buckets = 60, growth_factor = 1.25, scale = 0.1 }, linear = null } }
    # Shares and probabilities: 0 .. 1 in steps of 0.025.
    share = { value_type = "DISTRIBUTION", unit = "1", buckets = { exponential = null, linear = { num_finite_buckets = 40, width = 0.025, offset = 0 } } }
  }

  # What the distributions of a written mask's quality signals (quality.*) have in common.
  mask_signal = { filter = local.mask_filter, labels = { model_version = null }, kind = local.value_kinds.share }

  summary_metrics = {
    outcomes = {
      name            = "outcomes"
      display_name    = "invocations by outcome"
      description     = "Invocations of ${var.function_name} by outcome, reason and model version (one per summary line)."
      filter          = local.summary_filter
      value_extractor = null
      labels = {
        outcome       = "mask_written, error_recorded, duplicate, superseded, ignored, object_gone, malformed_event, rejected, transient_error, configuration_error, internal_error."
        reason        = "Why, for errors (e.g. not_an_image, model_integrity); empty otherwise."
        model_version = "Version of the model that served (or was loaded), empty before a load."
      }
      kind = local.value_kinds.count
    }
    latency = {
      name            = "latency_ms"
      display_name    = "end-to-end latency"
      description     = "End-to-end time of one invocation of ${var.function_name} (timings_ms.total), by outcome and model version."
      filter          = "${local.summary_filter} AND jsonPayload.timings_ms.total:*"
      value_extractor = "EXTRACT(jsonPayload.timings_ms.total)"
      labels          = { outcome = null, model_version = null }
      kind            = local.value_kinds.total_ms
    }
    mean_confidence = merge(local.mask_signal, {
      name            = "mean_confidence"
      display_name    = "mean confidence per mask"
      description     = "Mean over the pixels of a written mask of the top class probability (quality.mean_confidence), by model version; compare with the manifest's metrics.tflite.quality_signals.mean_confidence."
      value_extractor = "EXTRACT(jsonPayload.quality.mean_confidence)"
    })
    low_confidence_fraction = merge(local.mask_signal, {
      name            = "low_confidence_fraction"
      display_name    = "low-confidence share per mask"
      description     = "Share of a written mask's pixels whose top class probability is below the contract's threshold (quality.low_confidence_fraction), by model version."
      value_extractor = "EXTRACT(jsonPayload.quality.low_confidence_fraction)"
    })
  }

  stage_metrics = { for stage in local.stages : "stage_latency/${stage}" => {
    name            = "stage_latency_ms/${stage}"
    display_name    = "${stage} latency"
    description     = "Time ${var.function_name} spent in the ${stage} stage of one invocation (timings_ms.${stage})."
    filter          = "${local.summary_filter} AND jsonPayload.timings_ms.${stage}:*"
    value_extractor = "EXTRACT(jsonPayload.timings_ms.${stage})"
    labels          = { model_version = null }
    kind            = local.value_kinds.stage_ms
  } }

  class_metrics = { for name in local.classes : "class_fraction/${name}" => merge(local.mask_signal, {
    name            = "class_fraction/${name}"
    display_name    = "${name} share per mask"
    description     = "Share of a written mask's pixels (at the model's resolution) of class ${name} (quality.class_fractions.${name}), by model version."
    value_extractor = "EXTRACT(jsonPayload.quality.class_fractions.${name})"
  }) }

  user_metric      = "logging.googleapis.com/user"
  log_metric_types = { for key, metric in google_logging_metric.this : key => "${local.user_metric}/${metric.name}" }
  metric_types = {
    outcomes                = local.log_metric_types["outcomes"]
    latency                 = local.log_metric_types["latency"]
    mean_confidence         = local.log_metric_types["mean_confidence"]
    low_confidence_fraction = local.log_metric_types["low_confidence_fraction"]
  }
  stage_metric_types = { for stage in local.stages : stage => local.log_metric_types["stage_latency/${stage}"] }
  class_metric_types = { for name in local.classes : name => local.log_metric_types["class_fraction/${name}"] }

  # --- alert policies, as data --------------------------------------------------------------------
  #
  # google_monitoring_alert_policy.this makes one policy of each entry that is not null, by key
  # (the keys of the alert_policy_ids output):
  #   display_name, subject  the policy's display name and documentation subject, after "<prefix>: "
  #   severity
  #   condition              the display name of its one condition
  #   threshold              that condition's condition_threshold: filter, comparison,
  #                          threshold_value and duration
  #   aggregations           alignment_period, per_series_aligner and, where the condition reduces
  #                          across series, cross_series_reducer and group_by_fields
  #   content                the documentation, before the pointer to the runbook
  alert_policies = {
    dead_letter_backlog = {
      display_name = "dead-lettered uploads waiting"
      severity     = "ERROR"
      condition    = "${var.dead_letter_subscription} holds more than ${var.dead_letter_backlog_threshold} message(s)"
      threshold = {
        filter          = "resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${var.dead_letter_subscription}\" AND metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\""
        comparison      = "COMPARISON_GT"
        threshold_value = var.dead_letter_backlog_threshold
        duration        = "0s"
      }
      aggregations = { alignment_period = "300s", per_series_aligner = "ALIGN_MAX" }
      subject      = "uploads were dead-lettered"
      content      = "Uploads failed ${var.function_name} on every delivery attempt and wait in `${var.dead_letter_subscription}`. Find the cause in the function's error lines (outcome transient_error, configuration_error or internal_error), fix it, then replay with `segment dlq replay`."
    }
    push_backlog = {
      display_name = "upload deliveries falling behind"
      severity     = "WARNING"
      condition    = "oldest unacked message on ${var.push_subscription} older than ${var.oldest_unacked_age_threshold_seconds} s"
      threshold = {
        filter          = "resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${var.push_subscription}\" AND metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
        comparison      = "COMPARISON_GT"
        threshold_value = var.oldest_unacked_age_threshold_seconds
        duration        = "300s"
      }
      aggregations = { alignment_period = "60s", per_series_aligner = "ALIGN_MAX" }
      subject      = "uploads wait longer than ${var.oldest_unacked_age_threshold_seconds} s"
      content      = "The push subscription `${var.push_subscription}` has had an unacknowledged upload event for over ${var.oldest_unacked_age_threshold_seconds} s: the function is failing or too slow for the load (max instances, latency). Check the outcome and latency charts of the dashboard."
    }
    error_records = {
      display_name = "many uploads rejected with an error record"
      severity     = "WARNING"
      condition    = "error records above ${var.error_records_per_minute_threshold} per minute over 15 minutes"
      threshold = {
        filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"${local.metric_types.outcomes}\" AND metric.label.outcome=\"error_recorded\""
        comparison      = "COMPARISON_GT"
        threshold_value = var.error_records_per_minute_threshold / 60
        duration        = "0s"
      }
      aggregations = { alignment_period = "900s", per_series_aligner = "ALIGN_RATE", cross_series_reducer = "REDUCE_SUM" }
      subject      = "error records above ${var.error_records_per_minute_threshold}/min"
      content      = "The function wrote error records (gs://<prefix>-output/errors/...) for uploads it cannot segment faster than ${var.error_records_per_minute_threshold} per minute. The dashboard's error-record chart splits them by reason (not_an_image, image_too_large, too_many_pixels, ...): usually an uploader sending the wrong files."
    }
    failures = {
      display_name = "function failing (configuration or internal errors)"
      severity     = "ERROR"
      condition    = "configuration_error or internal_error logged"
      threshold = {
        filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"${local.metric_types.outcomes}\" AND metric.label.outcome=one_of(\"configuration_error\", \"internal_error\")"
        comparison      = "COMPARISON_GT"
        threshold_value = 0
        duration        = "0s"
      }
      aggregations = {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.outcome", "metric.label.reason"]
      }
      subject = "configuration or internal errors"
      content = "The function raised on an upload for a reason retries will not fix by themselves (a bad setting or model, missing permissions or bucket, a bug); the message is redelivered and will be dead-lettered. The reason label names it (e.g. model_integrity, storage_permission)."
    }
    latency_p95 = {
      display_name = "slow segmentation (p95 end-to-end latency)"
      severity     = "WARNING"
      condition    = "p95 of timings_ms.total (mask_written) above ${var.latency_p95_threshold_ms} ms"
      threshold = {
        filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"${local.metric_types.latency}\" AND metric.label.outcome=\"mask_written\""
        comparison      = "COMPARISON_GT"
        threshold_value = var.latency_p95_threshold_ms
        duration        = "600s"
      }
      aggregations = { alignment_period = "300s", per_series_aligner = "ALIGN_DELTA", cross_series_reducer = "REDUCE_PERCENTILE_95" }
      subject      = "p95 latency above ${var.latency_p95_threshold_ms} ms"
      content      = "The 95th percentile of the end-to-end time of invocations that wrote a mask stayed above ${var.latency_p95_threshold_ms} ms for 10 minutes. The dashboard's per-stage chart shows where the time goes (download, model_load on cold starts, decode of large images, infer, upload)."
    }
    # Only with a baseline to compare with (null otherwise: no policy).
    mean_confidence = var.mean_confidence_baseline == null ? null : {
      display_name = "mask confidence below the model's baseline"
      severity     = "WARNING"
      condition    = "hourly mean confidence below ${local.confidence_floor} (baseline ${var.mean_confidence_baseline} - margin ${var.mean_confidence_margin})"
      threshold = {
        filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"${local.metric_types.mean_confidence}\""
        comparison      = "COMPARISON_LT"
        threshold_value = local.confidence_floor
        duration        = "0s"
      }
      aggregations = {
        alignment_period     = "3600s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_MEAN"
        group_by_fields      = ["metric.label.model_version"]
      }
      subject = "masks less confident than the model's baseline"
      content = "Over the last hour the masks of one model version were on average less confident than its manifest's baseline (metrics.tflite.quality_signals.mean_confidence = ${var.mean_confidence_baseline}) by more than ${var.mean_confidence_margin}: the uploads differ from the images the model was measured on, or the served model is not the one the baseline belongs to. Look at masks with a low quality-mean-confidence metadata value."
    }
  }

  confidence_floor = var.mean_confidence_baseline == null ? null : var.mean_confidence_baseline - var.mean_confidence_margin

  notification_channels = google_monitoring_notification_channel.email[*].id
  runbook               = "docs/operations.md, \"Monitoring\", in the repository"
}

# --- log-based metrics ---------------------------------------------------------------------------

resource "google_logging_metric" "this" {
  for_each = local.log_metrics

  project          = var.project_id
  name             = "${var.prefix}/${each.value.name}"
  description      = each.value.description
  filter           = each.value.filter
  value_extractor  = each.value.value_extractor
  label_extractors = { for label in keys(each.value.labels) : label => "EXTRACT(jsonPayload.${label})" }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = each.value.kind.value_type
    unit         = each.value.kind.unit
    display_name = "${var.prefix}: ${each.value.display_name}"

    dynamic "labels" {
      for_each = each.value.labels
      content {
        key         = labels.key
        value_type  = "STRING"
        description = labels.value
      }
    }
  }

  dynamic "bucket_options" {
    for_each = each.value.kind.buckets[*]
    content {
      dynamic "exponential_buckets" {
        for_each = bucket_options.value.exponential[*]
        content {
          num_finite_buckets = exponential_buckets.value.num_finite_buckets
          growth_factor      = exponential_buckets.value.growth_factor
          scale              = exponential_buckets.value.scale
        }
      }
      dynamic "linear_buckets" {
        for_each = bucket_options.value.linear[*]
        content {
          num_finite_buckets = linear_buckets.value.num_finite_buckets
          width              = linear_buckets.value.width
          offset             = linear_buckets.value.offset
        }
      }
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

resource "google_monitoring_alert_policy" "this" {
  for_each = { for name, policy in local.alert_policies : name => policy if policy != null }

  project               = var.project_id
  display_name          = "${var.prefix}: ${each.value.display_name}"
  combiner              = "OR"
  severity              = each.value.severity
  notification_channels = local.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = each.value.condition

    condition_threshold {
      filter          = each.value.threshold.filter
      comparison      = each.value.threshold.comparison
      threshold_value = each.value.threshold.threshold_value
      duration        = each.value.threshold.duration

      aggregations {
        alignment_period     = each.value.aggregations.alignment_period
        per_series_aligner   = each.value.aggregations.per_series_aligner
        cross_series_reducer = try(each.value.aggregations.cross_series_reducer, null)
        group_by_fields      = try(each.value.aggregations.group_by_fields, null)
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "${var.prefix}: ${each.value.subject}"
    content   = "${each.value.content} Runbook: ${local.runbook}."
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
