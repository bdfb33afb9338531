"""infra/memory_budget with real Terraform (the module has no provider, so it plans offline):
`terraform plan` fails where the function's cold start would refuse the same settings, and the two
compute the same MiB from the same memory_budget.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from segmentation.memory import load_budget

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE = REPO_ROOT / "infra" / "memory_budget"
BUDGET_FILE = REPO_ROOT / "functions" / "segmentation" / "memory_budget.json"
DEFAULT_BYTES = 20 * 1024 * 1024

ROOT = """
variable "memory" { type = string }
variable "concurrency" { type = number }
variable "max_image_pixels" { type = number }
module "budget" {
  source           = "%(module)s"
  memory           = var.memory
  concurrency      = var.concurrency
  max_image_pixels = var.max_image_pixels
  max_image_bytes  = %(bytes)d
  budget_file      = "%(budget)s"
}
output "memory_mib" { value = module.budget.memory_mib }
output "required_mib" { value = module.budget.required_mib }
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, terraform_bin: str) -> Path:
    root = tmp_path_factory.mktemp("memory-budget")
    module = root / "memory_budget"
    shutil.copytree(MODULE, module)
    (root / "main.tf").write_text(
        ROOT % {"module": "./memory_budget", "bytes": DEFAULT_BYTES, "budget": BUDGET_FILE}
    )
    _terraform(terraform_bin, root, "init", "-input=false", "-backend=false")
    return root


def _terraform(binary: str, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "NO_COLOR": "1"}
    done = subprocess.run(
        [binary, f"-chdir={root}", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if args[0] == "init":
        assert done.returncode == 0, done.stderr
    return done


def _apply(binary: str, root: Path, memory: str, concurrency: int, pixels: int):
    return _terraform(
        binary,
        root,
        "apply",
        "-auto-approve",
        "-input=false",
        "-no-color",
        f"-var=memory={memory}",
        f"-var=concurrency={concurrency}",
        f"-var=max_image_pixels={pixels}",
    )


def _outputs(binary: str, root: Path) -> dict[str, int]:
    done = _terraform(binary, root, "output", "-json")
    return {name: value["value"] for name, value in json.loads(done.stdout).items()}


@pytest.mark.parametrize(
    ("memory", "concurrency", "pixels", "fits"),
    [
        ("1Gi", 1, 40_000_000, True),
        ("1Gi", 2, 40_000_000, False),
        ("2Gi", 2, 40_000_000, True),
        ("2048Mi", 4, 12_000_000, True),
        ("2Gi", 4, 24_000_000, False),
        ("512Mi", 1, 12_000_000, True),
        ("3G", 4, 40_000_000, False),
    ],
)
def test_plan_agrees_with_cold_start(
    workdir: Path, terraform_bin: str, memory: str, concurrency: int, pixels: int, fits: bool
) -> None:
    done = _apply(terraform_bin, workdir, memory, concurrency, pixels)
    budget = load_budget()
    needed = budget.required_mib(
        concurrency=concurrency, max_image_pixels=pixels, max_image_bytes=DEFAULT_BYTES
    )
    if fits:
        assert done.returncode == 0, done.stderr
        outputs = _outputs(terraform_bin, workdir)
        assert outputs["required_mib"] == needed
        assert outputs["memory_mib"] >= needed
    else:
        assert done.returncode != 0
        message = " ".join(done.stderr.split())
        assert f"concurrency {concurrency}" in message
        assert f"= {needed} MiB" in message
        assert "raise function_memory" in message


def test_memory_units(workdir: Path, terraform_bin: str) -> None:
    expected = {"3Gi": 3072, "3000Mi": 3000, "4G": 3814, "3500M": 3337}
    for memory, mib in expected.items():
        assert _apply(terraform_bin, workdir, memory, 1, 1).returncode == 0
        assert _outputs(terraform_bin, workdir)["memory_mib"] == mib
    done = _apply(terraform_bin, workdir, "1 GiB", 1, 1)
    assert done.returncode != 0
    assert "memory must be a whole number" in " ".join(done.stderr.split())
