"""Builds tiny real TFLite models for the function's tests (TensorFlow is used here, in tests only).

The model is a fixed colour classifier, so tests can predict its masks: uint8 RGB [1, H, W, 3] is
rescaled to 0..1 inside the model and a 1x1 convolution with an identity kernel turns it into
3-class logits (red -> 0 pet, green -> 1 background, blue -> 2 border). A second identity 1x1
convolution keeps it a two-layer network. The argmax of the logits is the dominant channel.
Weights are constants (no Keras, no variables), so the int8 calibrator works too.

`build_tiny_model(directory, variant)` writes model.tflite + manifest.json and returns the
manifest: model_build's `unmeasured_manifest`, so it passes the schema like a published one.
Variants: "float32" (float logits) and "int8" (int8 output logits), and "lopsided": float32 with
a left-to-right ramp added to the pet logit (-1.5 at the left edge, +1.5 at the right), so the
right half of a green picture comes out pet. It is the one that is not mirror-symmetric: flip
averaging (the manifest's test_time_flip) cancels the ramp and gives the colour classes back.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

SIZE = 128
BUILDER_VERSION = 4  # bump when the model or manifest this module writes changes
CREATED = datetime(2026, 11, 21, tzinfo=UTC)
RAMP = 1.5  # the lopsided variant's pet-logit offset at the right edge (minus at the left)


def build_tiny_model(directory: Path, variant: str = "float32") -> dict[str, Any]:
    import tensorflow as tf

    directory.mkdir(parents=True, exist_ok=True)
    eye = tf.constant(np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3))
    bias = tf.constant(np.zeros(3, np.float32))
    ramp = np.zeros((1, SIZE, SIZE, 3), np.float32)
    ramp[..., 0] = np.linspace(-RAMP, RAMP, SIZE, dtype=np.float32)[np.newaxis, :]
    offset = tf.constant(ramp)
    spec = tf.TensorSpec([1, SIZE, SIZE, 3], tf.uint8, name="image")

    @tf.function(input_signature=[spec])
    def serve(image: tf.Tensor) -> tf.Tensor:
        scaled = tf.cast(image, tf.float32) / 255.0
        mixed = tf.nn.conv2d(scaled, eye, strides=1, padding="SAME")
        logits = tf.nn.bias_add(tf.nn.conv2d(mixed, eye, strides=1, padding="SAME"), bias)
        return logits + offset if variant == "lopsided" else logits  # decided when traced

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
    output_dtype = "float32"
    if variant == "int8":
        rng = np.random.default_rng(0)

        def representative():
            for _ in range(8):
                yield [rng.integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        converter.inference_output_type = tf.int8
        output_dtype = "int8"
    elif variant not in ("float32", "lopsided"):
        raise ValueError(variant)
    flatbuffer = converter.convert()
    (directory / "model.tflite").write_bytes(flatbuffer)
    manifest = tiny_manifest(flatbuffer, variant=variant, output_dtype=output_dtype)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def tiny_manifest(flatbuffer: bytes, *, variant: str, output_dtype: str) -> dict[str, Any]:
    from model_build.manifest import unmeasured_manifest

    return unmeasured_manifest(
        flatbuffer,
        name="tiny-colour-classifier",
        version=f"20261121-000000-tiny{variant.replace('_', '')}",
        quantization="int8" if variant == "int8" else "float32",
        image_size=SIZE,
        output_dtype=output_dtype,
        note="test fake: fixed weights, a colour classifier",
        training={"dataset": "none (fixed weights)", "builder_version": BUILDER_VERSION},
        created=CREATED,
    )
