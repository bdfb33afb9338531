"""Local servers for tests and the local stack: each on 127.0.0.1 at a free port, in its own
process group, stopped (with all its children) by that group.

    with gcs_emulator() as gcs:            # gcp-storage-emulator, in memory
        os.environ["STORAGE_EMULATOR_HOST"] = gcs.url
    with pubsub_emulator() as pubsub:      # the Cloud SDK's emulator (Java)
        os.environ["PUBSUB_EMULATOR_HOST"] = pubsub.host_port
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


class ServerStartError(RuntimeError):
    """A local server did not start listening in time; its output tail says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class ManagedProcess:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def host_port(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host_port}"

    def output_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the whole process group, then SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)


def start_process(
    name: str,
    command: Sequence[str],
    port: int,
    log_dir: Path,
    env: dict[str, str] | None = None,
    ready_timeout: float = 60.0,
) -> ManagedProcess:
    """Starts `command` in a new session (own process group); waits until `port` accepts."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            list(command),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    managed = ManagedProcess(name, process, port, log_path)
    try:
        wait_for_port(port, ready_timeout, process)
    except ServerStartError as exc:
        managed.stop()
        raise ServerStartError(f"{name}: {exc}\n--- output ---\n{managed.output_tail()}") from exc
    except BaseException:  # Ctrl-C (KeyboardInterrupt) while waiting must not orphan the group
        managed.stop()
        raise
    return managed


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(f"exited with code {process.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise ServerStartError(f"not listening on {HOST}:{port} after {timeout:.0f}s")


def _venv_script(name: str) -> str:
    """A console script of this interpreter's environment (works without an activated venv)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


@contextlib.contextmanager
def gcs_emulator(log_dir: Path) -> Iterator[ManagedProcess]:
    """gcp-storage-emulator, in memory. Clients find it through STORAGE_EMULATOR_HOST=url."""
    port = free_port()
    command = [
        _venv_script("gcp-storage-emulator"),
        "start",
        "--host",
        HOST,
        "--port",
        str(port),
        "--in-memory",
        "--quiet",
    ]
    server = start_process("gcs-emulator", command, port, log_dir)
    try:
        yield server
    finally:
        server.stop()


def pubsub_emulator_script() -> str:
    """The Cloud SDK's Pub/Sub emulator start script (under the SDK's platform/ folder)."""
    gcloud = shutil.which("gcloud")
    roots = [os.environ.get("CLOUDSDK_ROOT_DIR", ""), "/usr/lib/google-cloud-sdk"]
    if gcloud:
        roots.append(str(Path(os.path.realpath(gcloud)).parent.parent))
    for root in filter(None, roots):
        script = Path(root) / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
        if script.exists():
            return str(script)
    raise ServerStartError(
        "Pub/Sub emulator not found: install the Cloud SDK component "
        "(`gcloud components install pubsub-emulator` or the google-cloud-cli-pubsub-emulator "
        "package) or set CLOUDSDK_ROOT_DIR"
    )


@contextlib.contextmanager
def pubsub_emulator(log_dir: Path, data_dir: Path) -> Iterator[ManagedProcess]:
    """The Cloud SDK's Pub/Sub emulator. Clients find it through PUBSUB_EMULATOR_HOST=host_port."""
    port = free_port()
    command = [pubsub_emulator_script(), f"--host={HOST}", f"--port={port}", f"--dir={data_dir}"]
    server = start_process("pubsub-emulator", command, port, log_dir, ready_timeout=90.0)
    try:
        yield server
    finally:
        server.stop()
