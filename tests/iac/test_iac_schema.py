"""The schema check accepts the repository and catches what `terraform validate` would."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.iac.conftest import edit
from tools.iac import check_schema
from tools.iac.check_schema import SCHEMA_DIR, check_config, check_paths, load_schemas
from tools.iac.hcl import REPO_ROOT


def messages(problems) -> str:
    return "\n".join(str(p) for p in problems)


def test_repository_matches_the_provider_schemas(repo_config):
    problems = check_config(repo_config)
    assert not problems, messages(problems)


def test_backend_example_matches_too():
    backend = (REPO_ROOT / "backend.tf.example").read_text()
    assert not check_paths(REPO_ROOT, extra_files={"backend.tf": backend})


def test_schemas_are_google_6_50_and_archive_2_7():
    schemas = load_schemas()
    assert schemas["google"]["provider_version"] == "6.50.0"
    assert schemas["google"]["source_package"] == "@cdktf/provider-google@16.12.1"
    assert schemas["archive"]["provider_version"].startswith("2.7.")
    assert "archive_file" in schemas["archive"]["data_sources"]


def test_committed_schema_is_small():
    total = sum(p.stat().st_size for p in SCHEMA_DIR.glob("*.json"))
    assert total < 2 * 1024 * 1024


BUCKET = """
resource "google_storage_bucket" "b" {
  name     = "example"
  location = "US"
%s
}
"""


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        pytest.param(
            BUCKET % "  uniform_bucket_level_acess = true",
            "unsupported argument 'uniform_bucket_level_acess' "
            "(did you mean 'uniform_bucket_level_access'?)",
            id="misspelled-argument",
        ),
        pytest.param(
            'resource "google_storage_bukket" "b" {\n  name = "x"\n}\n',
            "unknown resource type 'google_storage_bukket'",
            id="unknown-resource-type",
        ),
        pytest.param(
            'resource "google_storage_bucket" "b" {\n  name = "example"\n}\n',
            "missing required argument 'location'",
            id="missing-required-argument",
        ),
        pytest.param(
            'data "google_storage_project_servce_account" "gcs" {}\n',
            "unknown data source type 'google_storage_project_servce_account'",
            id="unknown-data-source",
        ),
        pytest.param(
            'resource "random_id" "x" {\n  byte_length = 4\n}\n',
            "no schema for provider 'random'",
            id="provider-without-schema",
        ),
        pytest.param(
            BUCKET % "  versioning {\n    enabld = true\n  }",
            "versioning.enabld: unsupported argument 'enabld'",
            id="misspelled-nested-argument",
        ),
        pytest.param(
            BUCKET % "  versioning = { enabled = true }",
            "'versioning' is a block, not an argument",
            id="block-written-as-argument",
        ),
        pytest.param(
            BUCKET % '  labels {\n    a = "b"\n  }',
            "'labels' is an argument, not a block",
            id="argument-written-as-block",
        ),
        pytest.param(
            BUCKET
            % "  versioning {\n    enabled = true\n  }\n  versioning {\n    enabled = true\n  }",
            "block 'versioning' may appear only once",
            id="single-block-twice",
        ),
        pytest.param(
            BUCKET % '  lifecycle_rule {\n    action {\n      type = "Delete"\n    }\n  }',
            "lifecycle_rule: missing required block 'condition'",
            id="missing-required-block",
        ),
        pytest.param(
            BUCKET % '  dynamic "lifecycle_rules" {\n    for_each = []\n    content {}\n  }',
            "unsupported block type 'lifecycle_rules' in dynamic block",
            id="unknown-dynamic-block",
        ),
        pytest.param(
            BUCKET
            % (
                '  dynamic "lifecycle_rule" {\n    for_each = [1]\n    content {\n'
                '      action {\n        typ = "Delete"\n      }\n'
                "      condition {\n        age = 1\n      }\n    }\n  }"
            ),
            "dynamic.lifecycle_rule.content.action: missing required argument 'type'",
            id="dynamic-content-checked",
        ),
        pytest.param(
            BUCKET % "  lifecycle {\n    prevent_destroyy = true\n  }",
            "unsupported lifecycle setting 'prevent_destroyy'",
            id="lifecycle-meta-argument",
        ),
        pytest.param(
            'provider "google" {\n  projet = "p"\n}\n',
            "unsupported argument 'projet' (did you mean 'project'?)",
            id="provider-block",
        ),
        pytest.param(
            BUCKET % "  requester_pays = var.pays",
            "reference to undeclared variable var.pays",
            id="undeclared-variable",
        ),
        pytest.param(
            BUCKET % '}\noutput "u" {\n  value = google_storage_bucket.b.urll',
            "google_storage_bucket.b has no attribute 'urll'",
            id="unknown-attribute-reference",
        ),
        pytest.param(
            'output "u" {\n  value = google_storage_bucket.nope.url\n}\n',
            "reference to undeclared google_storage_bucket.nope",
            id="undeclared-resource-reference",
        ),
        pytest.param(
            'data "archive_file" "z" {\n  type = "zip"\n  source_dir = "."\n}\n',
            "missing required argument 'output_path'",
            id="archive-provider",
        ),
    ],
)
def test_flags_broken_snippet(write_tf: Callable[[str], Path], snippet: str, expected: str):
    problems = messages(check_paths(write_tf(snippet)))
    assert expected in problems


def test_accepts_computed_attribute_references(write_tf: Callable[[str], Path]):
    directory = write_tf(
        BUCKET % ""
        + 'data "archive_file" "z" {\n  type = "zip"\n  source_dir = "."\n'
        + '  output_path = "z.zip"\n}\n'
        + 'output "o" {\n  value = [google_storage_bucket.b.url, '
        + "google_storage_bucket.b.self_link, data.archive_file.z.output_base64sha256]\n}\n"
    )
    assert not check_paths(directory)


def test_module_calls_are_checked(tf_copy: Path):
    edit(tf_copy / "main.tf", "  force_destroy               = var.force_destroy\n", "")
    edit(
        tf_copy / "main.tf",
        "  prefix                      = local.prefix\n",
        "  prefixx = local.prefix\n",
    )
    problems = messages(check_paths(tf_copy))
    assert "module storage has no variable 'prefixx'" in problems
    assert "missing required module argument 'prefix'" in problems
    assert "force_destroy" not in problems  # it has a default


def test_module_output_references_are_checked(tf_copy: Path):
    edit(tf_copy / "outputs.tf", "module.storage.input_bucket", "module.storage.inputs_bucket")
    assert "module.storage has no output 'inputs_bucket'" in messages(check_paths(tf_copy))


def test_cli_exit_status(tf_copy: Path, capsys: pytest.CaptureFixture[str]):
    assert check_schema.main([str(tf_copy)]) == 0
    edit(tf_copy / "infra/messaging/main.tf", "payload_format", "payload_fromat")
    assert check_schema.main([str(tf_copy)]) == 1
    assert "payload_fromat" in capsys.readouterr().out


def test_schema_entries_are_well_formed():
    google = json.loads((SCHEMA_DIR / "google.json").read_text())
    notification = google["resources"]["google_storage_notification"]
    assert notification["attrs"]["payload_format"] == "required"
    assert notification["attrs"]["event_types"] == "optional"
    instance = google["resources"]["google_compute_instance"]
    assert instance["blocks"]["boot_disk"]["min"] == 1
    assert instance["blocks"]["scheduling"]["max"] == 1
    assert instance["blocks"]["guest_accelerator"]["max"] is None
