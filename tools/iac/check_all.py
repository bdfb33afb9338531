"""All offline IaC checks in one command (the Cloud Build iac-checks step; tests/iac runs the same
checks as pytest tests, with negative cases).

    .venv/bin/python -m tools.iac.check_all

1. ``terraform fmt -check -recursive`` (plus the .example files, formatted as .tf/.tfvars);
2. schema check against google 6.50 / archive 2.7 (check_schema);
3. structural checks (check_structure);
4. checkov with .checkov.yaml (check_checkov);
5. cloudbuild.yaml and cloudbuild-deploy.yaml: JSON schema, gcloud's parser, lint
   (check_cloudbuild);
6. the training VM's startup script rendered by ``terraform console`` passes ``bash -n`` and
   installs only pinned, hash-checked things (check_startup).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tools.iac import (
    check_checkov,
    check_cloudbuild,
    check_schema,
    check_startup,
    check_structure,
    tools,
)
from tools.iac.hcl import REPO_ROOT

# Example files terraform fmt does not pick up by name, and the name they are checked under.
EXAMPLES = {"terraform.tfvars.example": "example.tfvars", "backend.tf.example": "backend.tf"}


def fmt_check(root: Path = REPO_ROOT) -> tuple[bool, str]:
    """terraform fmt -check -recursive over root, and over copies of the .example files."""
    terraform = tools.terraform()
    if terraform is None:
        return False, "terraform not on PATH"
    outputs = []
    ok = True
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", "."],
        cwd=root,
        env=tools.terraform_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    ok &= result.returncode == 0
    outputs.append(result.stdout)
    with tempfile.TemporaryDirectory(prefix="tf-fmt-") as tmp:
        for example, name in EXAMPLES.items():
            if (root / example).exists():
                shutil.copy(root / example, Path(tmp) / name)
        result = subprocess.run(
            [terraform, "fmt", "-check", "-diff", tmp],
            env=tools.terraform_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    ok &= result.returncode == 0
    outputs.append(result.stdout)
    return ok, "".join(outputs)


def _fmt() -> int:
    ok, output = fmt_check()
    print(output, end="")
    print(f"terraform fmt: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


STEPS: dict[str, Callable[[], int]] = {
    "terraform fmt": _fmt,
    "schema": lambda: check_schema.main([]),
    "structure": lambda: check_structure.main([]),
    "checkov": lambda: check_checkov.main([]),
    "cloudbuild configs": lambda: check_cloudbuild.main([]),
    "startup script": check_startup.main,
}


def main() -> int:
    failed = []
    for name, step in STEPS.items():
        print(f"== {name}", flush=True)
        if step() != 0:
            failed.append(name)
    print(f"== offline IaC checks: {len(STEPS) - len(failed)}/{len(STEPS)} passed", end="")
    print(f"; FAILED: {', '.join(failed)}" if failed else "")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
