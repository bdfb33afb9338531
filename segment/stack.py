"""The local stack: Pub/Sub emulator, GCS emulator and the function under functions-framework.

    with LocalStack(StackOptions(model_uri=..., log_dir=...)) as stack:
        stack.endpoints      # for segment.clients
        stack.env()          # the variables another shell needs

Every server binds 127.0.0.1 on a free port and runs in its own process group; `stop()` kills
each group (TERM, then KILL) in reverse start order, with SIGINT/SIGTERM held off meanwhile, so a
second Ctrl-C cannot leave a server behind. `<log_dir>/stack.json` records pids and ports as they
start (tests use it to prove nothing survives).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from segment import clients, resources
from segment.emulators import (
    HOST,
    ManagedProcess,
    _venv_script,
    free_port,
    gcs_emulator,
    pubsub_emulator,
    start_process,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTION_SOURCE = REPO_ROOT / "functions" / "main.py"
FUNCTION_TARGET = "segment_image"
DEFAULT_MODEL_URI = str(REPO_ROOT / "models" / "default")
STATE_FILE = "stack.json"


@dataclass(frozen=True)
class StackNames:
    project: str = "local-project"
    input_bucket: str = "local-seg-input"
    output_bucket: str = "local-seg-output"
    topic: str = "seg-uploads"
    models_bucket: str = "local-seg-models"  # an empty model registry (`segment models`)


@dataclass(frozen=True)
class StackOptions:
    log_dir: Path
    model_uri: str = DEFAULT_MODEL_URI
    names: StackNames = field(default_factory=StackNames)
    policy: resources.DeliveryPolicy = field(default_factory=resources.DeliveryPolicy)
    function_env: Mapping[str, str] = field(default_factory=dict)  # extra/overriding settings


def function_command(port: int) -> list[str]:
    return [
        _venv_script("functions-framework"),
        "--source",
        str(FUNCTION_SOURCE),
        "--target",
        FUNCTION_TARGET,
        "--signature-type",
        "cloudevent",
        "--host",
        HOST,
        "--port",
        str(port),
    ]


def start_function(
    name: str, log_dir: Path, env: Mapping[str, str], *, ready_timeout: float = 60.0
) -> ManagedProcess:
    """The function under functions-framework (gunicorn), logs in `<log_dir>/<name>.log`."""
    port = free_port()
    full_env = {"PYTHONUNBUFFERED": "1", **env}
    return start_process(name, function_command(port), port, log_dir, full_env, ready_timeout)


class LocalStack:
    """Starts and stops the whole local pipeline (see the module docstring)."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.names = options.names
        self.log_dir = Path(options.log_dir)
        self.pipeline = resources.Pipeline.named(self.names.project, self.names.topic)
        self.processes: list[ManagedProcess] = []
        self._work_dir: Path | None = None
        self._servers = contextlib.ExitStack()
        self.gcs: ManagedProcess | None = None
        self.pubsub: ManagedProcess | None = None
        self.function: ManagedProcess | None = None
        self.function_logs: list[Path] = []  # every function process's log, oldest first
        self._function_env_overrides: dict[str, str] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._work_dir = Path(tempfile.mkdtemp(prefix="segment-stack-"))
        self.pubsub = self._add(pubsub_emulator(self.log_dir, self._work_dir / "pubsub"))
        self.gcs = self._add(gcs_emulator(self.log_dir))
        storage = clients.storage_client(self.endpoints)
        resources.create_buckets(
            storage, self.names.input_bucket, self.names.output_bucket, self.names.models_bucket
        )
        self.function = self._add(
            _stopped_on_exit(start_function("function", self.log_dir, self.function_env()))
        )
        self.function_logs.append(self.function.log_path)
        resources.create_pipeline(
            clients.publisher_client(self.endpoints),
            clients.subscriber_client(self.endpoints),
            self.pipeline,
            function_url=self.function.url,
            policy=self.options.policy,
        )

    def restart_function(
        self, *, env: Mapping[str, str] | None = None, kill: bool = False
    ) -> ManagedProcess:
        """Replaces the function process: starts a new one (on a new port, `env` overriding its
        settings, e.g. STORAGE_EMULATOR_HOST through a proxy), points the push subscription at
        it, then stops the old one: SIGKILL to its group when `kill` (a crash: requests in
        flight are cut), else TERM.

        The new process logs to `<log_dir>/function-<n>.log`; `function_logs` lists every log
        so far. (Restarting on the same port leaves a window of refused connections, after
        which the Pub/Sub emulator stopped pushing for over a minute.)
        """
        old = self.function
        assert old is not None, "the stack is not started"
        self._function_env_overrides.update(env or {})
        name = f"function-{len(self.function_logs)}"
        self.function = self._add(
            _stopped_on_exit(start_function(name, self.log_dir, self.function_env()))
        )
        self.function_logs.append(self.function.log_path)
        clients.subscriber_client(self.endpoints).modify_push_config(
            request={
                "subscription": self.pipeline.push_subscription,
                "push_config": {"push_endpoint": self.pipeline.push_endpoint(self.function.url)},
            }
        )
        if kill and old.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(old.process.pid, signal.SIGKILL)
            old.process.wait(10)
        old.stop()
        self.processes.remove(old)
        self._write_state()
        return self.function

    def stop(self) -> None:
        """Stops every server (reverse order); signals are held off until all are gone."""
        with _signals_deferred():
            try:
                self._servers.close()  # each server's stop(), newest first, even if one fails
            except BaseException:
                for process in self.processes:  # a stop() failed: make sure nothing survives
                    if process.process.poll() is None:
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(process.process.pid, signal.SIGKILL)
                raise
            finally:
                self.processes.clear()
                if self._work_dir is not None:
                    shutil.rmtree(self._work_dir, ignore_errors=True)
                    self._work_dir = None
                self._write_state()

    def _add(self, server: contextlib.AbstractContextManager[ManagedProcess]) -> ManagedProcess:
        process = self._servers.enter_context(server)
        self.processes.append(process)
        self._write_state()
        return process

    def _write_state(self) -> None:
        state = {
            "cli_pid": os.getpid(),
            "processes": [
                {"name": p.name, "pid": p.process.pid, "port": p.port, "log": str(p.log_path)}
                for p in self.processes
            ],
        }
        with contextlib.suppress(OSError):
            (self.log_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    # --- what clients need -------------------------------------------------------------------

    @property
    def endpoints(self) -> clients.Endpoints:
        return clients.Endpoints(
            storage_emulator=self.gcs.url if self.gcs else None,
            pubsub_emulator=self.pubsub.host_port if self.pubsub else None,
            project=self.names.project,
        )

    def function_env(self) -> dict[str, str]:
        assert self.gcs is not None and self._work_dir is not None
        return {
            "OUTPUT_BUCKET": self.names.output_bucket,
            "INPUT_BUCKET": self.names.input_bucket,
            "MODEL_URI": self.options.model_uri,
            "MODEL_CACHE_DIR": str(self._work_dir / "model-cache"),
            "STORAGE_EMULATOR_HOST": self.gcs.url,
            "GOOGLE_CLOUD_PROJECT": self.names.project,
            "LOG_LEVEL": "INFO",
            # As Terraform sets it: the push subscription's ack deadline bounds every retry.
            "REQUEST_TIMEOUT_SECONDS": str(self.options.policy.ack_deadline_s),
            **self.options.function_env,
            **self._function_env_overrides,
        }

    def env(self) -> dict[str, str]:
        """The variables a shell needs to use this stack (`segment upload`, gcloud, scripts)."""
        assert self.gcs is not None and self.pubsub is not None and self.function is not None
        return {
            "STORAGE_EMULATOR_HOST": self.gcs.url,
            "PUBSUB_EMULATOR_HOST": self.pubsub.host_port,
            "GOOGLE_CLOUD_PROJECT": self.names.project,
            "SEGMENT_INPUT_BUCKET": self.names.input_bucket,
            "SEGMENT_OUTPUT_BUCKET": self.names.output_bucket,
            "SEGMENT_NOTIFY_TOPIC": self.pipeline.topic,
            "SEGMENT_DEAD_LETTER_SUBSCRIPTION": self.pipeline.dead_letter_subscription,
            "SEGMENT_MODEL_REGISTRY": f"gs://{self.names.models_bucket}",
            "SEGMENT_FUNCTION_URL": self.function.url,
        }

    @property
    def function_log(self) -> Path:
        assert self.function is not None
        return self.function.log_path


@contextlib.contextmanager
def _stopped_on_exit(process: ManagedProcess) -> Iterator[ManagedProcess]:
    try:
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Holds SIGINT/SIGTERM/SIGHUP while servers are being stopped (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
