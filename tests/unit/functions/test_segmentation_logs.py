"""Structured JSON log lines for Cloud Logging."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from segmentation import logs


def _lines(capsys: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        (logging.DEBUG, "DEBUG"),
        (logging.INFO, "INFO"),
        (logging.WARNING, "WARNING"),
        (logging.ERROR, "ERROR"),
        (logging.CRITICAL, "CRITICAL"),
    ],
)
def test_one_json_line_per_record_with_severity(level: int, severity: str, capsys: Any) -> None:
    logs.log_fields(logs.get_logger("t"), level, "hello %s", {"object": "ü/猫.png", "n": 3})
    [line] = _lines(capsys)
    assert line["severity"] == severity
    assert line["message"] == "hello %s"
    assert line["object"] == "ü/猫.png" and line["n"] == 3
    assert line["logger"] == "segmentation.t"
    assert line["time"].endswith("+00:00")


def test_fields_cannot_override_the_standard_keys(capsys: Any) -> None:
    logs.log_fields(logs.get_logger("t"), logging.INFO, "real", {"severity": "DEBUG", "x": {1}})
    [line] = _lines(capsys)
    assert line["severity"] == "INFO" and line["message"] == "real"
    assert line["x"] == "{1}"  # not JSON-serialisable: written with str()


def test_exceptions_carry_a_stack_trace(capsys: Any) -> None:
    try:
        raise ValueError("broken")
    except ValueError as exc:
        logs.log_fields(logs.get_logger("t"), logging.ERROR, "failed", {}, exc_info=exc)
    [line] = _lines(capsys)
    assert "Traceback" in line["stack_trace"] and "ValueError: broken" in line["stack_trace"]


def test_configure_is_idempotent_and_sets_the_level(capsys: Any) -> None:
    logger = logs.configure("WARNING")
    logs.configure("WARNING")
    assert sum(isinstance(h, logs.StdoutHandler) for h in logger.handlers) == 1
    assert not logger.propagate
    logs.get_logger("t").info("hidden")
    logs.get_logger("t").warning("shown")
    assert [line["message"] for line in _lines(capsys)] == ["shown"]
    logs.configure("DEBUG")


def test_plain_log_calls_work_too(capsys: Any) -> None:
    logs.get_logger("t").info("value=%d", 5)
    [line] = _lines(capsys)
    assert line["message"] == "value=5"
