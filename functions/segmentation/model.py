"""The segmentation model: manifest checks, fetching and caching, one interpreter per thread.

MODEL_URI names a directory (`gs://BUCKET/PATH` or a local path) holding `model.tflite` and
`manifest.json`. A last segment `latest` is resolved through `<parent>/latest.json`
(`{"version", "path", "sha256", "published"}`, defined in segmentation.contract). A model from
Cloud Storage is cached under `<MODEL_CACHE_DIR>/<version>/`. The .tflite's sha256 (and size) must
match the manifest (and the pointer), and the interpreter's tensors must match the manifest's
input/output contract; anything else raises a `ModelError` subclass (a configuration error).

LiteRT's `Interpreter` is not thread-safe: each thread gets its own (threading.local).
`ai_edge_litert` is preferred, `tflite_runtime` is the fallback; TensorFlow is never imported.
This module also runs on Python 3.11 with tflite-runtime (its last wheels), so no 3.12 syntax.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segmentation.contract import (
    CLASS_NAMES,
    LATEST_POINTER,
    LATEST_SEGMENT,
    LOW_CONFIDENCE_THRESHOLD,
    MANIFEST_FILE,
    ContractError,
    parse_latest_pointer,
)
from segmentation.errors import ModelError, ModelIntegrityError, ObjectNotFoundError
from segmentation.manifest import Manifest, check_tensor_contract, parse_manifest
from segmentation.results import QualitySignals

if TYPE_CHECKING:
    from segmentation.storage import ObjectStore

INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


# --- locating and fetching -------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFiles:
    """A verified model on local disk."""

    model_path: Path
    manifest: Manifest
    source: str  # the resolved model directory URI


def fetch_model(model_uri: str, *, store: ObjectStore | None, cache_dir: str | Path) -> ModelFiles:
    """Resolves `latest`, reads the manifest, and returns a local, sha256-verified model file."""
    directory, pinned_sha = resolve_model_dir(model_uri, store=store)
    manifest = parse_manifest(_read_json(_join(directory, MANIFEST_FILE), store))
    if pinned_sha is not None and pinned_sha.lower() != manifest.sha256:
        raise ModelIntegrityError(
            f"{LATEST_POINTER} pins sha256 {pinned_sha} but {directory}/{MANIFEST_FILE} "
            f"says {manifest.sha256}"
        )
    file_uri = _join(directory, manifest.file)
    if not directory.startswith("gs://"):
        _verify(_read(file_uri, None), manifest, file_uri)
        return ModelFiles(Path(file_uri), manifest, directory)
    cached = Path(cache_dir) / manifest.version / manifest.file
    if not (cached.is_file() and _digest(cached.read_bytes()) == manifest.sha256):
        data = _read(file_uri, store)
        _verify(data, manifest, file_uri)
        _write_atomically(cached, data)
        _write_atomically(cached.with_name(MANIFEST_FILE), json.dumps(manifest.raw).encode())
    return ModelFiles(cached, manifest, directory)


def resolve_model_dir(model_uri: str, *, store: ObjectStore | None) -> tuple[str, str | None]:
    """(model directory URI, sha256 pinned by the latest pointer or None)."""
    uri = model_uri.rstrip("/")
    parent, _, last = uri.rpartition("/")
    if last != LATEST_SEGMENT or not parent:
        return uri, None
    try:
        pointer = parse_latest_pointer(_read_json(_join(parent, LATEST_POINTER), store))
    except ContractError as exc:
        raise ModelError(f"{parent}/{LATEST_POINTER} is invalid: {exc}") from None
    path = pointer.path
    if not (path.startswith("gs://") or path.startswith("/")):
        path = _join(parent, path)
    return path, pointer.sha256


def _read(uri: str, store: ObjectStore | None) -> bytes:
    if uri.startswith("gs://"):
        if store is None:
            raise ModelError(f"{uri}: no object store to read a gs:// model with")
        bucket, _, name = uri[len("gs://") :].partition("/")
        try:
            return store.read(bucket, name)
        except ObjectNotFoundError:
            raise ModelError(f"{uri} does not exist") from None
    try:
        return Path(uri).read_bytes()
    except OSError as exc:
        raise ModelError(f"{uri}: cannot read: {exc}") from None


def _read_json(uri: str, store: ObjectStore | None) -> Mapping[str, Any]:
    try:
        document = json.loads(_read(uri, store))
    except ValueError as exc:
        raise ModelError(f"{uri} is not JSON: {exc}") from None
    if not isinstance(document, Mapping):
        raise ModelError(f"{uri} is not a JSON object")
    return document


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verify(data: bytes, manifest: Manifest, uri: str) -> None:
    if manifest.size_bytes is not None and len(data) != manifest.size_bytes:
        raise ModelIntegrityError(
            f"{uri} has {len(data)} bytes, the manifest says {manifest.size_bytes}"
        )
    digest = _digest(data)
    if digest != manifest.sha256:
        raise ModelIntegrityError(f"{uri} has sha256 {digest}, the manifest says {manifest.sha256}")


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- inference -------------------------------------------------------------------------------


def interpreter_class() -> type:
    """LiteRT's Interpreter, or tflite-runtime's when only that is installed."""
    for module in INTERPRETER_MODULES:
        try:
            return importlib.import_module(module).Interpreter
        except ImportError:
            continue
    raise ModelError(f"no TFLite interpreter installed (tried {', '.join(INTERPRETER_MODULES)})")


class SegmentationModel:
    """A verified model; `predict` is safe to call from many threads."""

    def __init__(
        self,
        model_path: str | Path,
        manifest: Manifest,
        *,
        num_threads: int = 1,
        interpreter_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.manifest = manifest
        self.num_threads = num_threads
        self._factory = interpreter_factory or interpreter_class()
        self._local = threading.local()
        self._interpreter()  # the first one checks the contract now, not on the first request

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def input_size(self) -> tuple[int, int]:
        return self.manifest.input_size

    def get(self) -> SegmentationModel:
        """Lets a loaded model stand wherever a `LazyModel` is accepted."""
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB at the input size -> (H, W) uint8 class map."""
        logits, slot = self._logits(image)
        return class_map(logits, slot.output_scale)

    def segment(self, image: np.ndarray) -> Prediction:
        """Like `predict`, plus the quality signals of the same logits."""
        logits, slot = self._logits(image)
        classes = class_map(logits, slot.output_scale)
        signals = quality_signals(
            logits, slot.output_scale, slot.output_zero_point, classes=classes
        )
        return Prediction(classes, signals)

    def _logits(self, image: np.ndarray) -> tuple[np.ndarray, _Slot]:
        """The raw output tensor (H, W, classes) for one image, and the slot that made it."""
        expected = self.manifest.input_shape[1:]
        if image.shape != expected:
            raise ValueError(f"image shape {image.shape} is not the model input {expected}")
        slot = self._interpreter()
        batch = image[np.newaxis].astype(slot.input_dtype, copy=False)
        slot.interpreter.set_tensor(slot.input_index, batch)
        slot.interpreter.invoke()
        # get_tensor copies: the next invoke on this thread cannot change what we return.
        return slot.interpreter.get_tensor(slot.output_index)[0], slot

    def _interpreter(self) -> _Slot:
        slot = getattr(self._local, "slot", None)
        if slot is None:
            slot = self._local.slot = self._new_slot()
        return slot

    def _new_slot(self) -> _Slot:
        try:
            interpreter = self._factory(
                model_path=str(self.model_path), num_threads=self.num_threads
            )
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.model_path}: the interpreter cannot load it: {exc}") from exc
        return _Slot.checked(interpreter, self.manifest)


@dataclass(frozen=True)
class _Slot:
    """One thread's interpreter and the tensor facts `predict` needs."""

    interpreter: Any
    input_index: int
    input_dtype: np.dtype
    output_index: int
    output_scale: float
    output_zero_point: int = 0

    @classmethod
    def checked(cls, interpreter: Any, manifest: Manifest) -> _Slot:
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        check_tensor_contract(inputs, outputs, manifest)
        scale, zero_point = output_quantization(outputs[0])
        return cls(
            interpreter=interpreter,
            input_index=int(inputs[0]["index"]),
            input_dtype=np.dtype(inputs[0]["dtype"]),
            output_index=int(outputs[0]["index"]),
            output_scale=scale,
            output_zero_point=zero_point,
        )


@dataclass(frozen=True)
class Prediction:
    """One image's class map and the quality signals of the logits it came from."""

    classes: np.ndarray  # (H, W) uint8 at the model's resolution
    quality: QualitySignals


def output_quantization(details: Mapping[str, Any]) -> tuple[float, int]:
    """(scale, zero point) of a tensor from the interpreter's details; (0.0, 0) when it is not
    quantized (TFLite reports a float tensor's quantization as (0.0, 0))."""
    scale, zero_point = tuple(details.get("quantization") or (0.0, 0))[:2]
    return float(scale), int(zero_point)


def class_map(logits: np.ndarray, scale: float = 0.0) -> np.ndarray:
    """Argmax over the class axis as uint8. Quantized logits keep their order when the scale is
    positive (or absent); a negative scale reverses it."""
    if np.issubdtype(logits.dtype, np.integer) and scale < 0:
        return np.argmin(logits, axis=-1).astype(np.uint8)
    return np.argmax(logits, axis=-1).astype(np.uint8)


def dequantize(logits: np.ndarray, scale: float = 0.0, zero_point: int = 0) -> np.ndarray:
    """Real-valued float32 logits: integer (quantized) ones become (q - zero_point) * scale;
    float ones (float32, float16) are only cast. An integer tensor without a scale (0) is taken
    as real values (no valid quantized model has one; the contract allows it)."""
    if np.issubdtype(logits.dtype, np.integer):
        values = logits.astype(np.float32) - np.float32(zero_point)
        return values * np.float32(scale) if scale else values
    return logits.astype(np.float32, copy=False)


def quality_signals(
    logits: np.ndarray,
    scale: float = 0.0,
    zero_point: int = 0,
    *,
    classes: np.ndarray | None = None,
) -> QualitySignals:
    """The quality signals of one image's logits (H, W, classes), quantized or not.

    Softmax over the class axis after dequantizing; the top probability of a pixel is
    1 / sum(exp(logit - max logit)), so no full softmax is materialised. `classes` is the class
    map already computed from the same logits (computed here when absent). About 1 ms for
    128x128x3 on one core; numpy only.
    """
    values = dequantize(logits, scale, zero_point)
    shifted = values - values.max(axis=-1, keepdims=True)
    top = 1.0 / np.exp(shifted).sum(axis=-1)
    if classes is None:
        classes = class_map(logits, scale)
    counts = np.bincount(classes.ravel(), minlength=len(CLASS_NAMES))
    pixels = max(int(classes.size), 1)
    return QualitySignals(
        mean_confidence=float(top.mean()),
        low_confidence_fraction=float(np.count_nonzero(top < LOW_CONFIDENCE_THRESHOLD) / pixels),
        class_fractions={
            name: float(counts[index] / pixels) for index, name in enumerate(CLASS_NAMES)
        },
    )


# --- per-instance loading --------------------------------------------------------------------


def load_model(
    model_uri: str,
    *,
    store: ObjectStore | None,
    cache_dir: str | Path,
    num_threads: int,
) -> SegmentationModel:
    """Fetches, verifies and opens the model (what an instance does once, on first use)."""
    files = fetch_model(model_uri, store=store, cache_dir=cache_dir)
    return SegmentationModel(files.model_path, files.manifest, num_threads=num_threads)


class LazyModel:
    """Loads the model on first `get()`, once per instance, from any thread. A failed load is not
    cached: the next message tries again (a fixed `latest` pointer is picked up that way)."""

    def __init__(self, loader: Callable[[], SegmentationModel]) -> None:
        self._loader = loader
        self._model: SegmentationModel | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> SegmentationModel:
        model = self._model
        if model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._loader()
                model = self._model
        return model
