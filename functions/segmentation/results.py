"""Outcomes of one message, their log severities, per-stage timings, a mask's quality signals and
the track (stable or canary) of the model that made it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
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
    OUTPUTS_DELETED = "outputs_deleted"
    MALFORMED_EVENT = "malformed_event"
    REJECTED = "rejected"
    TRANSIENT_ERROR = "transient_error"
    CONFIGURATION_ERROR = "configuration_error"
    INTERNAL_ERROR = "internal_error"


class Track(StrEnum):
    """Which model made a mask: the stable one (`MODEL_URI`, following `latest`) or the canary
    (`CANARY_MODEL_VERSION`, for CANARY_PERCENT of uploads). Mask metadata `model-track`, log
    field `model_track`."""

    STABLE = "stable"
    CANARY = "canary"


SEVERITY = {
    Outcome.MASK_WRITTEN: logging.INFO,
    Outcome.DUPLICATE: logging.INFO,
    Outcome.SUPERSEDED: logging.INFO,
    Outcome.IGNORED: logging.INFO,
    Outcome.OBJECT_GONE: logging.INFO,
    Outcome.OUTPUTS_DELETED: logging.INFO,
    Outcome.ERROR_RECORDED: logging.WARNING,
    Outcome.TRANSIENT_ERROR: logging.WARNING,
    Outcome.MALFORMED_EVENT: logging.ERROR,
    Outcome.REJECTED: logging.ERROR,
    Outcome.CONFIGURATION_ERROR: logging.ERROR,
    Outcome.INTERNAL_ERROR: logging.ERROR,
}


@dataclass(frozen=True)
class QualitySignals:
    """How sure the model was about one mask, from its logits (segmentation.model computes them).

    * `mean_confidence`: mean over pixels of the top class's softmax probability;
    * `low_confidence_fraction`: share of pixels whose top probability is below
      contract.LOW_CONFIDENCE_THRESHOLD;
    * `class_fractions`: share of pixels per class of the class map, at the model's resolution.

    The field names are the keys of the summary log line's `quality` object and of the manifest's
    baseline (`metrics.tflite.quality_signals`).
    """

    mean_confidence: float
    low_confidence_fraction: float
    class_fractions: Mapping[str, float]

    def rounded(self, digits: int = 4) -> dict[str, object]:
        """The log line's `quality` object (JSON-ready, rounded)."""
        return {
            "mean_confidence": round(self.mean_confidence, digits),
            "low_confidence_fraction": round(self.low_confidence_fraction, digits),
            "class_fractions": {k: round(v, digits) for k, v in self.class_fractions.items()},
        }


@dataclass(frozen=True)
class Result:
    """What happened to one message. `output_uri` is the object written or found."""

    outcome: Outcome
    detail: str
    output_uri: str | None = None
    reason: str | None = None
    model_version: str | None = None
    quality: QualitySignals | None = None  # the mask's, when one was written
    model_track: Track | None = None  # the track of the model that made the mask


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
