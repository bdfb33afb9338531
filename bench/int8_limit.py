"""The int8 limit of this CPU through LiteRT: the yardstick for an int8 model's efficiency.

numpy's float32 sgemm is the wrong line for an int8 model (int8 kernels do more multiply-adds per
instruction). So the bench converts small models that are nothing but one large, regular int8
operation, with the same converter settings as the project's int8 variant (full-integer int8,
representative dataset), and runs them with the interpreter the function uses
(`segmentation.model.interpreter_class`) on 1 and 2 threads. The best ops/s of any of them is
the int8 limit; an int8 model's efficiency is its ops/s (2 x MACs / model-only latency) over it.

    fc         Dense 1024 -> 1024 on a [256, 1024] batch    (FULLY_CONNECTED, 2 x 256 x 1024^2)
    conv1x1    1x1 Conv2D 256 -> 256 on a 64x64 map         (CONV_2D, 2 x 64^2 x 256^2)
    conv3x3    3x3 Conv2D 128 -> 128 on a 64x64 map, same   (CONV_2D, 2 x 64^2 x 128^2 x 9)

Built once per (this file, TensorFlow version) under `bench/.cache/int8_limit/<key>/` by
`python -m bench.int8_limit` (a TensorFlow process); measured by `bench.worker int8limit`
(LiteRT only).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.models import CACHE_ROOT, build_once

SPECS: dict[str, dict[str, Any]] = {
    "fc": {"kind": "dense", "batch": 256, "units_in": 1024, "units_out": 1024},
    "conv1x1": {"kind": "conv", "size": 64, "channels_in": 256, "channels_out": 256, "kernel": 1},
    "conv3x3": {"kind": "conv", "size": 64, "channels_in": 128, "channels_out": 128, "kernel": 3},
}
CALIBRATION_SAMPLES = 4
SEED = 99
INDEX = "limit.json"


def ops_per_invoke(spec: dict[str, Any]) -> int:
    """2 x multiply-accumulates of one invoke (the same convention as the model's FLOPs)."""
    if spec["kind"] == "dense":
        return 2 * spec["batch"] * spec["units_in"] * spec["units_out"]
    size, kernel = spec["size"], spec["kernel"]
    return 2 * size * size * spec["channels_in"] * spec["channels_out"] * kernel * kernel


def cache_key() -> str:
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(Path(__file__).read_bytes())
    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            digest.update(version(dist).encode())
            break
        except PackageNotFoundError:
            continue
    return digest.hexdigest()[:16]


def limit_dir(cache_root: Path = CACHE_ROOT) -> Path:
    return cache_root / "int8_limit" / cache_key()


def ensure_limit_models(cache_root: Path = CACHE_ROOT, *, log=print) -> Path:
    """The cache entry (one .tflite per spec and limit.json), built first when missing."""
    return build_once(
        limit_dir(cache_root), INDEX, _convert_all, log=log, what="the int8 limit models (once)"
    )


def _convert_all(staging: Path) -> None:
    index = {name: _convert(name, spec, staging) for name, spec in SPECS.items()}
    (staging / INDEX).write_text(json.dumps(index, indent=2) + "\n")  # last: the marker


def _convert(name: str, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(SEED)
    if spec["kind"] == "dense":
        inputs = tf.keras.Input(shape=(spec["units_in"],), batch_size=spec["batch"])
        outputs = tf.keras.layers.Dense(spec["units_out"])(inputs)
    else:
        shape = (spec["size"], spec["size"], spec["channels_in"])
        inputs = tf.keras.Input(shape=shape, batch_size=1)
        outputs = tf.keras.layers.Conv2D(spec["channels_out"], spec["kernel"], padding="same")(
            inputs
        )
    model = tf.keras.Model(inputs, outputs)
    rng = np.random.default_rng(SEED)
    samples = [
        rng.standard_normal(tuple(inputs.shape), dtype=np.float32)
        for _ in range(CALIBRATION_SAMPLES)
    ]
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    (out / f"{name}.tflite").write_bytes(converter.convert())
    return {"file": f"{name}.tflite", "ops_per_invoke": ops_per_invoke(spec), **spec}


def summarise(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{threads: worker document} -> the limit per thread count (best model, best of N)."""
    out: dict[str, Any] = {}
    for threads, doc in runs.items():
        best = max(doc["models"], key=lambda m: m["best_gops"])
        out[threads] = {
            "best_gops": best["best_gops"],
            "median_gops": best["median_gops"],
            "model": best["name"],
            "models": doc["models"],
        }
    return out


if __name__ == "__main__":  # python -m bench.int8_limit [CACHE_ROOT]
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else CACHE_ROOT
    print(ensure_limit_models(root, log=lambda m: print(f"bench: {m}", file=sys.stderr)))
