"""Fixtures of the offline IaC tests: the repository's Terraform configuration, and disposable
copies of it to break on purpose (each check must flag the breakage)."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tools.iac import tools
from tools.iac.hcl import REPO_ROOT, Module, load_config

# What a copy of the configuration needs: the root module's files and the modules.
TF_ROOT_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf")


@pytest.fixture(scope="session")
def _repo_config() -> dict[Path, Module]:
    return load_config(REPO_ROOT)


@pytest.fixture
def repo_config(_repo_config: dict[Path, Module]) -> dict[Path, Module]:
    """The parsed configuration of the repository (a deep copy: free to mutate)."""
    return copy.deepcopy(_repo_config)


@pytest.fixture
def tf_copy(tmp_path: Path) -> Path:
    """A copy of the repository's Terraform configuration (root module + infra/) in tmp_path."""
    for name in TF_ROOT_FILES:
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(REPO_ROOT / "infra", tmp_path / "infra")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    """Replace one occurrence of ``old`` (which must be there) in a file."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def write_tf(tmp_path: Path) -> Callable[[str], Path]:
    """Writes a snippet as main.tf of a fresh directory; returns the directory."""
    counter = iter(range(1000))

    def write(text: str) -> Path:
        directory = tmp_path / f"snippet{next(counter)}"
        directory.mkdir()
        (directory / "main.tf").write_text(text)
        return directory

    return write


def require_tool(name: str, path: str | None, where: str) -> str:
    """The tool's path; without it, skip locally but fail when CI is set (CI has the tool)."""
    if path is None:
        message = f"{name} is not on PATH ({where})"
        if tools.in_ci():
            pytest.fail(f"{message}; CI is set, so it is required", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def terraform_bin() -> str:
    return require_tool("terraform", tools.terraform(), "CI has terraform 1.11.4")


@pytest.fixture(scope="session")
def gcloud_bin() -> str:
    return require_tool("gcloud", tools.gcloud(), "CI has the Google Cloud SDK")
