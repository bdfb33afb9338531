"""terraform fmt -check -recursive (offline; no provider needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tools.iac import tools
from tools.iac.check_all import fmt_check
from tools.iac.hcl import REPO_ROOT


def test_repository_is_formatted(terraform_bin: str):
    ok, diff = fmt_check(REPO_ROOT)
    assert ok, diff


def test_fmt_check_fails_on_unformatted_file(terraform_bin: str, tmp_path: Path):
    (tmp_path / "main.tf").write_text('resource "x" "y" {\nname="a"\n  location =  "b"\n}\n')
    ok, diff = fmt_check(tmp_path)
    assert not ok
    assert "name" in diff


def test_fmt_check_covers_the_example_files(terraform_bin: str, tmp_path: Path):
    (tmp_path / "terraform.tfvars.example").write_text('project_id="p"\nregion  =  "r"\n')
    ok, _ = fmt_check(tmp_path)
    assert not ok


def test_terraform_runs_offline(terraform_bin: str):
    # terraform is pinned to 1.11.4 in CI and Cloud Build; the checks must not phone home.
    env = tools.terraform_env()
    assert env["CHECKPOINT_DISABLE"] == "1"
    result = subprocess.run(
        [terraform_bin, "version"], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.startswith("Terraform v1.")
