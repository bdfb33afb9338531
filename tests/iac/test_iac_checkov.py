"""checkov (own virtualenv, offline) finds no failure; every skip is listed with a reason."""

from __future__ import annotations

import pytest

from tools.iac import check_checkov, tools
from tools.iac.hcl import REPO_ROOT


@pytest.fixture(scope="module")
def report() -> check_checkov.Report:
    if tools.checkov() is None:
        pytest.fail(f"{tools.CHECKOV} is missing: `make setup` builds it")
    (result,) = check_checkov.run([REPO_ROOT])
    return result


def test_no_failed_checks(report: check_checkov.Report):
    failures = [f"{f['check_id']} {f['resource']}: {f['check_name']}" for f in report.failed]
    assert report.summary["failed"] == 0, failures


def test_checks_really_ran_on_our_resources(report: check_checkov.Report):
    # A config that silently disabled the scan would also report zero failures.
    assert report.summary["passed"] >= 40
    assert report.summary.get("parsing_errors", 0) == 0
    assert {"CKV_GCP_29", "CKV_GCP_78", "CKV_GCP_114"} <= report.passed_on(
        "google_storage_bucket.this"
    )
    assert {"CKV_GCP_39", "CKV_GCP_40", "CKV_GCP_30", "CKV_GCP_32"} <= report.passed_on(
        "google_compute_instance.trainer"
    )
    assert "CKV_GCP_124" in report.passed_on("google_cloudfunctions2_function.this")


def test_every_skip_has_a_reason():
    skips = check_checkov.skipped_checks()
    assert skips, "the skip list was expected to hold CKV_GCP_62"
    for check_id, reason in skips.items():
        assert len(reason) > 20, f"{check_id} is skipped without a reason in .checkov.yaml"


def test_skip_list_parser(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "framework:\n  - terraform\nskip-check:\n  - CKV_GCP_1  # because\n  - CKV2_GCP_2\n"
        "compact: true\n"
    )
    assert check_checkov.skipped_checks(config) == {"CKV_GCP_1": "because", "CKV2_GCP_2": ""}
