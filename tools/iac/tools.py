"""Locating the external tools of the offline IaC checks, and a hermetic environment for them."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from tools.iac.hcl import REPO_ROOT

CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"


def venv_tool(name: str) -> Path | None:
    """A console script of the running interpreter's virtualenv (e.g. check-jsonschema)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def in_ci() -> bool:
    """True when the environment variable CI is set (CI=true, as CI services and the Cloud Build
    steps set it): tools CI is known to have (terraform, gcloud) are then required, a missing one
    is a failure instead of a skipped check. Empty, "0", "false" and "no" count as unset."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def terraform() -> str | None:
    return shutil.which("terraform")


def gcloud() -> str | None:
    return shutil.which("gcloud")


def checkov() -> Path | None:
    return CHECKOV if CHECKOV.exists() else None


def terraform_env() -> dict[str, str]:
    """Terraform without network: no version checkpoint, no prompts, no colour."""
    env = dict(os.environ)
    env.update({"CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"})
    return env
