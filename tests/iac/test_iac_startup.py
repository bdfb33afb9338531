"""The training VM's startup script, rendered by `terraform console` as Terraform would, is
valid bash and runs the model_build contract (what it unpacks: test_iac_training_source.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.iac.check_startup import (
    TEMPLATE,
    RenderError,
    bash_syntax,
    render,
    render_repo_script,
    template_keys,
)


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
            "source_bucket",
            "source_commit",
            "source_objects",
            "uv_version",
        ]
    )


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
