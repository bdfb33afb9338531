"""Keras U-Net -> TFLite in four variants, all with a fixed batch of 1.

A dynamic batch leaves TRANSPOSE_CONV's output shape to run time, XNNPACK then skips those nodes
and a variant ran 40x slower (docs/architecture.md, decision 3), so every variant is traced at
[1, H, W, 3].
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from segmentation.contract import VARIANTS  # the quantizations a manifest may name

from model_build import data as data_lib
from model_build.model import as_float32

log = logging.getLogger(__name__)


class ConversionError(RuntimeError):
    """The TFLite converter failed for one variant."""


def export_fixed_batch(model: keras.Model, saved_model_dir: Path) -> Path:
    """Exports the inference function as a SavedModel traced at batch 1 with uint8 input.

    Always in float32: a model still carrying mixed_float16 layer policies (trained on a GPU)
    is rebuilt in float32 first, so no variant inherits float16 arithmetic by accident.
    """
    model = as_float32(model)
    _, height, width, channels = model.input.shape
    spec = tf.TensorSpec([1, height, width, channels], tf.uint8, name="image")
    model.export(
        str(saved_model_dir), format="tf_saved_model", input_signature=[spec], verbose=False
    )
    return saved_model_dir


def convert_variant(
    saved_model_dir: Path,
    variant: str,
    representative_images: Callable[[], Iterable[np.ndarray]] | None = None,
) -> bytes:
    """Converts an exported SavedModel into one TFLite variant and returns the flatbuffer.

    `representative_images` yields uint8 [H, W, 3] images from the training split; int8 needs it.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    _configure(converter, variant, representative_images)
    try:
        return converter.convert()
    except Exception as exc:
        raise ConversionError(f"TFLite conversion of variant {variant!r} failed: {exc}") from exc


def _configure(
    converter: tf.lite.TFLiteConverter,
    variant: str,
    representative_images: Callable[[], Iterable[np.ndarray]] | None,
) -> None:
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # The old quantizer writes models that tflite-runtime 2.14 can load
        # (docs/architecture.md, decision 2).
        converter.experimental_new_dynamic_range_quantizer = False
    elif variant == "int8":
        if representative_images is None:
            raise ValueError("the int8 variant needs representative images from the training split")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative_dataset(representative_images)
        # Everything after the uint8 -> float rescale runs in int8; the model keeps its raw uint8
        # input (and float32 logits out), so the function feeds every variant the same way.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]


def _representative_dataset(
    images: Callable[[], Iterable[np.ndarray]],
) -> Callable[[], Iterator[list[np.ndarray]]]:
    def generate() -> Iterator[list[np.ndarray]]:
        for image in images():
            yield [np.asarray(image, dtype=np.uint8)[np.newaxis]]

    return generate


def convert_all(
    model: keras.Model,
    out_dir: Path,
    representative_images: Callable[[], Iterable[np.ndarray]],
    variants: Iterable[str] = VARIANTS,
) -> dict[str, Path]:
    """Writes `<out_dir>/<variant>.tflite` for each variant; returns variant -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="unet-savedmodel-") as tmp:
        saved_model = export_fixed_batch(model, Path(tmp) / "saved_model")
        for variant in variants:
            paths[variant] = _write_variant(saved_model, variant, representative_images, out_dir)
    return paths


def _write_variant(
    saved_model: Path,
    variant: str,
    representative_images: Callable[[], Iterable[np.ndarray]],
    out_dir: Path,
) -> Path:
    flatbuffer = convert_variant(saved_model, variant, representative_images)
    path = out_dir / f"{variant}.tflite"
    path.write_bytes(flatbuffer)
    log.info(
        "converted variant",
        extra={"variant": variant, "path": str(path), "size_bytes": len(flatbuffer)},
    )
    return path


def representative_images(splits: data_lib.Splits, count: int = 100) -> list[np.ndarray]:
    """Images from the training split for int8 calibration."""
    images, _ = data_lib.to_numpy(splits.train, limit=count)
    return list(images)
