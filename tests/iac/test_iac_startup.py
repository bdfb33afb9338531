"""The training VM's startup script, rendered by `terraform console` as Terraform would, is
valid bash, runs the model_build contract (what it unpacks: test_iac_training_source.py), and
installs only pinned, hash-checked things: uv from its PyPI wheel, Python through that uv, the
hashed GPU lock with --require-hashes."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.iac.conftest import edit
from tools.iac.check_startup import (
    TEMPLATE,
    RenderError,
    bash_syntax,
    render,
    render_repo_script,
    supply_chain_problems,
    template_keys,
    uv_pin_problems,
)
from tools.iac.hcl import REPO_ROOT


@pytest.fixture(scope="module")
def script(terraform_bin: str) -> str:
    return render_repo_script()


def test_rendered_script_passes_bash_n(script: str):
    ok, messages = bash_syntax(script)
    assert ok, messages


def test_runs_the_model_build_contract(script: str):
    assert '"$WORKDIR/venv/bin/python" -m model_build "${args[@]}"' in script
    for fragment in (
        "  all\n",
        "  --data oxford\n",
        '  --tfds-data-dir "gs://$MODELS_BUCKET/tfds"\n',
        '  --checkpoint-dir "gs://$MODELS_BUCKET/checkpoints/$RUN_ID"\n',
        '  --out "$RUN_DIR"\n',
        '  --publish "gs://$MODELS_BUCKET"\n',
        'readonly MODELS_BUCKET="example-models"',
        "model_build/requirements-gpu.txt",
        "shutdown -h now",
        'gcloud storage ls "$DONE_MARKER"',
    ):
        assert fragment in script
    assert 'args+=(--epochs "30")' in script
    assert "--fine-tune-epochs" not in script  # empty value: flag left out


def test_optional_flags(terraform_bin: str):
    script = render_repo_script(epochs="", fine_tune_epochs="5")
    assert "--epochs" not in script.replace("--fine-tune-epochs", "")
    assert 'args+=(--fine-tune-epochs "5")' in script
    assert bash_syntax(script)[0]


def test_template_keys_are_what_the_module_passes():
    assert template_keys() == sorted(
        [
            "default_run_id",
            "epochs",
            "fine_tune_epochs",
            "models_bucket",
            "python_version",
            "source_bucket",
            "move_latest",
            "source_commit",
            "source_objects",
            "source_sha256",
            "uv_version",
            "uv_wheel_sha256",
            "uv_wheel_url",
        ]
    )


def test_a_run_publishes_without_moving_latest_unless_told(terraform_bin: str, script: str):
    # Only a promote step moves latest (the trainer cannot change what every instance loads).
    assert "args+=(--no-latest)" in script
    moving = render_repo_script(move_latest=True)
    assert "--no-latest" not in moving
    assert bash_syntax(moving)[0]


def test_exports_the_source_commit_for_the_manifest(script: str):
    # model_build records MODEL_BUILD_GIT_COMMIT in the published manifest.
    line = 'export MODEL_BUILD_GIT_COMMIT="0123456789abcdef0123456789abcdef01234567"\n'
    assert line in script
    assert script.index(line) < script.index('-m model_build "${args[@]}"')


def test_unknown_source_commit_is_not_exported(terraform_bin: str):
    script = render_repo_script(source_commit="")
    assert "export MODEL_BUILD_GIT_COMMIT" not in script
    assert bash_syntax(script)[0]


def test_missing_template_variable_fails(terraform_bin: str):
    with pytest.raises(RenderError, match="vars map does not contain key"):
        render(TEMPLATE, {"source_bucket": "x"})


def test_bash_n_catches_a_broken_template(terraform_bin: str, tmp_path: Path):
    broken = tmp_path / "broken.sh.tftpl"
    broken.write_text('#!/bin/bash\nif [[ -n "${bucket}" ]]; then\n  echo "unterminated\nfi\n')
    ok, messages = bash_syntax(render(broken, {"bucket": "b"}))
    assert not ok
    assert messages


def test_bash_variables_are_escaped_in_the_template():
    # ${VAR} for bash must be written $${VAR} in a Terraform template, else templatefile fails
    # or (worse) substitutes a template variable; the render above would fail on unknown ones.
    text = TEMPLATE.read_text()
    assert "$${args[@]}" in text
    assert "$${RUN_ID:-${default_run_id}}" in text


# --- supply chain: nothing unpinned or unchecked -----------------------------------------------


def test_installs_only_pinned_and_hash_checked_things(script: str):
    assert supply_chain_problems(script) == []
    assert "astral.sh" not in script  # no more `curl | sh` of uv's installer
    assert not re.search(r"\|\s*(ba)?sh\b", script)
    install = script[script.index('"$UV" pip sync') :].split("\n\n", maxsplit=1)[0]
    assert "--require-hashes" in install
    assert '--build-constraints "$GPU_LOCK" "$GPU_LOCK"' in install
    assert 'readonly GPU_LOCK="$WORKDIR/src/model_build/requirements-gpu.txt"' in script
    assert '"$UV" python install "3.12.16"' in script  # an exact release, not "3.12"
    for name in ("model_build", "segmentation"):
        digest = "1" if name == "model_build" else "2"
        check = f'echo "{digest * 64}  $WORKDIR/archives/{name}.zip" | sha256sum --check --strict -'
        assert check in script
        assert script.index(check) < script.index(f'unzip -q -o "$WORKDIR/archives/{name}.zip"')


_CURL_SH = 'curl -LsSf "https://astral.sh/uv/0.13.9/install.sh" | sh\n'


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("readonly GPU_LOCK=", _CURL_SH + "readonly GPU_LOCK=", "install script"),
        (
            'sha256sum --check --strict - \\\n  || { echo "gs://$SOURCE_BUCKET/training/model_build',
            'true - \\\n  || { echo "gs://$SOURCE_BUCKET/training/model_build',
            "model_build.zip is not checked against a sha256",
        ),
        (" --require-hashes \\\n", " \\\n", "without --require-hashes"),
        ('--build-constraints "$GPU_LOCK" ', "", "unpinned build requirements"),
        (
            "readonly GPU_LOCK=",
            '"$UV" pip install --python "$WORKDIR/venv/bin/python" nvitop\nreadonly GPU_LOCK=',
            "expected one package install",
        ),
        ('unzip -p "$UV_WHEEL"', 'unzip -p "$WORKDIR/uv.zip"', "uv is not taken from its wheel"),
    ],
    ids=["curl-sh", "unchecked-zip", "no-require-hashes", "no-build-constraints", "extra", "uv"],
)
def test_supply_chain_lint_flags(script: str, old: str, new: str, expected: str):
    assert old in script, old
    problems = supply_chain_problems(script.replace(old, new, 1))
    assert any(expected in p for p in problems), problems


def test_uv_wheel_is_the_locked_uv():
    # The module's default wheel: requirements/uv.txt's version and one of its hashes, the
    # Makefile's UV_VERSION; the URL names that version's manylinux x86_64 wheel.
    assert uv_pin_problems() == []


def _uv_pin_copy(tf_copy: Path) -> Path:
    (tf_copy / "requirements").mkdir()
    shutil.copy(REPO_ROOT / "requirements" / "uv.txt", tf_copy / "requirements" / "uv.txt")
    shutil.copy(REPO_ROOT / "Makefile", tf_copy / "Makefile")
    return tf_copy


@pytest.mark.parametrize(
    ("path", "old", "new", "expected"),
    [
        (
            "infra/training_vm/variables.tf",
            'default     = "d7f459fe',
            'default     = "e7f459fe',
            "uv_wheel_sha256",
        ),
        ("infra/training_vm/variables.tf", '"0.13.9"', '"0.13.8"', "uv_version '0.13.8'"),
        ("Makefile", "UV_VERSION  := 0.13.9", "UV_VERSION  := 0.14.0", "UV_VERSION"),
    ],
    ids=["sha256", "version", "makefile"],
)
def test_uv_pin_drift_is_flagged(tf_copy: Path, path: str, old: str, new: str, expected: str):
    root = _uv_pin_copy(tf_copy)
    edit(root / path, old, new)
    problems = uv_pin_problems(root)
    assert any(expected in p for p in problems), problems


FAKE_CURL = """#!/usr/bin/env bash
# curl -fsSL --retry 3 -o DEST URL: serves $FAKE_WHEEL, counts downloads.
set -euo pipefail
echo x >> "$FAKE_CURL_LOG"
cp "$FAKE_WHEEL" "$5"
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _fake_uv_wheel(path: Path, version: str = "0.13.9") -> str:
    """A wheel laid out like uv's, whose `uv` prints its version; returns its sha256."""
    with zipfile.ZipFile(path, "w") as wheel:
        info = zipfile.ZipInfo(f"uv-{version}.data/scripts/uv")
        info.external_attr = 0o755 << 16
        wheel.writestr(info, f'#!/bin/sh\necho "uv {version} (fake)"\n')
        wheel.writestr(f"uv-{version}.dist-info/METADATA", f"Name: uv\nVersion: {version}\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_uv_step(tmp_path: Path, wheel: Path, sha256: str) -> subprocess.CompletedProcess[str]:
    url = (
        "https://files.pythonhosted.org/packages/3d/aa/0123/"
        "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    )
    script = render_repo_script(uv_wheel_url=url, uv_wheel_sha256=sha256)
    step = script[script.index("readonly UV_WHEEL=") : script.index("export UV_PYTHON_INSTALL_DIR")]
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    _executable(fake_bin / "curl", FAKE_CURL)
    env = dict(
        os.environ,
        PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
        FAKE_WHEEL=str(wheel),
        FAKE_CURL_LOG=str(tmp_path / "curl.log"),
    )
    prologue = f'set -euo pipefail\nWORKDIR="{tmp_path / "opt"}"\n'
    return subprocess.run(
        ["bash", "-c", prologue + step + 'echo "installed: $("$UV" --version)"\n'],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(shutil.which("unzip") is None, reason="the VM image has unzip; this box not")
def test_uv_comes_from_the_checked_wheel(terraform_bin: str, tmp_path: Path):
    wheel = tmp_path / "uv.whl"
    sha256 = _fake_uv_wheel(wheel)
    first = _run_uv_step(tmp_path, wheel, sha256)
    assert first.returncode == 0, first.stderr
    assert "installed: uv 0.13.9 (fake)" in first.stdout
    # The next boot checks the kept wheel and downloads nothing.
    second = _run_uv_step(tmp_path, wheel, sha256)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "curl.log").read_text().count("x") == 1


@pytest.mark.skipif(shutil.which("unzip") is None, reason="the VM image has unzip; this box not")
def test_a_wheel_with_another_sha256_is_refused(terraform_bin: str, tmp_path: Path):
    wheel = tmp_path / "uv.whl"
    _fake_uv_wheel(wheel)
    result = _run_uv_step(tmp_path, wheel, "0" * 64)
    assert result.returncode != 0
    assert "does not have the pinned sha256" in result.stderr
    assert not (tmp_path / "opt" / "bin" / "uv").exists()
    assert "installed:" not in result.stdout


def test_the_module_passes_the_archive_sha256(repo_config):
    module = repo_config[REPO_ROOT / "infra" / "training_vm"]
    value = module.locals()["startup_vars"]["source_sha256"]
    assert re.fullmatch(
        r"\$\{\{for name, archive in data\.archive_file\.source : "
        r"name => archive\.output_sha256\}\}",
        value,
    ), value
