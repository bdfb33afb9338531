"""Inference engines with the function's model interface: `.predict`, `.input_size`.

`.predict((H, W, 3) uint8) -> (H, W) uint8 class map`; `.input_size` is (width, height).

* `litert:<variant>`: the project's path, unchanged: `segmentation.model.load_model` on a model
  directory (model.tflite + manifest.json), LiteRT interpreter with `num_threads`.
* `litert:<variant>+flip`: the same model served with test-time flip averaging, as the function
  serves a manifest with `test_time_flip` (two inferences per image: the image and its mirror).
* `keras_predict`: full TensorFlow, the Keras model's `model.predict` on a batch of one.
* `tf_function`: full TensorFlow, the Keras model's call wrapped in a `tf.function` traced once for
  a fixed [1, H, W, 3] uint8 input.

Both TensorFlow engines share the function's argmax (`segmentation.model.class_map`), so the
decode -> predict -> encode pipeline differs only in the inference engine. TensorFlow is imported
here, in the benchmark, never in functions/.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

TF_ENGINES = ("keras_predict", "tf_function")
LITERT_PREFIX = "litert:"
FLIP_SUFFIX = "+flip"


class Engine(Protocol):
    input_size: tuple[int, int]

    def predict(self, image: np.ndarray) -> np.ndarray: ...


def engine_names(variants: tuple[str, ...]) -> list[str]:
    return [f"{LITERT_PREFIX}{v}" for v in variants] + list(TF_ENGINES)


def is_tensorflow(engine: str) -> bool:
    return engine in TF_ENGINES


def flip_engine(variant: str) -> str:
    """The engine that serves `variant` flip-averaged."""
    return f"{LITERT_PREFIX}{variant}{FLIP_SUFFIX}"


def is_flip(engine: str) -> bool:
    return engine.endswith(FLIP_SUFFIX)


def inferences_per_image(engine: str) -> int:
    """Model runs per image: two with flip averaging (the image and its mirror), else one."""
    return 2 if is_flip(engine) else 1


def plain_engine(engine: str) -> str:
    """The engine without flip averaging: `litert:int8+flip` -> `litert:int8`."""
    return engine.removesuffix(FLIP_SUFFIX)


def load_engine(engine: str, models: Path, threads: int) -> Engine:
    """Loads one engine from the bench model cache (`bench.models.ensure_models`)."""
    if engine.startswith(LITERT_PREFIX):
        from segmentation.model import load_model

        variant = plain_engine(engine)[len(LITERT_PREFIX) :]
        model = load_model(
            str(models / variant),
            store=None,
            cache_dir=tempfile.gettempdir(),
            num_threads=threads,
        )
        if is_flip(engine):  # served exactly as the function serves a flip-averaged manifest
            model.serve_test_time_flip(True)
        return model
    if engine in TF_ENGINES:
        return TensorFlowModel(models / "unet.keras", mode=engine, threads=threads)
    raise ValueError(f"unknown engine {engine!r}")


class TensorFlowModel:
    """The same U-Net on full TensorFlow/Keras, with the function's `predict` interface."""

    def __init__(self, keras_path: Path, *, mode: str, threads: int) -> None:
        import tensorflow as tf

        _set_tf_threads(tf, threads)
        import keras

        self.mode = mode
        self.model = keras.models.load_model(str(keras_path), compile=False)
        _, height, width, channels = self.model.input.shape
        self.input_size = (int(width), int(height))
        self._shape = (int(height), int(width), int(channels))
        if mode == "tf_function":
            spec = tf.TensorSpec([1, height, width, channels], tf.uint8)
            model = self.model
            self._call: Any = tf.function(
                lambda x: model(x, training=False), input_signature=[spec], autograph=False
            )
        elif mode != "keras_predict":
            raise ValueError(f"unknown TensorFlow mode {mode!r}")

    def predict(self, image: np.ndarray) -> np.ndarray:
        from segmentation.model import class_map

        if image.shape != self._shape:
            raise ValueError(f"image shape {image.shape} is not the model input {self._shape}")
        batch = image[np.newaxis]
        if self.mode == "keras_predict":
            logits = self.model.predict(batch, verbose=0)[0]
        else:
            logits = self._call(batch).numpy()[0]
        return class_map(logits)


def _set_tf_threads(tf: Any, threads: int) -> None:
    """intra-op = `threads`, inter-op = 1 (one op at a time, like LiteRT's interpreter)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process: keep what it has
        pass
