"""The models the benchmark runs: the U-Net's Keras model and its four TFLite variants.

Latency does not depend on the weights, so the architecture is built with random weights
(`build_unet(encoder_weights=None)`, fixed seed) rather than trained. Everything is cached under
`bench/.cache/models/<key>/`, where the key hashes model_build's model and conversion source, the
TensorFlow version and this file: a second `make bench` reuses the conversion (1-2 min on 2 cores),
a change to the architecture or the converter rebuilds it.

Layout of one cache entry:
    unet.keras                  the Keras model (the TensorFlow baseline loads it)
    <variant>/model.tflite      each TFLite variant, fixed batch 1
    <variant>/manifest.json     a schema-valid manifest (model_build's `unmeasured_manifest`)
    flops.json                  the model's MACs per image, counted from the Keras layers

Run as `python -m bench.models` to build (or find) the cache and print its directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from segmentation.contract import VARIANTS  # standard library only: fine in any bench process

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_ROOT = REPO_ROOT / "bench" / ".cache"
KEY_SOURCES = (
    REPO_ROOT / "model_build" / "model.py",
    REPO_ROOT / "model_build" / "convert.py",
    REPO_ROOT / "model_build" / "manifest.py",
    REPO_ROOT / "functions" / "segmentation" / "contract.py",
    REPO_ROOT / "functions" / "segmentation" / "manifest.schema.json",
    Path(__file__),
)
REPRESENTATIVE_COUNT = 8
SEED = 1234
DONE_MARKER = "complete.json"


def cache_key() -> str:
    """Hash of the sources that decide the models' bytes, plus the TensorFlow version."""
    from importlib.metadata import version

    digest = hashlib.sha256()
    for path in KEY_SOURCES:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    digest.update(version("tensorflow-cpu" if _has("tensorflow-cpu") else "tensorflow").encode())
    return digest.hexdigest()[:16]


def _has(distribution: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(distribution)
    except PackageNotFoundError:
        return False
    return True


def model_dir(cache_root: Path = CACHE_ROOT) -> Path:
    return cache_root / "models" / cache_key()


def ensure_models(cache_root: Path = CACHE_ROOT, *, log=print) -> Path:
    """Returns the cache entry, building it first when it is missing or incomplete."""
    return build_once(
        model_dir(cache_root),
        DONE_MARKER,
        _build,
        log=log,
        what="the U-Net and its TFLite variants (about 1 min, once)",
    )


def build_once(target: Path, marker: str, build, *, log=print, what: str) -> Path:
    """`target`, built by `build(staging_dir)` (which writes `marker` last) unless `marker` is
    already there. One builder at a time (a `make bench` and the smoke test may start together);
    the staging directory is renamed into place, so a crash never leaves half an entry; sibling
    entries of older keys are removed (never used again)."""
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / marker).is_file():
            return target
        log(f"building {what} into {target}")
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            build(staging)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for stale in target.parent.iterdir():
            if stale.is_dir() and stale != target and not stale.name.startswith("."):
                shutil.rmtree(stale, ignore_errors=True)
    return target


def _build(out: Path) -> None:
    import tensorflow as tf

    from model_build.convert import convert_all
    from model_build.model import build_unet

    tf.keras.utils.set_random_seed(SEED)
    model = build_unet(encoder_weights=None)
    model.save(out / "unet.keras")
    (out / "flops.json").write_text(json.dumps(count_macs(model), indent=2) + "\n")
    rng = np.random.default_rng(SEED)
    _, height, width, _ = model.input.shape
    images = [
        rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for _ in range(REPRESENTATIVE_COUNT)
    ]
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        paths = convert_all(model, Path(tmp), lambda: iter(images), VARIANTS)
        for variant, path in paths.items():
            write_model_dir(path.read_bytes(), variant, out / variant, image_size=int(height))
    (out / DONE_MARKER).write_text(
        json.dumps({"tensorflow": tf.__version__, "created": _now()}) + "\n"
    )


def write_model_dir(model_bytes: bytes, variant: str, out: Path, *, image_size: int) -> Path:
    """model.tflite + its manifest, with the dtypes the interpreter reports."""
    from ai_edge_litert.interpreter import Interpreter

    from model_build.manifest import unmeasured_manifest

    out.mkdir(parents=True, exist_ok=True)
    (out / "model.tflite").write_bytes(model_bytes)
    interpreter = Interpreter(model_path=str(out / "model.tflite"))
    digest = hashlib.sha256(model_bytes).hexdigest()
    manifest = unmeasured_manifest(
        model_bytes,
        name="unet-mobilenetv2-bench",
        version=f"bench-{variant.replace('_', '-')}-{digest[:8]}",
        quantization=variant,
        image_size=image_size,
        input_dtype=np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
        output_dtype=np.dtype(interpreter.get_output_details()[0]["dtype"]).name,
        note="bench: random weights, latency only",
        training={"dataset": "none (random weights)"},
    )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- FLOPs -----------------------------------------------------------------------------------


def count_macs(model: Any) -> dict[str, Any]:
    """Multiply-accumulates per image of every convolution in the model (nested models included).

    Conv2D: H_out*W_out*C_out*K_h*K_w*C_in/groups; DepthwiseConv2D: H_out*W_out*C_in*mult*K_h*K_w;
    Conv2DTranspose: H_in*W_in*C_in*K_h*K_w*C_out (each input pixel scatters one kernel). Dense,
    BatchNorm, activations and resizes are left out (well under 1% here).
    """
    import keras

    by_kind: dict[str, int] = {"conv2d": 0, "depthwise_conv2d": 0, "conv2d_transpose": 0}
    for layer, in_shape, out_shape in _conv_layers(model):
        kh, kw = layer.kernel_size
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kind = "depthwise_conv2d"
            macs = out_shape[1] * out_shape[2] * in_shape[3] * layer.depth_multiplier * kh * kw
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            kind = "conv2d_transpose"
            macs = in_shape[1] * in_shape[2] * in_shape[3] * kh * kw * layer.filters
        else:
            kind = "conv2d"
            groups = getattr(layer, "groups", 1) or 1
            macs = out_shape[1] * out_shape[2] * layer.filters * kh * kw * in_shape[3] // groups
        by_kind[kind] += int(macs)
    total = sum(by_kind.values())
    return {
        "macs": total,
        "flops": 2 * total,
        "macs_by_kind": by_kind,
        "transpose_conv_share": by_kind["conv2d_transpose"] / total if total else 0.0,
    }


def _conv_layers(model: Any):
    """(layer, input shape, output shape) of each convolution, recursing into nested models."""
    import keras

    convs = (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.DepthwiseConv2D)
    for layer in model.layers:
        if isinstance(layer, keras.Sequential):
            shape = tuple(layer.input.shape)
            for inner in layer.layers:
                out = tuple(inner.compute_output_shape(shape))
                if isinstance(inner, convs):
                    yield inner, shape, out
                shape = out
        elif isinstance(layer, keras.Model):
            yield from _conv_layers(layer)
        elif isinstance(layer, convs):
            yield layer, tuple(layer.input.shape), tuple(layer.output.shape)


if __name__ == "__main__":
    print(ensure_models(log=lambda m: print(f"bench: {m}", file=sys.stderr)))
