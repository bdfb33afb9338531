"""Outcomes of one message, their log severities, and per-stage timings."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    MASK_WRITTEN = "mask_written"
    ERROR_RECORDED = "error_recorded"
    DUPLICATE = "duplicate"
    SUPERSEDED = "superseded"
    IGNORED = "ignored"
    OBJECT_GONE = "object_gone"
    MALFORMED_EVENT = "malformed_event"
    REJECTED = "rejected"
    TRANSIENT_ERROR = "transient_error"
    CONFIGURATION_ERROR = "configuration_error"
    INTERNAL_ERROR = "internal_error"


SEVERITY = {
    Outcome.MASK_WRITTEN: logging.INFO,
    Outcome.DUPLICATE: logging.INFO,
    Outcome.SUPERSEDED: logging.INFO,
    Outcome.IGNORED: logging.INFO,
    Outcome.OBJECT_GONE: logging.INFO,
    Outcome.ERROR_RECORDED: logging.WARNING,
    Outcome.TRANSIENT_ERROR: logging.WARNING,
    Outcome.MALFORMED_EVENT: logging.ERROR,
    Outcome.REJECTED: logging.ERROR,
    Outcome.CONFIGURATION_ERROR: logging.ERROR,
    Outcome.INTERNAL_ERROR: logging.ERROR,
}


@dataclass(frozen=True)
class Result:
    """What happened to one message. `output_uri` is the object written or found."""

    outcome: Outcome
    detail: str
    output_uri: str | None = None
    reason: str | None = None
    model_version: str | None = None


@dataclass
class Timings:
    """Wall-clock milliseconds per stage (download, decode, infer, encode, upload, ...)."""

    values: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.values[stage] = self.values.get(stage, 0.0) + (time.perf_counter() - start) * 1e3

    def rounded(self) -> dict[str, float]:
        return {stage: round(ms, 1) for stage, ms in self.values.items()}
