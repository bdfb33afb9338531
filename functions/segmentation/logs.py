"""Structured logging for Cloud Logging: one JSON object per line on stdout.

Cloud Run / Cloud Functions (2nd gen) parse JSON lines on stdout into structured entries: `severity`
sets the entry's severity, `message` its text, every other key lands in `jsonPayload`, and a
`stack_trace` field is picked up by Error Reporting. Pass fields with
`log.info("...", extra={"fields": {...}})`.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

LOGGER_NAME = "segmentation"
FIELDS_ATTR = "fields"

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: severity, message, time, logger, then its fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "logger": record.name,
        }
        fields = getattr(record, FIELDS_ATTR, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                payload.setdefault(str(key), value)
        if record.exc_info and record.exc_info[0] is not None:
            payload["stack_trace"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(payload, ensure_ascii=False, default=str, separators=(",", ":"))


class StdoutHandler(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is at emit time (pytest swaps it between tests)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout  # not setStream(): that flushes the old, maybe closed, stream
        super().emit(record)


def configure(level: str = "INFO") -> logging.Logger:
    """Sends the package's records to stdout as JSON at `level`; safe to call more than once."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    logger.propagate = False
    if not any(isinstance(handler, StdoutHandler) for handler in logger.handlers):
        handler = StdoutHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    return logger


def get_logger(name: str) -> logging.Logger:
    """A child of the package logger (`segmentation.<name>`)."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


def log_fields(
    logger: logging.Logger,
    level: int,
    message: str,
    fields: dict[str, Any],
    *,
    exc_info: BaseException | None = None,
) -> None:
    """Logs `message` at `level` with structured `fields` (and a traceback for `exc_info`)."""
    logger.log(level, message, extra={FIELDS_ATTR: fields}, exc_info=exc_info)
