"""Evaluation results and model directories fabricated for tests that need no TensorFlow run."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from model_build import manifest
from model_build.evaluate import Evaluation, Selection, VariantResult

CLASS_IOU = {"pet": 0.7, "background": 0.9, "border": 0.3}
TRAINING = {
    "dataset": "synthetic",
    "dataset_version": "1",
    "epochs": 1,
    "tensorflow_version": "2.21.0",
    "git_commit": "abc",
}


def variant(name: str, miou: float, ms_1: float, ms_2: float, size: int = 1000) -> VariantResult:
    return VariantResult(
        variant=name,
        path=f"/tmp/{name}.tflite",
        size_bytes=size,
        miou=miou,
        pixel_accuracy=0.9,
        per_class_iou=CLASS_IOU,
        agreement_with_keras=0.99,
        latency_ms={"1": ms_1, "2": ms_2},
        output_dtype="float32",
    )


def evaluation(keras_miou: float = 0.80) -> Evaluation:
    scores = {"miou": keras_miou, "pixel_accuracy": 0.91, "per_class_iou": CLASS_IOU}
    result = Evaluation(examples=12, keras=scores)
    result.variants = {
        "float32": variant("float32", 0.80, 50.0, 27.0, 26_000_000),
        "int8": variant("int8", 0.795, 16.0, 10.0, 7_000_000),
    }
    return result


def built_manifest(
    payload: bytes,
    measured: Evaluation | None = None,
    variant: str = "int8",
    created: datetime | None = None,
) -> dict:
    """model_build's manifest of `payload`, chosen as `variant` from `measured` (default
    `evaluation()`); `created` sets the version's time (versions sort by it), default now."""
    return manifest.build_manifest(
        payload,
        measured or evaluation(),
        Selection(variant, True, "fastest within tolerance"),
        tolerance_points=1.0,
        threads=1,
        training=TRAINING,
        data_description={"dataset": "synthetic", "version": "1"},
        image_size=128,
        created=created,
    )


def model_dir(
    path: Path,
    payload: bytes = b"not really a flatbuffer",
    created: datetime | None = None,
    test_time_flip: bool = False,
) -> tuple[Path, dict]:
    """A model directory whose manifest is schema-valid and matches `payload`'s sha256."""
    measured = evaluation()
    measured.test_time_flip = test_time_flip
    chosen = built_manifest(payload, measured, created=created)
    manifest.write_model_dir(payload, chosen, path)
    return path, chosen
