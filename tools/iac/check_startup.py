"""Render the training VM's startup script exactly as Terraform does, and check its syntax.

``terraform console`` evaluates ``templatefile()`` offline in an empty directory (no provider is
needed), so the script is rendered by Terraform itself rather than by a re-implementation of its
template language. The variables are the keys of ``local.startup_vars`` in infra/training_vm
(what the module passes to templatefile), with sample values; a key the template uses but the
module does not pass makes Terraform fail, which the check reports. The rendered text then goes
through ``bash -n``.

Run ``python -m tools.iac.check_startup``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tools.iac import tools
from tools.iac.hcl import REPO_ROOT, load_config

TEMPLATE = REPO_ROOT / "infra" / "training_vm" / "startup.sh.tftpl"

# A value is a string, or a map of strings (rendered as a Terraform object).
SAMPLE_VALUES: dict[str, str | dict[str, str]] = {
    "models_bucket": "example-models",
    "source_bucket": "example-source",
    "source_objects": {
        "model_build": "training/model_build-0123abcd.zip",
        "segmentation": "training/segmentation-4567cdef.zip",
    },
    "default_run_id": "run-001",
    "epochs": "30",
    "fine_tune_epochs": "",
    "uv_version": "0.13.9",
    "source_commit": "0123456789abcdef0123456789abcdef01234567",
}


class RenderError(RuntimeError):
    pass


def template_keys(root: Path = REPO_ROOT) -> list[str]:
    """Keys of local.startup_vars in the training_vm module."""
    config = load_config(root)
    module = config.get(root / "infra" / "training_vm")
    if module is None:
        raise RenderError("no infra/training_vm module")
    variables = module.locals().get("startup_vars")
    if not isinstance(variables, dict):
        raise RenderError("infra/training_vm has no local.startup_vars object")
    return sorted(k for k in variables if k != "__is_block__")


def render(template: Path, variables: Mapping[str, str | Mapping[str, str]]) -> str:
    """templatefile(template, variables) evaluated by ``terraform console``."""
    terraform = tools.terraform()
    if terraform is None:
        raise RenderError("terraform is not on PATH")
    args = ", ".join(f"{key} = {json.dumps(value)}" for key, value in variables.items())
    expr = f"base64encode(templatefile({json.dumps(str(template))}, {{ {args} }}))"
    with tempfile.TemporaryDirectory(prefix="tf-console-") as workdir:
        result = subprocess.run(
            [terraform, "console", "-no-color"],
            input=expr + "\n",
            cwd=workdir,
            env=tools.terraform_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    out = result.stdout.strip()
    if result.returncode != 0 or not (out.startswith('"') and out.endswith('"')):
        raise RenderError(f"terraform console failed:\n{result.stdout}\n{result.stderr}")
    return base64.b64decode(json.loads(out)).decode()


def bash_syntax(script: str) -> tuple[bool, str]:
    """(ok, messages) of ``bash -n`` on a script."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh") as handle:
        handle.write(script)
        handle.flush()
        result = subprocess.run(
            ["bash", "-n", handle.name], capture_output=True, text=True, check=False, timeout=30
        )
    return result.returncode == 0, result.stderr


def render_repo_script(root: Path = REPO_ROOT, **overrides: str | dict[str, str]) -> str:
    keys = template_keys(root)
    values: dict[str, str | dict[str, str]] = {
        key: SAMPLE_VALUES.get(key, f"sample-{key}") for key in keys
    }
    values.update(overrides)
    return render(root / TEMPLATE.relative_to(REPO_ROOT), values)


def main() -> int:
    try:
        script = render_repo_script()
    except RenderError as exc:
        print(f"startup script: {exc}")
        return 1
    ok, messages = bash_syntax(script)
    print(messages, end="")
    verdict = "ok" if ok else "FAILED"
    print(f"startup script: rendered {len(script.splitlines())} lines, bash -n {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
