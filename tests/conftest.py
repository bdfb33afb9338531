"""Shared fixtures: real local emulators and a real model built by model_build."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from segment.emulators import ManagedProcess, gcs_emulator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "default"  # the committed default model
# A test's one-line summary for the end of the run (`record_property(SUMMARY_PROPERTY, line)`):
# unlike a print, it reaches the terminal from pytest-xdist's workers too.
SUMMARY_PROPERTY = "summary"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = [
        str(value)
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        for name, value in getattr(report, "user_properties", [])
        if name == SUMMARY_PROPERTY and report.when == "call"
    ]
    if lines:
        terminalreporter.section("summaries")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """A real gcp-storage-emulator for the whole session (in memory, own process group)."""
    with gcs_emulator(tmp_path_factory.mktemp("gcs-logs")) as server:
        yield server


@pytest.fixture
def gcs(gcs_server: ManagedProcess, monkeypatch: pytest.MonkeyPatch):
    """A google.cloud.storage client talking to the emulator (STORAGE_EMULATOR_HOST set)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    return storage.Client(project="test-project", credentials=AnonymousCredentials())


@pytest.fixture
def bucket(gcs, request: pytest.FixtureRequest):
    """A fresh, empty bucket on the emulator, unique to the test."""
    name = f"test-{abs(hash(request.node.nodeid)) % 10**10}-{os.getpid()}"
    return gcs.create_bucket(name)


MODEL_RUN_ARGS = (
    "--data",
    "synthetic",
    "--synthetic-train-size",
    "48",
    "--synthetic-test-size",
    "12",
    "--epochs",
    "2",
    "--steps-per-epoch",
    "2",
    "--batch-size",
    "8",
    "--bn-recalibration-steps",
    "3",
    "--representative-count",
    "8",
    "--latency-samples",
    "5",
)


@pytest.fixture(scope="session")
def model_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real, tiny run of `python -m model_build all` (train, 4 variants, evaluation).

    Built once per session (about two minutes on two cores); `<dir>/model` holds the chosen
    model.tflite + manifest.json, exactly as the function loads it.
    """
    out = tmp_path_factory.mktemp("model-run")
    result = subprocess.run(
        [sys.executable, "-m", "model_build", "all", *MODEL_RUN_ARGS, "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"model_build all failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return out


@pytest.fixture(scope="session")
def tflite_model_dir(model_run_dir: Path) -> Path:
    """A directory with a real model.tflite + manifest.json produced by model_build."""
    return model_run_dir / "model"


# Real Oxford-IIIT Pet photos, kept beside the repository (never committed into it).
REAL_SUBSET = REPO_ROOT.parent / "shared" / "data" / "oxford-iiit-pet-subset"


@pytest.fixture(scope="session")
def real_subset() -> Path:
    """The real photo subset in the Oxford layout; tests that need it skip where it is absent."""
    if not (REAL_SUBSET / "images").is_dir():
        pytest.skip(f"real photo subset not present at {REAL_SUBSET}")
    return REAL_SUBSET
