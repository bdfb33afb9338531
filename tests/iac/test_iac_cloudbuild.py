"""cloudbuild.yaml: the vendored JSON schema, gcloud's own parser, and the lint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.iac.conftest import require_tool
from tools.iac import check_cloudbuild
from tools.iac.check_cloudbuild import CLOUDBUILD, gcloud_parse, jsonschema_check, lint, load

BROKEN_FIELD = """steps:
  - id: hello
    name: gcr.io/cloud-builders/gcloud
    argz: ['version']
"""
BROKEN_YAML = "steps: [\n"
BROKEN_SUBSTITUTION_KEY = """steps:
  - id: hello
    name: gcr.io/cloud-builders/gcloud
    args: ['version']
substitutions:
  REGION: us-central1
"""


def test_schema_accepts_cloudbuild_yaml():
    ok, output = jsonschema_check()
    assert ok, output


def test_schema_rejects_unknown_step_field(tmp_path: Path):
    path = tmp_path / "cloudbuild.yaml"
    path.write_text(BROKEN_FIELD)
    ok, output = jsonschema_check(path)
    assert not ok
    assert "argz" in output


def test_gcloud_parses_cloudbuild_yaml(gcloud_bin: str):
    ok, output = gcloud_parse()
    assert ok, output
    assert "active account" in output  # it got past parsing, to the credentials check


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BROKEN_FIELD, ".steps[0].argz: unused"),
        (BROKEN_YAML, "parsing"),
        (BROKEN_SUBSTITUTION_KEY, "does not respect format"),
    ],
    ids=["unknown-field", "bad-yaml", "bad-substitution-key"],
)
def test_gcloud_rejects_broken_file(gcloud_bin: str, tmp_path: Path, text: str, expected: str):
    path = tmp_path / "cloudbuild.yaml"
    path.write_text(text)
    ok, output = gcloud_parse(path)
    assert not ok
    assert expected in output


def test_lint_accepts_cloudbuild_yaml():
    assert lint(load()) == []


def test_cloudbuild_contract():
    doc = load()
    subs = doc["substitutions"]
    for name in ("_REGION", "_PREFIX", "_TF_STATE_BUCKET", "_TRAIN", "_APPLY"):
        assert name in subs
    assert subs["_TRAIN"] == "false"
    ids = [s["id"] for s in doc["steps"]]
    for wanted in ("test", "iac-checks", "terraform-init", "terraform-plan", "terraform-apply"):
        assert wanted in ids
    assert ids[-1] == "train"
    init = next(s for s in doc["steps"] if s["id"] == "terraform-init")
    assert '-backend-config="bucket=${_TF_STATE_BUCKET}"' in init["args"][-1]
    images = {s["name"] for s in doc["steps"]}
    assert images <= {
        "hashicorp/terraform:1.11.4",
        "python:3.12-bookworm",
        "gcr.io/cloud-builders/gcloud",
    }


def _step(doc, step_id: str) -> dict:
    return next(s for s in doc["steps"] if s["id"] == step_id)


def test_python_steps_share_the_setup_image():
    # .venv points at the setup image's /usr/local/bin/python3.12: every step using it must run
    # the same image (pinned to bookworm, whose Debian has the Java 17 runtime).
    doc = load()
    python_steps = [s for s in doc["steps"] if s["name"].startswith("python:")]
    assert {s["id"] for s in python_steps} == {"setup", "test", "iac-checks"}
    assert {s["name"] for s in python_steps} == {"python:3.12-bookworm"}


def test_test_step_installs_the_cloud_sdk_emulator_and_java():
    script = _step(load(), "test")["args"][-1]
    assert "https://packages.cloud.google.com/apt cloud-sdk main" in script
    assert "signed-by=/usr/share/keyrings/cloud.google.gpg" in script
    install = script[script.index("google-cloud-cli google-cloud-cli-pubsub-emulator") :]
    assert "openjdk-17-jre-headless" in install.splitlines()[0]
    assert "platform/pubsub-emulator/bin/cloud-pubsub-emulator" in script
    assert script.index("apt-get install") < script.index("make test")


@pytest.mark.parametrize("step_id", ["test", "iac-checks"])
def test_checking_steps_run_with_ci_set_and_gcloud_installed(step_id: str):
    step = _step(load(), step_id)
    assert "CI=true" in step.get("env", [])
    assert "apt-get install" in step["args"][-1]
    assert " google-cloud-cli" in step["args"][-1]


def test_terraform_gets_the_commit_sha():
    env = load()["options"]["env"]
    assert "TF_VAR_source_commit=$COMMIT_SHA" in env
    assert "COMMIT_SHA" in check_cloudbuild.BUILTIN_SUBSTITUTIONS


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["steps"][0].pop("id"), "step 0 has no id"),
        (lambda d: d["steps"][1].update(id=d["steps"][0]["id"]), "duplicate step id"),
        (lambda d: d["steps"][2].update(waitFor=["nope"]), "waits for unknown or later step"),
        (lambda d: d["steps"][0].update(name="ubuntu"), "not in the allow-list"),
        (lambda d: d["steps"][0].update(name="hashicorp/terraform:latest"), "allow-list"),
        (lambda d: d["steps"][0]["args"].append("${_UNDECLARED}"), "$_UNDECLARED is used"),
        (lambda d: d["substitutions"].update(_UNUSED="x"), "_UNUSED is declared but never used"),
        (lambda d: d["substitutions"].update(_TRAIN="true"), "_TRAIN must default to 'false'"),
    ],
    ids=[
        "missing-id",
        "duplicate-id",
        "bad-waitfor",
        "unknown-image",
        "unpinned-terraform",
        "undeclared-substitution",
        "unused-substitution",
        "train-by-default",
    ],
)
def test_lint_flags(change, expected: str):
    doc = load()
    change(doc)
    assert any(expected in p for p in lint(doc)), lint(doc)


def test_escaped_dollars_are_not_substitutions():
    doc = {"steps": [{"id": "a", "name": "python:3.12", "args": ["echo $$HOME $${X} $BUILD_ID"]}]}
    assert check_cloudbuild.used_substitutions(doc) == {"BUILD_ID"}


def test_cli_fails_on_a_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    broken = tmp_path / "cloudbuild.yaml"
    shutil.copy(CLOUDBUILD, broken)
    broken.write_text(broken.read_text().replace("waitFor: ['setup']", "waitFor: ['nope']", 1))
    assert check_cloudbuild.main([str(broken)]) == 1
    assert "nope" in capsys.readouterr().out


@pytest.fixture
def no_gcloud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check_cloudbuild.tools, "gcloud", lambda: None)


def test_cli_skips_the_gcloud_parse_without_gcloud_outside_ci(
    no_gcloud, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.delenv("CI", raising=False)
    assert check_cloudbuild.main([str(CLOUDBUILD)]) == 0
    assert "cloudbuild gcloud parse: skipped" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_cli_fails_without_gcloud_in_ci(
    no_gcloud, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
):
    monkeypatch.setenv("CI", value)
    assert check_cloudbuild.main([str(CLOUDBUILD)]) == 1
    out = capsys.readouterr().out
    assert "cloudbuild gcloud parse: FAILED" in out
    assert "CI is set" in out
    assert "skipped" not in out


@pytest.mark.parametrize(("value", "expected"), [("", False), ("false", False), ("0", False)])
def test_ci_flag_values(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool):
    monkeypatch.setenv("CI", value)
    assert check_cloudbuild.tools.in_ci() is expected


def test_missing_tool_fixture_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_tool("gcloud", None, "CI has the Google Cloud SDK")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="gcloud is not on PATH"):
        require_tool("gcloud", None, "CI has the Google Cloud SDK")
    assert require_tool("gcloud", "/usr/bin/gcloud", "-") == "/usr/bin/gcloud"
