"""Fixtures for the end-to-end tests of `segment local run` (run as a subprocess)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.integration.conftest import stack_model_dir

__all__ = ["stack_model_dir"]

SEGMENT = str(Path(sys.executable).with_name("segment"))
SAMPLES = sorted(
    path for path in (REPO_ROOT / "samples").iterdir() if path.suffix not in (".py", ".md")
)


@pytest.fixture
def marker_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment for a `segment` subprocess, tagged so its descendants can be found."""
    marker = f"e2e-{os.getpid()}-{abs(hash(request.node.nodeid))}"
    return {**os.environ, "SEGMENT_E2E_MARKER": marker}


def processes_with_marker(marker: str) -> list[int]:
    """Pids of live processes whose environment carries SEGMENT_E2E_MARKER=marker."""
    needle = f"SEGMENT_E2E_MARKER={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def corrupt_model_dir(stack_model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the model whose .tflite fails its sha256 check: every delivery is redelivered."""
    corrupt = tmp_path / "corrupt-model"
    shutil.copytree(stack_model_dir, corrupt)
    tflite = corrupt / "model.tflite"
    payload = bytearray(tflite.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    tflite.write_bytes(bytes(payload))
    return corrupt


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_reaches_commands() -> None:
    """The commands these tests interrupt get SIGINT as from a terminal, however the suite was
    started: a suite launched in the background (`cmd &` in a script) inherits SIGINT ignored,
    every child would too, and Python then never raises KeyboardInterrupt. A Python handler
    here becomes the default disposition in the children (exec resets handlers, not SIG_IGN)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
