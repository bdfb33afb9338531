"""segment.cli conventions: --version, environment defaults declared once in the parser, usage
errors naming the variable, and one line (no traceback, a few seconds) when an endpoint is down."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from google.api_core import exceptions as api_exceptions

from segment import cli, clients, commands
from segment.emulators import HOST, free_port

SEGMENT = str(Path(sys.executable).with_name("segment"))
ENV_VARIABLES = sorted(set(cli.ENV_DEFAULTS.values()))


@pytest.fixture
def clean_env(monkeypatch):
    for variable in (*ENV_VARIABLES, "STORAGE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"):
        monkeypatch.delenv(variable, raising=False)


def test_version_is_the_installed_distribution(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    expected = importlib.metadata.version("serverless-segmentation")
    assert capsys.readouterr().out == f"segment {expected}\n"


def test_version_unknown_without_the_distribution(monkeypatch, capsys):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out == "segment unknown\n"


@pytest.mark.parametrize(
    ("argv", "dest", "option"),
    [
        (["upload", "f.png"], "bucket", "--bucket"),
        (["upload", "f.png"], "notify_topic", "--notify-topic"),
        (["upload", "f.png"], "output_bucket", "--output-bucket"),
        (["backfill", "gs://b/p/"], "output_bucket", "--output-bucket"),
        (["backfill", "gs://b/p/"], "notify_topic", "--notify-topic"),
        (["dlq", "list"], "subscription", "--subscription"),
        (["dlq", "replay"], "subscription", "--subscription"),
        (["dlq", "replay"], "topic", "--topic"),
        (["status", "gs://b/n"], "output_bucket", "--output-bucket"),
        (["models", "list"], "registry", "--registry"),
        (["models", "promote", "v1"], "registry", "--registry"),
        (["models", "rollback"], "registry", "--registry"),
        (["models", "compare"], "output_bucket", "--output-bucket"),
    ],
)
def test_env_defaults_come_from_the_parser(argv, dest, option):
    variable = cli.ENV_DEFAULTS[option]
    parser = cli.build_parser({variable: "from-env"})
    assert getattr(parser.parse_args(argv), dest) == "from-env"
    assert getattr(parser.parse_args([*argv, option, "given"]), dest) == "given"
    assert getattr(cli.build_parser({}).parse_args(argv), dest) is None


@pytest.mark.parametrize(
    "command",
    [
        ["upload"],
        ["backfill"],
        ["dlq", "list"],
        ["status"],
        ["models", "list"],
        ["models", "compare"],
    ],
)
def test_help_names_the_variables(command, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser({"SEGMENT_OUTPUT_BUCKET": "ob-now"}).parse_args([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    flags = [flag for flag in cli.ENV_DEFAULTS if f"{flag} " in text]
    assert flags
    for flag in flags:
        assert f"${cli.ENV_DEFAULTS[flag]}" in text
    if "--output-bucket" in flags:
        assert "$SEGMENT_OUTPUT_BUCKET, now ob-now" in text


def test_handlers_read_only_args_not_the_environment(clean_env, monkeypatch):
    """The variable is read when the parser is built, never again by the handler."""
    args = cli.build_parser({}).parse_args(["status", "gs://b/n"])
    monkeypatch.setenv("SEGMENT_OUTPUT_BUCKET", "too-late")
    with pytest.raises(commands.MissingOptionError):
        commands.status(args)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "gs://b/n"], "--output-bucket is required (or set SEGMENT_OUTPUT_BUCKET)"),
        (["dlq", "list"], "--subscription is required (or set SEGMENT_DEAD_LETTER_SUBSCRIPTION)"),
        (
            ["backfill", "gs://b/p/", "--output-bucket", "o"],
            "--notify-topic is required unless --dry-run (or set SEGMENT_NOTIFY_TOPIC)",
        ),
        (
            ["upload", __file__, "--bucket", "b", "--wait"],
            "--output-bucket is required with --wait (or set SEGMENT_OUTPUT_BUCKET)",
        ),
    ],
)
def test_a_missing_option_names_its_variable(clean_env, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# --- unreachable endpoints -------------------------------------------------------------------


@pytest.fixture
def dead_port() -> int:
    """A port on which nothing listens (connections are refused)."""
    return free_port()


def _one_line_within(capsys, seconds: float, started: float) -> str:
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert elapsed < seconds, elapsed
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["upload", __file__, "--bucket", "b", "--notify-topic", "projects/p/topics/t"],
        ["status", "gs://b/n", "--output-bucket", "o"],
        ["backfill", "gs://b/p/", "--output-bucket", "o", "--dry-run"],
    ],
)
def test_an_unreachable_storage_emulator_is_one_line(
    clean_env, monkeypatch, dead_port, argv, capsys
):
    url = f"http://{HOST}:{dead_port}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"{HOST}:{free_port()}")
    started = time.monotonic()

    assert cli.main(argv) == 1

    err = _one_line_within(capsys, 10, started)
    assert f"cannot reach the storage emulator at {url} (STORAGE_EMULATOR_HOST)" in err
    assert "Connection refused" in err


def test_an_unreachable_pubsub_emulator_is_one_line(clean_env, monkeypatch, dead_port, capsys):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"{HOST}:{dead_port}")
    monkeypatch.setattr(clients, "CONNECT_TIMEOUT_S", 1.0)
    started = time.monotonic()

    assert cli.main(["dlq", "list", "--subscription", "projects/p/subscriptions/s"]) == 1

    err = _one_line_within(capsys, 10, started)
    assert f"cannot reach the Pub/Sub emulator at {HOST}:{dead_port} (PUBSUB_EMULATOR_HOST)" in err


def test_segment_upload_against_a_dead_endpoint_exits_1_with_one_line(dead_port, tmp_path):
    """As a user runs it: the installed console script, in a subprocess."""
    image = tmp_path / "x.png"
    image.write_bytes(b"png")
    env = {
        "PATH": "/usr/bin:/bin",
        "STORAGE_EMULATOR_HOST": f"http://{HOST}:{dead_port}",
        "PUBSUB_EMULATOR_HOST": f"{HOST}:{dead_port}",
    }
    argv = [SEGMENT, "upload", str(image), "--bucket", "b", "--notify-topic", "projects/p/topics/t"]
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)

    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("segment: cannot reach the storage emulator at http://")
    assert "(STORAGE_EMULATOR_HOST)" in lines[0]
    assert result.stdout == ""


# --- the retry policy and the one-line messages ----------------------------------------------


def _refused() -> requests.exceptions.ConnectionError:
    try:
        requests.get(f"http://{HOST}:{free_port()}/", timeout=5)
    except requests.exceptions.ConnectionError as exc:
        return exc
    raise AssertionError("the connection was accepted")


def test_storage_retry_does_not_retry_a_refused_connection_but_retries_a_503():
    attempts = []

    def refused():
        attempts.append(1)
        raise _refused()

    with pytest.raises(requests.exceptions.ConnectionError):
        clients.storage_retry()(refused)()
    assert len(attempts) == 1

    answers = [api_exceptions.ServiceUnavailable("busy")]

    def busy_then_ok():
        if answers:
            raise answers.pop()
        return "ok"

    assert clients.storage_retry()(busy_then_ok)() == "ok"


def test_network_failure_lines():
    emulators = clients.Endpoints(storage_emulator="http://127.0.0.1:1", pubsub_emulator="h:2")
    cloud = clients.Endpoints()
    refused = _refused()

    assert clients.network_failure(refused, emulators) == (
        "cannot reach the storage emulator at http://127.0.0.1:1 (STORAGE_EMULATOR_HOST): "
        "Connection refused"
    )
    assert "Cloud Storage at https://storage.googleapis.com" in clients.network_failure(
        refused, cloud
    )
    retried = api_exceptions.RetryError("deadline", cause=refused)
    assert clients.network_failure(retried, emulators).endswith("(retried for 60s)")
    assert "the Pub/Sub emulator at h:2 (PUBSUB_EMULATOR_HOST)" in clients.network_failure(
        TimeoutError(), emulators
    )
    assert clients.network_failure(ValueError("a bug"), emulators) is None
