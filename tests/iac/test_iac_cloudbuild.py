"""The Cloud Build configs: cloudbuild.yaml (tests, as the ci account, which cannot deploy) and
cloudbuild-deploy.yaml (plan / apply, as the deployer): the vendored JSON schema, gcloud's own
parser, the lint, the identities main.tf gives their triggers, and the apply step's guards run as
Cloud Build would run them."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.iac.conftest import require_tool
from tools.iac import check_cloudbuild
from tools.iac.check_cloudbuild import (
    CLOUDBUILD,
    CLOUDBUILD_DEPLOY,
    CONFIGS,
    gcloud_parse,
    jsonschema_check,
    lint,
    load,
    step_command,
    substitute,
)
from tools.iac.check_structure import check_cloudbuild_identities
from tools.iac.hcl import REPO_ROOT, Block

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


@pytest.mark.parametrize("path", CONFIGS.values(), ids=CONFIGS.keys())
def test_schema_accepts_the_configs(path: Path):
    ok, output = jsonschema_check(path)
    assert ok, output


def test_schema_rejects_unknown_step_field(tmp_path: Path):
    path = tmp_path / "cloudbuild.yaml"
    path.write_text(BROKEN_FIELD)
    ok, output = jsonschema_check(path)
    assert not ok
    assert "argz" in output


@pytest.mark.parametrize("path", CONFIGS.values(), ids=CONFIGS.keys())
def test_gcloud_parses_the_configs(gcloud_bin: str, path: Path):
    ok, output = gcloud_parse(path)
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


@pytest.mark.parametrize(("kind", "path"), CONFIGS.items(), ids=CONFIGS.keys())
def test_lint_accepts_the_configs(kind: str, path: Path):
    assert lint(load(path), kind) == []


def test_test_build_contract():
    doc = load(CLOUDBUILD)
    ids = [s["id"] for s in doc["steps"]]
    assert ids == ["terraform-binary", "setup", "test", "iac-checks"]
    assert "substitutions" not in doc  # nothing to deploy, nothing to choose
    images = {s["name"] for s in doc["steps"]}
    assert images <= {"hashicorp/terraform:1.11.4", "python:3.12-bookworm"}


def test_deploy_build_contract():
    doc = load(CLOUDBUILD_DEPLOY)
    subs = doc["substitutions"]
    for name in ("_REGION", "_PREFIX", "_TF_STATE_BUCKET", "_TRAIN", "_APPLY"):
        assert name in subs
    assert subs["_TRAIN"] == "false"
    ids = [s["id"] for s in doc["steps"]]
    assert ids[0] == "preflight"
    for wanted in ("terraform-init", "terraform-plan", "terraform-apply"):
        assert wanted in ids
    assert ids[-1] == "train"
    init = _step(doc, "terraform-init")
    assert '-backend-config="bucket=${_TF_STATE_BUCKET}"' in init["args"][-1]
    images = {s["name"] for s in doc["steps"]}
    assert images <= {"hashicorp/terraform:1.11.4", "gcr.io/cloud-builders/gcloud"}


def test_uv_is_installed_from_its_hashed_lock():
    script = _step(load(CLOUDBUILD), "setup")["args"][-1]
    assert "--require-hashes" in script
    assert "-r requirements/uv.txt" in script
    assert "uv==" not in script


def _step(doc, step_id: str) -> dict:
    return next(s for s in doc["steps"] if s["id"] == step_id)


def test_python_steps_share_the_setup_image():
    # .venv points at the setup image's /usr/local/bin/python3.12: every step using it must run
    # the same image (pinned to bookworm, whose Debian has the Java 17 runtime).
    doc = load(CLOUDBUILD)
    python_steps = [s for s in doc["steps"] if s["name"].startswith("python:")]
    assert {s["id"] for s in python_steps} == {"setup", "test", "iac-checks"}
    assert {s["name"] for s in python_steps} == {"python:3.12-bookworm"}


def test_test_step_installs_the_cloud_sdk_emulator_and_java():
    script = _step(load(CLOUDBUILD), "test")["args"][-1]
    assert "https://packages.cloud.google.com/apt cloud-sdk main" in script
    assert "signed-by=/usr/share/keyrings/cloud.google.gpg" in script
    install = script[script.index("google-cloud-cli google-cloud-cli-pubsub-emulator") :]
    assert "openjdk-17-jre-headless" in install.splitlines()[0]
    assert "platform/pubsub-emulator/bin/cloud-pubsub-emulator" in script
    assert script.index("apt-get install") < script.index("make test")


@pytest.mark.parametrize("step_id", ["test", "iac-checks"])
def test_checking_steps_run_with_ci_set_and_gcloud_installed(step_id: str):
    step = _step(load(CLOUDBUILD), step_id)
    assert "CI=true" in step.get("env", [])
    assert "apt-get install" in step["args"][-1]
    assert " google-cloud-cli" in step["args"][-1]


def test_terraform_gets_the_commit_sha():
    env = load(CLOUDBUILD_DEPLOY)["options"]["env"]
    assert "TF_VAR_source_commit=$COMMIT_SHA" in env
    assert "COMMIT_SHA" in check_cloudbuild.BUILTIN_SUBSTITUTIONS


def _apply_guard_removed(doc):
    step = _step(doc, "terraform-apply")
    step["args"][-1] = step["args"][-1].replace('[ -z "$COMMIT_SHA" ]', "false")


@pytest.mark.parametrize(
    ("kind", "change", "expected"),
    [
        ("test", lambda d: d["steps"][0].pop("id"), "step 0 has no id"),
        ("test", lambda d: d["steps"][1].update(id=d["steps"][0]["id"]), "duplicate step id"),
        ("test", lambda d: d["steps"][2].update(waitFor=["nope"]), "waits for unknown"),
        ("test", lambda d: d["steps"][0].update(name="ubuntu"), "not in the allow-list"),
        ("test", lambda d: d["steps"][0].update(name="hashicorp/terraform:latest"), "allow-list"),
        ("test", lambda d: d["steps"][0]["args"].append("${_UNDECLARED}"), "$_UNDECLARED is used"),
        ("deploy", lambda d: d["substitutions"].update(_UNUSED="x"), "_UNUSED is declared but"),
        ("deploy", lambda d: d["substitutions"].update(_TRAIN="true"), "_TRAIN must default"),
        ("deploy", lambda d: d["substitutions"].update(_APPLY="true"), "_APPLY must default"),
        ("deploy", _apply_guard_removed, "refuse a build without a commit"),
        (
            "deploy",
            lambda d: d["steps"].append(
                {"id": "apply2", "name": "hashicorp/terraform:1.11.4", "args": ["apply", "tfplan"]}
            ),
            "applies without a script that checks _APPLY",
        ),
        (
            "deploy",
            lambda d: _step(d, "terraform-init")["args"].append("make test"),
            "tests and package installs belong to cloudbuild.yaml",
        ),
        (
            "test",
            lambda d: d["steps"].append(
                {"id": "deploy", "name": "hashicorp/terraform:1.11.4", "args": ["apply"]}
            ),
            "deploy commands belong to cloudbuild-deploy.yaml",
        ),
        (
            "test",
            lambda d: _step(d, "test")["args"].append("gcloud compute instances start vm"),
            "the test identity cannot deploy",
        ),
        (
            "test",
            lambda d: d.update(serviceAccount="projects/p/serviceAccounts/x-deployer@p"),
            "serviceAccount is set by the build's trigger",
        ),
        (
            "test",
            lambda d: d.update(substitutions={"_APPLY": "true"}),
            "declares the deploy substitution _APPLY",
        ),
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
        "apply-by-default",
        "apply-without-commit-check",
        "bare-apply",
        "tests-in-deploy-build",
        "apply-in-test-build",
        "gcloud-in-test-build",
        "service-account-in-config",
        "deploy-substitution-in-test-build",
    ],
)
def test_lint_flags(kind: str, change, expected: str):
    doc = load(CONFIGS[kind])
    change(doc)
    assert any(expected in p for p in lint(doc, kind)), lint(doc, kind)


def test_escaped_dollars_are_not_substitutions():
    doc = {"steps": [{"id": "a", "name": "python:3.12", "args": ["echo $$HOME $${X} $BUILD_ID"]}]}
    assert check_cloudbuild.used_substitutions(doc) == {"BUILD_ID"}


def test_cli_fails_on_a_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    broken = tmp_path / "cloudbuild.yaml"
    shutil.copy(CLOUDBUILD, broken)
    broken.write_text(broken.read_text().replace("waitFor: ['setup']", "waitFor: ['nope']", 1))
    assert check_cloudbuild.main([str(broken)]) == 1
    assert "nope" in capsys.readouterr().out


def test_cli_lints_a_deploy_config_as_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    broken = tmp_path / "cloudbuild-deploy.yaml"
    shutil.copy(CLOUDBUILD_DEPLOY, broken)
    broken.write_text(broken.read_text().replace("_APPLY: 'false'", "_APPLY: 'true'", 1))
    assert check_cloudbuild.main([str(broken)]) == 1
    assert "_APPLY must default to 'false'" in capsys.readouterr().out


@pytest.fixture
def no_gcloud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check_cloudbuild.tools, "gcloud", lambda: None)


def test_cli_skips_the_gcloud_parse_without_gcloud_outside_ci(
    no_gcloud, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.delenv("CI", raising=False)
    assert check_cloudbuild.main([]) == 0
    out = capsys.readouterr().out
    assert "cloudbuild.yaml gcloud parse: skipped" in out
    assert "cloudbuild-deploy.yaml gcloud parse: skipped" in out


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_cli_fails_without_gcloud_in_ci(
    no_gcloud, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
):
    monkeypatch.setenv("CI", value)
    assert check_cloudbuild.main([str(CLOUDBUILD)]) == 1
    out = capsys.readouterr().out
    assert "cloudbuild.yaml gcloud parse: FAILED" in out
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


# --- _APPLY, the commit, and the identities ------------------------------------------------------


def test_apply_defaults_to_false():
    assert load(CLOUDBUILD_DEPLOY)["substitutions"]["_APPLY"] == "false"
    assert "_APPLY" not in (load(CLOUDBUILD).get("substitutions") or {})


FAKE_TERRAFORM = """#!/bin/sh
echo "$*" >> "$FAKE_TERRAFORM_LOG"
"""
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _run_step(tmp_path: Path, step_id: str, **values: str) -> tuple[int, str, str]:
    """(exit status, stderr, the fake terraform's calls) of a deploy build step's script, with
    Cloud Build's substitutions applied (an unset built-in such as COMMIT_SHA is empty)."""
    step = _step(load(CLOUDBUILD_DEPLOY), step_id)
    assert step["entrypoint"] == "sh" and step["args"][0] == "-c"
    defaults = dict(load(CLOUDBUILD_DEPLOY)["substitutions"], PROJECT_ID="p", BUILD_ID="b")
    script = substitute(step["args"][-1], {**defaults, **values})
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    terraform = fake_bin / "terraform"
    terraform.write_text(FAKE_TERRAFORM)
    terraform.chmod(terraform.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "terraform.log"
    log.write_text("")
    result = subprocess.run(
        ["sh", "-c", script],
        env=dict(
            os.environ,
            PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
            FAKE_TERRAFORM_LOG=str(log),
        ),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode, result.stderr, log.read_text()


@pytest.mark.parametrize("step_id", ["preflight", "terraform-apply"])
def test_apply_without_a_commit_is_refused(tmp_path: Path, step_id: str):
    # `gcloud builds submit` leaves COMMIT_SHA empty: its source is whatever tree was uploaded.
    status, stderr, calls = _run_step(tmp_path, step_id, _APPLY="true", COMMIT_SHA="")
    assert status != 0
    assert "_APPLY=true refused: this build has no commit" in stderr
    assert "apply" not in calls


def test_apply_of_a_commit_applies_the_plan(tmp_path: Path):
    status, stderr, calls = _run_step(tmp_path, "terraform-apply", _APPLY="true", COMMIT_SHA=COMMIT)
    assert status == 0, stderr
    assert calls == "apply -input=false tfplan\n"
    assert _run_step(tmp_path, "preflight", _APPLY="true", COMMIT_SHA=COMMIT)[0] == 0


@pytest.mark.parametrize("commit", ["", COMMIT])
def test_by_default_the_deploy_build_only_plans(tmp_path: Path, commit: str):
    for step_id in ("preflight", "terraform-apply"):
        status, stderr, calls = _run_step(tmp_path, step_id, COMMIT_SHA=commit)
        assert status == 0, stderr
        assert calls == ""


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"_APPLY": "yes", "COMMIT_SHA": COMMIT}, "_APPLY must be 'true' or 'false'"),
        ({"_TRAIN": "true", "COMMIT_SHA": COMMIT}, "_TRAIN=true needs _APPLY=true"),
    ],
    ids=["bad-value", "train-without-apply"],
)
def test_preflight_refuses(tmp_path: Path, values: dict[str, str], message: str):
    status, stderr, _calls = _run_step(tmp_path, "preflight", **values)
    assert status != 0
    assert message in stderr


def test_substitute_follows_cloud_build():
    assert substitute('echo "$$X ${_A} $_A $COMMIT_SHA"', {"_A": "a"}) == 'echo "$X a a "'


def test_test_build_runs_nothing_that_deploys():
    for step in load(CLOUDBUILD)["steps"]:
        command = step_command(step)
        assert not check_cloudbuild.DEPLOY_COMMANDS.search(command), step["id"]
    assert "serviceAccount" not in load(CLOUDBUILD)


def _trigger(config, name: str):
    block = config[REPO_ROOT].resource("google_cloudbuild_trigger", name)
    assert block is not None, f"main.tf has no google_cloudbuild_trigger.{name}"
    return block


def test_the_test_build_never_runs_as_the_deploy_identity(repo_config):
    test, deploy = _trigger(repo_config, "test"), _trigger(repo_config, "deploy")
    assert test.body["filename"] == CLOUDBUILD.name
    assert deploy.body["filename"] == CLOUDBUILD_DEPLOY.name
    assert test.body["service_account"] == "${google_service_account.cloudbuild_ci.id}"
    assert deploy.body["service_account"] == "${google_service_account.cloudbuild_deployer.id}"
    assert check_cloudbuild_identities(repo_config) == []


def _grant(repo_config, role: str, member: str) -> None:
    root = repo_config[REPO_ROOT]
    root.blocks.append(
        Block(
            "resource",
            ("google_storage_bucket_iam_member", "extra"),
            {"bucket": "b", "role": role, "member": member},
            root.path / "main.tf",
        )
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda c: _trigger(c, "test").body.update(
                service_account="${google_service_account.cloudbuild_deployer.id}"
            ),
            "two different service accounts",
        ),
        (
            lambda c: _grant(
                c, "roles/storage.objectAdmin", "${google_service_account.cloudbuild_ci.member}"
            ),
            "must hold nothing but roles/logging.logWriter",
        ),
        (
            lambda c: _trigger(c, "test").body.update(substitutions={"_APPLY": "true"}),
            "the test trigger must not set _APPLY",
        ),
        (
            lambda c: _trigger(c, "deploy").body.pop("approval_config"),
            "must require an approval",
        ),
    ],
    ids=["same-identity", "ci-granted-storage", "test-trigger-applies", "no-approval"],
)
def test_identity_checks_flag(repo_config, change, expected: str):
    change(repo_config)
    problems = check_cloudbuild_identities(repo_config)
    assert any(expected in p for p in problems), problems


def test_the_deploy_build_keeps_the_triggers(repo_config):
    # The deploy build applies with the variables' defaults; cloudbuild_github's is null, which
    # would delete the triggers: the deploy trigger hands its own value to the build.
    deploy = _trigger(repo_config, "deploy")
    assert deploy.body["substitutions"]["_CLOUDBUILD_GITHUB"] == (
        "${jsonencode(var.cloudbuild_github)}"
    )
    doc = load(CLOUDBUILD_DEPLOY)
    assert "TF_VAR_cloudbuild_github=${_CLOUDBUILD_GITHUB}" in doc["options"]["env"]
    assert doc["substitutions"]["_CLOUDBUILD_GITHUB"] == "null"
