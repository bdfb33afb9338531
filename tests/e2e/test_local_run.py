"""`segment local run` end to end, as a user runs it: a subprocess on the committed samples."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from segment import contact_sheet
from tests.e2e.conftest import SAMPLES, SEGMENT, port_open, processes_with_marker

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_local_run_segments_every_sample(stack_model_dir, marker_env, tmp_path):
    out = tmp_path / "demo"
    command = [SEGMENT, "local", "run", *map(str, SAMPLES), "--out", str(out)]
    command += ["--model-uri", str(stack_model_dir), "--timeout", "120"]
    result = subprocess.run(
        command, env=marker_env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr

    for sample in SAMPLES:
        mask = out / "masks" / f"{sample.name}.png"
        error = out / "errors" / f"{sample.name}.json"
        assert mask.is_file() or error.is_file(), sample.name
    record = json.loads((out / "errors" / "not-an-image.jpg.json").read_text())
    assert record["error"]["reason"] == "not_an_image"
    assert not (out / "masks" / "not-an-image.jpg.png").exists()
    with Image.open(out / "masks" / "pet-05-large.jpg.png") as mask:
        assert mask.size == (1200, 900)

    with Image.open(out / "contact-sheet.png") as sheet:
        assert sheet.size == contact_sheet.sheet_size(len(SAMPLES))
    assert (out / "logs" / "function.log").is_file()
    table = result.stdout.split("per-image timings", 1)[1]
    assert "total_ms" in table
    for sample in SAMPLES:
        assert sample.name in table
    assert "mask_written" in table
    assert "error_recorded (not_an_image)" in table
    assert processes_with_marker(marker_env["SEGMENT_E2E_MARKER"]) == []


def _stack_state(out: Path) -> dict:
    try:
        return json.loads((out / "logs" / "stack.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait_for(condition, process: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"segment exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("signum", "moment"),
    [
        pytest.param(signal.SIGINT, "while-waiting", id="sigint-while-waiting"),
        pytest.param(signal.SIGTERM, "while-waiting", id="sigterm-while-waiting"),
        pytest.param(signal.SIGINT, "while-starting", id="sigint-while-starting"),
    ],
)
def test_an_interrupt_leaves_no_process_or_port_behind(
    corrupt_model_dir, marker_env, tmp_path, signum, moment
):
    """Ctrl-C (or SIGTERM) mid-run: everything the command started is gone when it exits.

    With a model that fails its integrity check, every delivery fails and is redelivered, so
    the run is still waiting for outputs when the signal arrives.
    """
    out = tmp_path / "run"
    command = [SEGMENT, "local", "run", str(SAMPLES[0]), "--out", str(out)]
    command += ["--model-uri", str(corrupt_model_dir), "--timeout", "300"]
    process = subprocess.Popen(
        command, env=marker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    seen: dict[int, int] = {}  # pid -> port, of every server the stack reported

    def observe() -> dict:
        state = _stack_state(out)
        for item in state.get("processes", []):
            seen[item["pid"]] = item["port"]
        return state

    try:
        if moment == "while-starting":
            _wait_for(lambda: observe().get("processes"), process, 120, "the first server")
        else:
            log = out / "logs" / "function.log"

            def failing() -> bool:
                observe()
                return log.is_file() and "configuration_error" in log.read_text(errors="replace")

            _wait_for(failing, process, 120, "a failed delivery in the function log")
        assert processes_with_marker(marker_env["SEGMENT_E2E_MARKER"])  # the check can see them
        process.send_signal(signum)
        output = process.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    observe()

    assert process.returncode == 130, output
    assert "interrupted" in output
    assert seen, "no server was started"
    assert processes_with_marker(marker_env["SEGMENT_E2E_MARKER"]) == []
    assert [port for port in seen.values() if port_open(port)] == []
    assert _stack_state(out).get("processes") == []


def test_local_up_serves_segment_upload_from_another_shell(stack_model_dir, marker_env, tmp_path):
    """`segment local up` prints the variables; `segment upload --wait` uses them; Ctrl-C stops."""
    command = [SEGMENT, "local", "up", "--model-uri", str(stack_model_dir)]
    command += ["--log-dir", str(tmp_path / "logs")]
    up = subprocess.Popen(
        command, env=marker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    exports: dict[str, str] = {}
    try:
        assert up.stdout is not None
        for line in up.stdout:
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").strip().partition("=")
                exports[key] = value
            if "Ctrl-C stops everything" in line:
                break
        assert {"STORAGE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "SEGMENT_NOTIFY_TOPIC"} <= set(
            exports
        )
        env = {**marker_env, **exports}
        out = tmp_path / "out"
        upload = [SEGMENT, "upload", str(SAMPLES[-1]), "--prefix", "shell/", "--wait"]
        upload += ["--out", str(out), "--timeout", "120"]
        result = subprocess.run(
            upload, env=env, capture_output=True, text=True, timeout=180, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert (out / "masks" / "shell" / f"{SAMPLES[-1].name}.png").is_file()
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0
    assert processes_with_marker(marker_env["SEGMENT_E2E_MARKER"]) == []
