"""Pytest fixtures shared by tests/unit/functions and tests/contract (imported by their conftests).

The tiny models are built once with TensorFlow (tests only; functions/ never imports it) and kept
in pytest's cache directory, so later runs skip TensorFlow entirely. A cached model is reused only
when its manifest names the current builder version and its sha256 still matches.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.fakes import tiny_model


def _cached_model(request: pytest.FixtureRequest, variant: str) -> Path:
    cache = getattr(request.config, "cache", None)
    key = f"segmentation-tiny-model/v{tiny_model.BUILDER_VERSION}-{variant}"
    if cache is not None:
        directory = Path(cache.mkdir(key.replace("/", "-")))
    else:
        directory = request.getfixturevalue("tmp_path_factory").mktemp(f"tiny-{variant}")
    # Test processes running at once (pytest-xdist workers) share the cache: one builds while
    # the others wait on the lock, then find the model valid.
    with open(directory.parent / f"{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_valid(directory):
            shutil.rmtree(directory, ignore_errors=True)
            tiny_model.build_tiny_model(directory, variant)
    return directory


def _is_valid(directory: Path) -> bool:
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        data = (directory / "model.tflite").read_bytes()
    except (OSError, ValueError):
        return False
    return manifest.get("training", {}).get(
        "builder_version"
    ) == tiny_model.BUILDER_VERSION and hashlib.sha256(data).hexdigest() == manifest.get("sha256")


@pytest.fixture(scope="session")
def tiny_model_dir(request: pytest.FixtureRequest) -> Path:
    """A directory with a float32 tiny colour-classifier model.tflite + manifest.json."""
    return _cached_model(request, "float32")


@pytest.fixture(scope="session")
def tiny_int8_model_dir(request: pytest.FixtureRequest) -> Path:
    """The same model with int8 output logits (full-integer quantization)."""
    return _cached_model(request, "int8")


@pytest.fixture(scope="session")
def tiny_lopsided_model_dir(request: pytest.FixtureRequest) -> Path:
    """A float32 one that is not mirror-symmetric (tiny_model's "lopsided")."""
    return _cached_model(request, "lopsided")


@pytest.fixture
def tiny_model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the float32 model directory (for tampering tests)."""
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target
