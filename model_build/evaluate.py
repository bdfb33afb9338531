"""Evaluate Keras and every TFLite variant on the held-out split, pick one, write its manifest.

With `test_time_flip`, Keras and every variant are scored (and timed) as the function serves such
a manifest: the logits of each image and of its mirror image, averaged (segmentation.model's
`served_logits`, the function's own code).

TFLite variants run through LiteRT (`ai_edge_litert`), the interpreter package the Cloud Function
uses, so the figures describe what production will run.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from segmentation.contract import LOW_CONFIDENCE_THRESHOLD
from segmentation.model import (
    InterpreterSlot,
    class_map,
    flip_average,
    mirror,
    quality_signals,
    served_logits,
)
from segmentation.results import QualitySignals

from model_build import metrics, progress
from model_build.config import DEFAULT_SELECTION_THREADS, DEFAULT_TOLERANCE_POINTS
from model_build.model import CLASS_NAMES, NUM_CLASSES

log = logging.getLogger(__name__)

# 2-thread latency is measured too, for the record (selection is at DEFAULT_SELECTION_THREADS).
MEASURED_THREADS = (1, 2)
WARMUP_RUNS = 3


@dataclass
class VariantResult:
    variant: str
    path: str
    size_bytes: int
    miou: float
    pixel_accuracy: float
    per_class_iou: dict[str, float | None]
    agreement_with_keras: float
    latency_ms: dict[str, float]  # threads ("1", "2", ...) -> median ms per image
    output_dtype: str
    # The function's per-mask quality signals over the split (`quality_baseline`); None: unmeasured.
    quality_signals: dict[str, Any] | None = None


@dataclass
class Evaluation:
    examples: int
    keras: dict[str, object]
    variants: dict[str, VariantResult] = field(default_factory=dict)
    test_time_flip: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "examples": self.examples,
            "test_time_flip": self.test_time_flip,
            "keras": self.keras,
            "variants": {name: asdict(result) for name, result in self.variants.items()},
        }


def keras_class_maps(
    model: keras.Model, images: np.ndarray, batch_size: int = 16, flip: bool = False
) -> np.ndarray:
    """Class maps [N, H, W] from the Keras model in inference mode (flip-averaged with `flip`)."""
    logits = model.predict(images, batch_size=batch_size, verbose=0)
    if flip:
        logits = flip_average(
            logits, model.predict(mirror(images), batch_size=batch_size, verbose=0)
        )
    return np.argmax(logits, axis=-1).astype(np.uint8)


def tflite_class_maps(
    model_path: Path,
    images: np.ndarray,
    num_threads: int,
    signals: list[QualitySignals] | None = None,
    flip: bool = False,
) -> tuple[np.ndarray, list[float], str]:
    """Runs a batch-1 TFLite model image by image: (class maps, per-image ms, output dtype).
    With `flip`, each image is also run mirrored and the logits averaged, inside the timed span.

    With a `signals` list, each image's quality signals (segmentation.model.quality_signals, the
    function's own computation, dequantizing with the output's scale and zero point) are
    appended to it, outside the timed span.
    """
    interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
    interpreter.allocate_tensors()
    slot = InterpreterSlot.of(interpreter)
    scale, zero_point = slot.output_scale, slot.output_zero_point
    maps, timings = [], []
    for index, image in enumerate(_with_warmup(images)):
        # Timed: what the function does per image (tensor copies included, and with `flip`
        # both inferences and the average).
        start = time.perf_counter()
        logits = served_logits(slot.run, image, flip, scale, zero_point)
        timings.append((time.perf_counter() - start) * 1000.0)
        maps.append(class_map(logits, scale))
        if signals is not None and index >= WARMUP_RUNS:
            signals.append(quality_signals(logits, scale, zero_point))
    maps, timings = maps[WARMUP_RUNS:], timings[WARMUP_RUNS:]
    output_dtype = np.dtype(interpreter.get_output_details()[0]["dtype"]).name
    return np.stack(maps), timings, output_dtype


def quality_baseline(signals: Sequence[QualitySignals]) -> dict[str, Any] | None:
    """The manifest's `metrics.tflite.quality_signals`: the per-mask signals the function logs,
    averaged over the images (all at the model's resolution, so also the per-pixel mean), with
    the spread of the per-image mean confidence (to size an alert's margin). None for no image.
    """
    if not signals:
        return None
    confidence = np.array([s.mean_confidence for s in signals], np.float64)
    classes = signals[0].class_fractions
    return {
        "images": len(signals),
        "low_confidence_threshold": LOW_CONFIDENCE_THRESHOLD,
        "mean_confidence": round(float(confidence.mean()), 4),
        "mean_confidence_std": round(float(confidence.std()), 4),
        "mean_confidence_p05": round(float(np.percentile(confidence, 5)), 4),
        "low_confidence_fraction": round(
            float(np.mean([s.low_confidence_fraction for s in signals])), 4
        ),
        "class_fractions": {
            name: round(float(np.mean([s.class_fractions[name] for s in signals])), 4)
            for name in classes
        },
    }


def _with_warmup(images: np.ndarray) -> list[np.ndarray]:
    return [images[0]] * WARMUP_RUNS + list(images)


def evaluate(
    model: keras.Model,
    variant_paths: Mapping[str, Path],
    images: np.ndarray,
    masks: np.ndarray,
    threads: tuple[int, ...] = MEASURED_THREADS,
    latency_samples: int = 30,
    test_time_flip: bool = False,
) -> Evaluation:
    """Scores Keras and each variant against the masks; times each variant per thread count."""
    keras_maps = keras_class_maps(model, images, flip=test_time_flip)
    keras_scores = metrics.summarize(
        metrics.confusion_matrix(masks, keras_maps, NUM_CLASSES), CLASS_NAMES
    )
    evaluation = Evaluation(len(images), keras_scores, test_time_flip=test_time_flip)
    for variant, path in progress.bar(variant_paths.items(), "evaluate", "variant"):
        evaluation.variants[variant] = _evaluate_variant(
            variant, Path(path), images, masks, keras_maps, threads, latency_samples, test_time_flip
        )
        log.info("evaluated variant", extra=_summary(evaluation.variants[variant]))
    return evaluation


def _evaluate_variant(
    variant: str,
    path: Path,
    images: np.ndarray,
    masks: np.ndarray,
    keras_maps: np.ndarray,
    threads: tuple[int, ...],
    latency_samples: int,
    flip: bool = False,
) -> VariantResult:
    signals: list[QualitySignals] = []
    maps, _, output_dtype = tflite_class_maps(path, images, max(threads), signals, flip)
    scores = metrics.summarize(metrics.confusion_matrix(masks, maps, NUM_CLASSES), CLASS_NAMES)
    latency = {}
    for count in threads:
        _, timings, _ = tflite_class_maps(path, images[:latency_samples], count, flip=flip)
        latency[str(count)] = round(statistics.median(timings), 3)
    return VariantResult(
        variant=variant,
        path=str(path),
        size_bytes=path.stat().st_size,
        miou=float(scores["miou"]),
        pixel_accuracy=float(scores["pixel_accuracy"]),
        per_class_iou=scores["per_class_iou"],  # type: ignore[arg-type]
        agreement_with_keras=metrics.agreement(maps, keras_maps),
        latency_ms=latency,
        output_dtype=output_dtype,
        quality_signals=quality_baseline(signals),
    )


def _summary(result: VariantResult) -> dict[str, object]:
    return {
        "variant": result.variant,
        "size_bytes": result.size_bytes,
        "miou": round(result.miou, 4),
        "agreement_with_keras": round(result.agreement_with_keras, 4),
        "latency_ms": result.latency_ms,
    }


@dataclass(frozen=True)
class Selection:
    variant: str
    within_tolerance: bool
    reason: str


def select_variant(
    results: Mapping[str, VariantResult],
    keras_miou: float,
    tolerance_points: float = DEFAULT_TOLERANCE_POINTS,
    threads: int = DEFAULT_SELECTION_THREADS,
) -> Selection:
    """The fastest variant (at `threads`) whose mIoU is within `tolerance_points` of Keras.

    mIoU is a fraction, the tolerance is in points: 1.0 allows 0.80 when Keras has 0.81. When no
    variant qualifies, the most accurate one is chosen and the selection says so.
    """
    if not results:
        raise ValueError("no variant to select from")
    floor = keras_miou - tolerance_points / 100.0
    eligible = [r for r in results.values() if not math.isnan(r.miou) and r.miou >= floor]
    if eligible:
        best = min(eligible, key=lambda r: (r.latency_ms[str(threads)], r.size_bytes))
        reason = (
            f"fastest at {threads} thread(s) among {len(eligible)} variant(s) with mIoU >= "
            f"{floor:.4f} (Keras {keras_miou:.4f} - {tolerance_points} points)"
        )
        return Selection(best.variant, True, reason)
    best = max(results.values(), key=lambda r: -math.inf if math.isnan(r.miou) else r.miou)
    reason = f"no variant within {tolerance_points} mIoU points of Keras; chose the most accurate"
    log.warning("variant selection fell back", extra={"variant": best.variant, "reason": reason})
    return Selection(best.variant, False, reason)
