"""Structural checks: the repository passes them, and each one flags a configuration that breaks
the property it guards (the .tf text of a copy is edited, then re-parsed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.iac.conftest import edit
from tools.iac import check_structure
from tools.iac.check_structure import check_config
from tools.iac.hcl import first_block, load_config

MESSAGING = "infra/messaging/main.tf"
FUNCTION = "infra/function/main.tf"
VM = "infra/training_vm/main.tf"
STORAGE = "infra/storage/main.tf"

PROJECT_ROLE_FOR_FUNCTION = """
resource "google_project_iam_member" "sneaky" {
  project = var.project_id
  role    = "roles/storage.admin"
  member  = google_service_account.function.member
}
"""

ROOT_PROJECT_ROLE_FOR_FUNCTION = """
resource "google_project_iam_member" "sneaky" {
  project = var.project_id
  role    = "roles/pubsub.editor"
  member  = "serviceAccount:${module.function.service_account_email}"
}
"""

PROJECT_ROLE_FOR_TRAINER = """
resource "google_project_iam_member" "sneaky" {
  project = var.project_id
  role    = "roles/editor"
  member  = google_service_account.trainer.member
}
"""

EVENT_TRIGGER = """  event_trigger {
    event_type   = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic = "projects/p/topics/t"
    retry_policy = "RETRY_POLICY_RETRY"
  }

  service_config {"""


def test_repository_passes_every_structural_check(repo_config):
    assert check_config(repo_config) == []


def test_cli(tf_copy: Path, capsys: pytest.CaptureFixture[str]):
    assert check_structure.main([str(tf_copy)]) == 0
    edit(tf_copy / VM, '"TERMINATE"', '"MIGRATE"')
    assert check_structure.main([str(tf_copy)]) == 1
    assert "on_host_maintenance" in capsys.readouterr().out


# (file, old text, new text, expected fragment of a problem)
MUTATIONS = {
    # --- notification --------------------------------------------------------------------------
    "notification-event-types": (
        MESSAGING,
        'event_types        = ["OBJECT_FINALIZE", "OBJECT_DELETE", "OBJECT_ARCHIVE"]',
        'event_types        = ["OBJECT_FINALIZE"]',
        'event_types must be ["OBJECT_FINALIZE", "OBJECT_DELETE", "OBJECT_ARCHIVE"]',
    ),
    "notification-no-event-types": (
        MESSAGING,
        'event_types        = ["OBJECT_FINALIZE", "OBJECT_DELETE", "OBJECT_ARCHIVE"]\n',
        "",
        'event_types must be ["OBJECT_FINALIZE", "OBJECT_DELETE", "OBJECT_ARCHIVE"]',
    ),
    "notification-payload": (
        MESSAGING,
        '"JSON_API_V1"',
        '"NONE"',
        "payload_format must be JSON_API_V1",
    ),
    "notification-topic": (
        MESSAGING,
        "  topic              = google_pubsub_topic.uploads.id",
        "  topic              = google_pubsub_topic.dead_letter.id",
        "not the <prefix>-uploads topic",
    ),
    "service-agent-binding-role": (
        MESSAGING,
        'topic   = google_pubsub_topic.uploads.name\n  role    = "roles/pubsub.publisher"',
        'topic   = google_pubsub_topic.uploads.name\n  role    = "roles/pubsub.viewer"',
        "no roles/pubsub.publisher for the Cloud Storage service agent",
    ),
    "service-agent-binding-member": (
        MESSAGING,
        "${data.google_storage_project_service_account.gcs.email_address}",
        "someone@example.com",
        "no roles/pubsub.publisher for the Cloud Storage service agent",
    ),
    "notification-depends-on-binding": (
        MESSAGING,
        "  depends_on = [google_pubsub_topic_iam_member.gcs_publisher]\n",
        "",
        "depend_on the service agent's publisher binding",
    ),
    # --- delivery: retries and dead letters ----------------------------------------------------
    "no-retry-policy": (
        MESSAGING,
        "  retry_policy {\n    minimum_backoff = var.minimum_backoff\n"
        "    maximum_backoff = var.maximum_backoff\n  }\n",
        "",
        "needs a retry_policy",
    ),
    "no-dead-letter-policy": (
        MESSAGING,
        "  dead_letter_policy {\n    dead_letter_topic     = google_pubsub_topic.dead_letter.id\n"
        "    max_delivery_attempts = var.max_delivery_attempts\n  }\n",
        "",
        "needs a dead_letter_policy",
    ),
    "dead-letter-to-source-topic": (
        MESSAGING,
        "dead_letter_topic     = google_pubsub_topic.dead_letter.id",
        "dead_letter_topic     = google_pubsub_topic.uploads.id",
        "dead_letter_topic must be another google_pubsub_topic",
    ),
    "too-few-attempts-root-default": (
        "variables.tf",
        'Deliveries of an upload event before it goes to the dead-letter topic (5-100)."\n'
        "  default     = 5",
        'Deliveries of an upload event before it goes to the dead-letter topic (5-100)."\n'
        "  default     = 3",
        "max_delivery_attempts must be a number >= 5 (got 3)",
    ),
    "dead-letter-topic-without-subscription": (
        MESSAGING,
        "  topic                      = google_pubsub_topic.dead_letter.id",
        "  topic                      = google_pubsub_topic.uploads.id",
        "the dead-letter topic has no subscription",
    ),
    "no-dlq-publisher-for-pubsub-agent": (
        MESSAGING,
        'topic   = google_pubsub_topic.dead_letter.name\n  role    = "roles/pubsub.publisher"',
        'topic   = google_pubsub_topic.dead_letter.name\n  role    = "roles/pubsub.viewer"',
        "needs publisher on the dead-letter topic",
    ),
    "no-subscriber-for-pubsub-agent": (
        MESSAGING,
        'role         = "roles/pubsub.subscriber"',
        'role         = "roles/pubsub.viewer"',
        "needs subscriber on the source subscription",
    ),
    "push-without-oidc": (
        MESSAGING,
        "    oidc_token {\n      service_account_email = var.push_service_account_email\n"
        "      audience              = local.function_url\n    }\n",
        "",
        "needs an oidc_token",
    ),
    "push-subscription-on-another-topic": (
        MESSAGING,
        '  name                       = "${var.prefix}-uploads-push"\n'
        "  topic                      = google_pubsub_topic.uploads.id",
        '  name                       = "${var.prefix}-uploads-push"\n'
        "  topic                      = google_pubsub_topic.dead_letter.id",
        "topic must be the uploads topic, the one the storage notification publishes to",
    ),
    "push-endpoint-elsewhere": (
        MESSAGING,
        'push_endpoint = "${local.function_url}/${google_pubsub_topic.uploads.id}"',
        'push_endpoint = "https://example.com/${google_pubsub_topic.uploads.id}"',
        "push_endpoint must be the function's service URI",
    ),
    "push-endpoint-behind-a-literal-prefix": (
        MESSAGING,
        'push_endpoint = "${local.function_url}/${google_pubsub_topic.uploads.id}"',
        'push_endpoint = "https://example.com/?to=${local.function_url}"',
        "push_endpoint must be the function's service URI",
    ),
    "oidc-audience-elsewhere": (
        MESSAGING,
        "      audience              = local.function_url",
        '      audience              = "https://example.com"',
        "the oidc_token audience must be the function's service URI",
    ),
    "oidc-audience-missing": (
        MESSAGING,
        "      audience              = local.function_url\n",
        "",
        "the oidc_token audience must be the function's service URI",
    ),
    "root-passes-another-url": (
        "main.tf",
        "  function_url               = module.function.function_url",
        '  function_url               = "https://example.com"',
        "push_endpoint must be the function's service URI",
    ),
    "function-output-not-the-uri": (
        "infra/function/outputs.tf",
        "value       = google_cloudfunctions2_function.this.service_config[0].uri",
        "value       = google_cloudfunctions2_function.this.name",
        "the oidc_token audience must be the function's service URI",
    ),
    "event-trigger-instead-of-push": (
        FUNCTION,
        "  service_config {",
        EVENT_TRIGGER,
        "has an event_trigger",
    ),
    # --- function ------------------------------------------------------------------------------
    "function-ingress": (
        FUNCTION,
        '"ALLOW_INTERNAL_ONLY"',
        '"ALLOW_ALL"',
        "ingress_settings must be ALLOW_INTERNAL_ONLY",
    ),
    "function-runtime": (
        "infra/function/variables.tf",
        'default     = "python312"',
        'default     = "python311"',
        "runtime must be python312",
    ),
    "function-env-contract": (
        "main.tf",
        "    NUM_THREADS           = tostring(var.num_threads)\n",
        "",
        "environment variables missing: NUM_THREADS",
    ),
    "function-env-contract-new-setting": (
        "main.tf",
        "    CANARY_PERCENT        = tostring(var.canary_percent)\n",
        "",
        "environment variables missing: CANARY_PERCENT",
    ),
    "function-project-role-in-module": (
        FUNCTION,
        "# --- function ---",
        PROJECT_ROLE_FOR_FUNCTION + "\n# --- function ---",
        "function service account must not hold project-wide role roles/storage.admin",
    ),
    "function-project-role-from-root": (
        "main.tf",
        'module "storage" {',
        ROOT_PROJECT_ROLE_FOR_FUNCTION + '\nmodule "storage" {',
        "function service account must not hold project-wide role roles/pubsub.editor",
    ),
    "function-default-service-account": (
        FUNCTION,
        "service_account_email            = google_service_account.function.email",
        'service_account_email            = "123-compute@developer.gserviceaccount.com"',
        "must run as a dedicated google_service_account",
    ),
    "function-models-bucket-role": (
        FUNCTION,
        'bucket = var.models_bucket\n  role   = "roles/storage.objectViewer"',
        'bucket = var.models_bucket\n  role   = "roles/storage.legacyBucketReader"',
        "needs roles/storage.objectViewer on models_bucket",
    ),
    # --- training VM ---------------------------------------------------------------------------
    "vm-no-gpu": (
        VM,
        "  guest_accelerator {\n    type  = var.gpu_type\n    count = var.gpu_count\n  }\n",
        "",
        "needs a guest_accelerator",
    ),
    "vm-migrate": (VM, '"TERMINATE"', '"MIGRATE"', 'on_host_maintenance must be "TERMINATE"'),
    "vm-external-ip": (
        VM,
        "    subnetwork = google_compute_subnetwork.training.id\n",
        "    subnetwork = google_compute_subnetwork.training.id\n    access_config {}\n",
        "must not have an external IP",
    ),
    "vm-not-shielded": (
        VM,
        "    enable_vtpm                 = true",
        "    enable_vtpm                 = false",
        "needs shielded_instance_config",
    ),
    "vm-no-driver": (
        VM,
        'install-nvidia-driver  = "True"',
        'install-nvidia-driver  = "False"',
        "install-nvidia-driver",
    ),
    "vm-project-role": (
        VM,
        "# --- network",
        PROJECT_ROLE_FOR_TRAINER + "\n# --- network",
        "training VM service account must not hold project-wide role roles/editor",
    ),
    # --- buckets, provider, variables ----------------------------------------------------------
    "bucket-public-access": (
        STORAGE,
        'public_access_prevention    = "enforced"',
        'public_access_prevention    = "inherited"',
        'public_access_prevention must be "enforced"',
    ),
    "bucket-acls": (
        STORAGE,
        "uniform_bucket_level_access = true",
        "uniform_bucket_level_access = false",
        "uniform_bucket_level_access must be true",
    ),
    "bucket-force-destroy-default": (
        "variables.tf",
        'Keep false outside throwaway environments."\n  default     = false',
        'Keep false outside throwaway environments."\n  default     = true',
        "force_destroy must default to false",
    ),
    "bucket-no-versioning": (
        STORAGE,
        "  versioning {\n    enabled = true\n  }\n",
        "",
        "versioning must be enabled",
    ),
    "provider-pin": (
        "versions.tf",
        'version = "~> 6.50"',
        'version = ">= 5.0"',
        'pin the google provider to "~> 6.50"',
    ),
    "variable-without-description": (
        "variables.tf",
        '  description = "Google Cloud project to deploy into."\n',
        "",
        "var.project_id: needs a description",
    ),
    "variable-without-type": (
        "infra/storage/variables.tf",
        'variable "labels" {\n  type        = map(string)\n',
        'variable "labels" {\n',
        "var.labels: needs a type",
    ),
    "root-variable-without-default": (
        "variables.tf",
        '  default     = "us-central1"\n',
        "",
        "var.region: root variables need a (safe) default",
    ),
}


@pytest.mark.parametrize(("file", "old", "new", "expected"), MUTATIONS.values(), ids=MUTATIONS)
def test_check_flags_the_mutation(tf_copy: Path, file: str, old: str, new: str, expected: str):
    assert check_config(load_config(tf_copy)) == [], "the unmodified copy must pass"
    edit(tf_copy / file, old, new)
    problems = check_config(load_config(tf_copy))
    assert any(expected in p for p in problems), problems


def test_dict_mutation_scheduling_removed(repo_config):
    instance = next(b for m in repo_config.values() for b in m.resources("google_compute_instance"))
    del instance.body["scheduling"]
    assert any("on_host_maintenance" in p for p in check_config(repo_config))


def test_dict_mutation_dynamic_access_config(repo_config):
    instance = next(b for m in repo_config.values() for b in m.resources("google_compute_instance"))
    nic = first_block(instance.body, "network_interface")
    nic["dynamic"] = [
        {"access_config": {"for_each": "${[1]}", "content": [{"__is_block__": True}]}}
    ]
    assert any("external IP" in p for p in check_config(repo_config))


def test_dict_mutation_notification_removed(repo_config):
    for module in repo_config.values():
        module.blocks = [
            b for b in module.blocks if b.labels[:1] != ("google_storage_notification",)
        ]
    assert "no google_storage_notification" in " ".join(check_config(repo_config))


# The delivering subscription moved to a topic of its own: a complete, otherwise valid topic that
# nothing publishes uploads to. Exactly that is reported.
OTHER_TOPIC = """resource "google_pubsub_topic" "other" {
  project = var.project_id
  name    = "${var.prefix}-other"
}

"""


def test_push_subscription_on_a_topic_the_notification_does_not_publish_to(tf_copy: Path):
    messaging = tf_copy / MESSAGING
    edit(
        messaging,
        'resource "google_pubsub_topic" "dead_letter" {',
        OTHER_TOPIC.rstrip("\n") + '\n\nresource "google_pubsub_topic" "dead_letter" {',
    )
    assert check_config(load_config(tf_copy)) == []
    edit(
        messaging,
        "  topic                      = google_pubsub_topic.uploads.id",
        "  topic                      = google_pubsub_topic.other.id",
    )
    problems = check_config(load_config(tf_copy))
    assert len(problems) == 1, problems
    assert "uploads_push: topic must be the uploads topic" in problems[0]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            'push_endpoint = "${local.function_url}/${google_pubsub_topic.uploads.id}"',
            'push_endpoint = "https://example.com/${google_pubsub_topic.uploads.id}"',
        ),
        ("      audience              = local.function_url", '      audience = "https://x.test"'),
    ],
    ids=["endpoint", "audience"],
)
def test_function_uri_problems_come_alone(tf_copy: Path, old: str, new: str):
    edit(tf_copy / MESSAGING, old, new)
    problems = check_config(load_config(tf_copy))
    assert len(problems) == 1, problems
    assert "must be the function's service URI" in problems[0]


def test_points_at_function_uri_resolves_through_the_root(repo_config):
    messaging = next(m for p, m in repo_config.items() if p.name == "messaging")
    function = next(m for p, m in repo_config.items() if p.name == "function")
    assert check_structure.points_at_function_uri(repo_config, messaging, "${var.function_url}")
    assert check_structure.points_at_function_uri(
        repo_config, function, "${google_cloudfunctions2_function.this.url}"
    )
    for value in (
        "https://example.com",
        "${var.prefix}",
        "${google_pubsub_topic.uploads.id}",
        None,
    ):
        assert not check_structure.points_at_function_uri(repo_config, messaging, value)
