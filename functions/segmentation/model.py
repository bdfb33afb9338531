"""The segmentation model: manifest checks, fetching and caching, one interpreter per thread.

MODEL_URI names a directory (`gs://BUCKET/PATH` or a local path) holding `model.tflite` and
`manifest.json`. A last segment `latest` is resolved through `<parent>/latest.json`
(`{"version", "path", "sha256", "published"}`, defined in segmentation.contract). A model from
Cloud Storage is cached under `<MODEL_CACHE_DIR>/<version>/`. The .tflite's sha256 (and size) must
match the manifest (and the pointer), and the interpreter's tensors must match the manifest's
input/output contract; anything else raises a `ModelError` subclass (a configuration error).

LiteRT's `Interpreter` is not thread-safe: a model keeps a pool of them, one per request in
`predict` at a time, at most `pool_size` (the instance's CONCURRENCY), made on demand and reused
by whichever thread comes next. More server threads than that wait for a free interpreter instead
of each building its own, so the interpreters' memory is bounded by the concurrency the memory
budget was checked for (segmentation/memory.py). A manifest with `test_time_flip` is served
with flip averaging: each request runs its interpreter on the image and on its mirror image and
averages the logits (`served_logits`), as model_build did when it measured the manifest's metrics.
`ai_edge_litert` is preferred, `tflite_runtime` is the fallback; TensorFlow is never imported.
This module also runs on Python 3.11 with tflite-runtime (its last wheels), so no 3.12 syntax.

Serving (`serving_models`, what main.py builds): the stable track is MODEL_URI; when it follows
`latest`, a warm instance re-reads latest.json at most once per MODEL_REFRESH_SECONDS, in the
background of the request that finds it due, and swaps a changed version in atomically (a request
keeps the model it started with; the new one builds its own interpreter pool). A failed
refresh logs a warning and keeps serving the loaded model. Every load and refresh reads Cloud
Storage within the deadline of the request that asked for it (`get(deadline=...)`,
segmentation/deadline.py): an unavailable model bucket makes that request fail transiently
(`StorageUnavailableError`, `RequestDeadlineError`: redelivered), never a `ModelError`, which
only a model that is missing or fails its checks raises. The optional canary track is
`<family>/<CANARY_MODEL_VERSION>`, beside `latest`, for CANARY_PERCENT of uploads chosen by a
stable hash of bucket, name and generation (`routing_point`), so redeliveries stay on one model.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segmentation import logs
from segmentation.contract import (
    CLASS_NAMES,
    LATEST_POINTER,
    LATEST_SEGMENT,
    LOW_CONFIDENCE_THRESHOLD,
    MANIFEST_FILE,
    ContractError,
    parse_latest_pointer,
)
from segmentation.deadline import Deadline, bound
from segmentation.errors import (
    ModelError,
    ModelIntegrityError,
    ObjectNotFoundError,
    RequestDeadlineError,
)
from segmentation.manifest import Manifest, check_tensor_contract, parse_manifest
from segmentation.results import QualitySignals, Timings, Track

if TYPE_CHECKING:
    from segmentation.storage import ObjectStore

INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
# Routing resolution: an upload's routing point is one of 10,000 (0.01 % of uploads each).
ROUTING_POINTS = 10_000
# A canary that failed to load is tried again at most this often (its uploads go to stable).
CANARY_RETRY_SECONDS = 60.0

log = logs.get_logger("model")


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
    return fetch_model_dir(directory, pinned_sha, store=store, cache_dir=cache_dir)


def fetch_model_dir(
    directory: str,
    pinned_sha: str | None,
    *,
    store: ObjectStore | None,
    cache_dir: str | Path,
) -> ModelFiles:
    """The sha256-verified model of one version directory (cached when it is in Cloud Storage);
    `pinned_sha`, from the latest pointer, must equal the manifest's."""
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
        write_atomically(cached, data)
        write_atomically(cached.with_name(MANIFEST_FILE), json.dumps(manifest.raw).encode())
    return ModelFiles(cached, manifest, directory)


def is_latest_uri(model_uri: str) -> bool:
    """True when MODEL_URI follows `<family>/latest.json` (its last segment is `latest`)."""
    parent, _, last = model_uri.rstrip("/").rpartition("/")
    return last == LATEST_SEGMENT and bool(parent)


def family_uri(model_uri: str) -> str:
    """The directory holding MODEL_URI's versions (and latest.json): its parent."""
    return model_uri.rstrip("/").rpartition("/")[0]


def version_uri(model_uri: str, version: str) -> str:
    """`<family>/<version>`: a version directory beside MODEL_URI (the canary's)."""
    return _join(family_uri(model_uri), version)


def resolve_model_dir(model_uri: str, *, store: ObjectStore | None) -> tuple[str, str | None]:
    """(model directory URI, sha256 pinned by the latest pointer or None)."""
    uri = model_uri.rstrip("/")
    if not is_latest_uri(uri):
        return uri, None
    parent = family_uri(uri)
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


def write_atomically(path: Path, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file and a rename: readers never see part."""
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
        pool_size: int = 1,
        interpreter_factory: Callable[..., Any] | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self.model_path = Path(model_path)
        self.manifest = manifest
        self.num_threads = num_threads
        self.pool_size = pool_size
        self._factory = interpreter_factory or interpreter_class()
        self._free = threading.BoundedSemaphore(pool_size)  # slots not in use, made or not
        self._idle: queue.LifoQueue[InterpreterSlot] = queue.LifoQueue()  # made and not in use
        self._made = 0
        self._made_lock = threading.Lock()  # interpreters may be built by threads at once
        # The first one checks the contract now, not on the first request.
        self._idle.put(self._new_slot())

    @property
    def interpreters(self) -> int:
        """How many interpreters this model has built (at most `pool_size`)."""
        return self._made

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def input_size(self) -> tuple[int, int]:
        return self.manifest.input_size

    def serve_test_time_flip(self, flip: bool) -> None:
        """Serve as if the manifest said `test_time_flip: flip`: for previews of a model served
        the other way (`model_build score --test-time-flip`) and the bench, never the function."""
        self.manifest = replace(self.manifest, test_time_flip=flip)

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

    def _logits(self, image: np.ndarray) -> tuple[np.ndarray, InterpreterSlot]:
        """The logits (H, W, classes) for one image, and the slot that made them: the raw output
        tensor, or with `test_time_flip` the flip-averaged float32 logits."""
        expected = self.manifest.input_shape[1:]
        if image.shape != expected:
            raise ValueError(f"image shape {image.shape} is not the model input {expected}")
        with self._slot() as slot:
            flip = self.manifest.test_time_flip
            return served_logits(
                slot.run, image, flip, slot.output_scale, slot.output_zero_point
            ), slot

    @contextmanager
    def _slot(self) -> Iterator[InterpreterSlot]:
        """An interpreter for this thread alone until the block ends (waits while all
        `pool_size` are in use; builds one when none is idle)."""
        self._free.acquire()
        try:
            try:
                slot = self._idle.get_nowait()
            except queue.Empty:
                slot = self._new_slot()
            try:
                yield slot
            finally:
                self._idle.put(slot)
        finally:
            self._free.release()

    def _new_slot(self) -> InterpreterSlot:
        try:
            interpreter = self._factory(
                model_path=str(self.model_path), num_threads=self.num_threads
            )
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.model_path}: the interpreter cannot load it: {exc}") from exc
        slot = InterpreterSlot.checked(interpreter, self.manifest)
        with self._made_lock:
            self._made += 1  # under the semaphore or in __init__: never above pool_size
        return slot


@dataclass(frozen=True)
class InterpreterSlot:
    """One interpreter and the tensor facts running it needs: a pooled one in the function, and
    the one model_build's evaluation times, so both feed and read the model the same way."""

    interpreter: Any
    input_index: int
    input_dtype: np.dtype
    output_index: int
    output_scale: float
    output_zero_point: int = 0

    def run(self, image: np.ndarray) -> np.ndarray:
        """The raw output tensor (H, W, classes) for one (H, W, 3) image."""
        # Contiguous: a mirrored image is a negative-stride view, and not every interpreter
        # (tflite-runtime is the fallback) is known to take one.
        batch = np.ascontiguousarray(image[np.newaxis], dtype=self.input_dtype)
        self.interpreter.set_tensor(self.input_index, batch)
        self.interpreter.invoke()
        # get_tensor copies: the next user of this interpreter cannot change what we return.
        return self.interpreter.get_tensor(self.output_index)[0]

    @classmethod
    def checked(cls, interpreter: Any, manifest: Manifest) -> InterpreterSlot:
        """The slot of an allocated interpreter whose tensors match the manifest's contract."""
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        check_tensor_contract(inputs, outputs, manifest)
        return cls.of(interpreter)

    @classmethod
    def of(cls, interpreter: Any) -> InterpreterSlot:
        """The slot of an allocated interpreter, unchecked (model_build's variants, before any
        manifest exists)."""
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
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


def mirror(array: np.ndarray) -> np.ndarray:
    """Left-right mirror of an image or logits, (H, W, C) or batched (N, H, W, C)."""
    return np.flip(array, axis=-2)


def flip_average(
    logits: np.ndarray, mirrored: np.ndarray, scale: float = 0.0, zero_point: int = 0
) -> np.ndarray:
    """Test-time flip (the manifest's `test_time_flip`): the mean of an image's logits and of
    its mirror image's logits mirrored back, as real-valued float32. Both come from the same
    output tensor, so one scale and zero point dequantize them; (H, W, C) or (N, H, W, C)."""
    total = dequantize(logits, scale, zero_point) + mirror(dequantize(mirrored, scale, zero_point))
    return total * np.float32(0.5)


def served_logits(
    run: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    flip: bool,
    scale: float = 0.0,
    zero_point: int = 0,
) -> np.ndarray:
    """What a model is served as: `run(image)` (one image's raw output tensor), or with `flip`
    (the manifest's `test_time_flip`) its average with `run` on the mirror image. The function
    and model_build's evaluation both call this, so what is measured is what is served."""
    logits = run(image)
    if not flip:
        return logits
    return flip_average(logits, run(mirror(image)), scale, zero_point)


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
    pool_size: int = 1,
) -> SegmentationModel:
    """Fetches, verifies and opens the model (what an instance does once, on first use)."""
    files = fetch_model(model_uri, store=store, cache_dir=cache_dir)
    return SegmentationModel(
        files.model_path, files.manifest, num_threads=num_threads, pool_size=pool_size
    )


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


# --- serving: a stable track that follows `latest`, and an optional canary -------------------


def routing_point(bucket: str, name: str, generation: int) -> int:
    """The upload's place in 0..ROUTING_POINTS-1: the first 8 bytes of
    sha256("<bucket>\\n<name>\\n<generation>") (big-endian) modulo ROUTING_POINTS. Neither a bucket
    nor an object name can hold a line feed, so the key is unambiguous; it depends on nothing
    else, so every delivery of one object generation lands on the same point."""
    key = f"{bucket}\n{name}\n{int(generation)}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % ROUTING_POINTS


def routes_to_canary(bucket: str, name: str, generation: int, percent: float) -> bool:
    """True for the uploads the canary takes: routing points below percent/100 of the range."""
    return routing_point(bucket, name, generation) < round(percent * ROUTING_POINTS / 100)


@dataclass(frozen=True)
class Selection:
    """The model one upload is segmented with, and its track."""

    model: SegmentationModel
    track: Track


@dataclass(frozen=True)
class _Loaded:
    model: SegmentationModel
    source: tuple[str, str | None]  # (version directory, pinned sha256) the pointer named


def _in_background(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="model-refresh", daemon=True).start()


class StableModel:
    """The stable track: MODEL_URI, loaded on first `get()` like `LazyModel` (a failed first load
    raises and is tried again by the next message).

    When MODEL_URI follows `latest` and `refresh_seconds` > 0, a `get()` that finds the last check
    `refresh_seconds` old (on `clock`) starts one refresh through `background` (a daemon thread)
    and returns the loaded model without waiting: the refresh re-reads latest.json and, when it
    names another version directory or sha256, loads that version (sha256-verified, cached) and
    swaps it in. A failed refresh logs a warning; the loaded model keeps serving and the next
    check comes an interval later. A pinned MODEL_URI never refreshes.
    """

    def __init__(
        self,
        model_uri: str,
        *,
        store: ObjectStore | None,
        cache_dir: str | Path,
        num_threads: int,
        pool_size: int = 1,
        refresh_seconds: float = 0,
        clock: Callable[[], float] = time.monotonic,
        background: Callable[[Callable[[], None]], None] = _in_background,
    ) -> None:
        self.model_uri = model_uri
        self._pool_size = pool_size
        self.follows_latest = is_latest_uri(model_uri) and refresh_seconds > 0
        self._store = store
        self._cache_dir = cache_dir
        self._num_threads = num_threads
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._background = background
        self._current: _Loaded | None = None
        self._next_check = 0.0
        self._load_lock = threading.Lock()
        self._refreshing = threading.Lock()  # held from scheduling a refresh until it ends

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def get(self, deadline: Deadline | None = None) -> SegmentationModel:
        """The loaded model, loading it first if need be: its storage reads, and a refresh this
        call starts, end by `deadline` (the request's; None: the store's own limits). Waiting for
        another request's load also ends there (`RequestDeadlineError`)."""
        current = self._current
        if current is None:
            self._load(deadline)
            current = self._current
            assert current is not None
            return current.model
        if self.follows_latest and self._clock() >= self._next_check:
            self._schedule_refresh(deadline)
        current = self._current
        assert current is not None
        return current.model

    def _load(self, deadline: Deadline | None) -> None:
        wait = -1.0 if deadline is None else deadline.remaining()
        if not self._load_lock.acquire(timeout=wait):
            raise RequestDeadlineError(
                f"load {self.model_uri}: the request deadline passed while another request "
                "was loading the model"
            )
        try:
            if self._current is None:
                store = _bounded(self._store, deadline)
                self._current = self._open(
                    *resolve_model_dir(self.model_uri, store=store), store=store
                )
                self._next_check = self._clock() + self._refresh_seconds
        finally:
            self._load_lock.release()

    def _schedule_refresh(self, deadline: Deadline | None = None) -> None:
        if not self._refreshing.acquire(blocking=False):
            return  # a refresh is running: serve what is loaded
        self._next_check = self._clock() + self._refresh_seconds
        try:
            self._background(lambda: self._refresh_then_release(deadline))
        except Exception as exc:  # e.g. no thread could be started: try again next interval
            self._refreshing.release()
            self._warn("model_refresh_failed", exc)

    def _refresh_then_release(self, deadline: Deadline | None = None) -> None:
        try:
            self.refresh(deadline)
        finally:
            self._refreshing.release()

    def refresh(self, deadline: Deadline | None = None) -> bool:
        """Re-resolves `latest` now (its reads ending by `deadline`, the deadline of the request
        that found the refresh due); True when another version was swapped in. Never raises: a
        failure is logged as a warning and the loaded model stays."""
        current = self._current
        store = _bounded(self._store, deadline)
        try:
            source = resolve_model_dir(self.model_uri, store=store)
            if current is not None and source == current.source:
                return False
            fresh = self._open(*source, store=store)
        except Exception as exc:
            self._warn("model_refresh_failed", exc)
            return False
        self._current = fresh
        fields = {
            "event": "model_refreshed",
            "model_uri": self.model_uri,
            "model_version": fresh.model.version,
            "previous_model_version": current.model.version if current else None,
        }
        logs.log_fields(
            log, logging.INFO, f"model_refreshed {self.model_uri} -> {fresh.model.version}", fields
        )
        return True

    def _open(
        self, directory: str, pinned_sha: str | None, *, store: ObjectStore | None
    ) -> _Loaded:
        files = fetch_model_dir(directory, pinned_sha, store=store, cache_dir=self._cache_dir)
        model = SegmentationModel(
            files.model_path,
            files.manifest,
            num_threads=self._num_threads,
            pool_size=self._pool_size,
        )
        return _Loaded(model, (directory, pinned_sha))

    def _warn(self, event: str, exc: BaseException) -> None:
        current = self._current
        fields = {
            "event": event,
            "model_uri": self.model_uri,
            "model_version": current.model.version if current else None,
            "error": f"{type(exc).__name__}: {exc}",
        }
        message = f"{event} {self.model_uri}: keeps serving the loaded model"
        logs.log_fields(log, logging.WARNING, message, fields)


class CanaryModel:
    """The canary track: the version directory `uri` (immutable, so never refreshed), loaded on
    its first upload. A failed load (missing, sha256 or contract mismatch, storage outage) logs a
    warning and `get()` returns None, so the upload goes to the stable model; it is tried again
    after `retry_seconds`."""

    def __init__(
        self,
        uri: str,
        version: str,
        *,
        store: ObjectStore | None,
        cache_dir: str | Path,
        num_threads: int,
        pool_size: int = 1,
        clock: Callable[[], float] = time.monotonic,
        retry_seconds: float = CANARY_RETRY_SECONDS,
    ) -> None:
        self.uri, self.version = uri, version
        self._pool_size = pool_size
        self._store, self._cache_dir, self._num_threads = store, cache_dir, num_threads
        self._clock, self._retry_seconds = clock, retry_seconds
        self._model: SegmentationModel | None = None
        self._retry_at: float | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self, deadline: Deadline | None = None) -> SegmentationModel | None:
        """The canary, loading it first (its reads ending by `deadline`) unless a failed load
        is waiting out `retry_seconds`; None: serve the upload with the stable model."""
        model = self._model
        if model is not None or self._waiting():
            return model
        with self._lock:
            if self._model is None and not self._waiting():
                self._model = self._load(deadline)
            return self._model

    def _waiting(self) -> bool:
        return self._retry_at is not None and self._clock() < self._retry_at

    def _load(self, deadline: Deadline | None = None) -> SegmentationModel | None:
        store = _bounded(self._store, deadline)
        try:
            files = fetch_model_dir(self.uri, None, store=store, cache_dir=self._cache_dir)
            if files.manifest.version != self.version:
                raise ModelIntegrityError(
                    f"{self.uri}/{MANIFEST_FILE} names version {files.manifest.version}"
                )
            model = SegmentationModel(
                files.model_path,
                files.manifest,
                num_threads=self._num_threads,
                pool_size=self._pool_size,
            )
        except Exception as exc:
            self._retry_at = self._clock() + self._retry_seconds
            fields = {
                "event": "canary_unavailable",
                "model_uri": self.uri,
                "canary_version": self.version,
                "retry_in_s": self._retry_seconds,
                "error": f"{type(exc).__name__}: {exc}",
            }
            message = f"canary_unavailable {self.uri}: its uploads go to the stable model"
            logs.log_fields(log, logging.WARNING, message, fields)
            return None
        fields = {"event": "canary_loaded", "model_uri": self.uri, "canary_version": self.version}
        logs.log_fields(log, logging.INFO, f"canary_loaded {self.uri}", fields)
        return model


class ServingModels:
    """What the pipeline asks for a model (`select`): the stable track, and the canary for
    `canary_percent` of uploads unless the canary is the stable version already (promoted),
    which then serves them as stable. `get()` and `loaded` are the stable track's, so this
    stands wherever a `LazyModel` does."""

    def __init__(
        self,
        stable: StableModel,
        canary: CanaryModel | None = None,
        canary_percent: float = 0.0,
    ) -> None:
        self.stable, self.canary, self.canary_percent = stable, canary, canary_percent

    @property
    def loaded(self) -> bool:
        return self.stable.loaded

    def get(self, deadline: Deadline | None = None) -> SegmentationModel:
        return self.stable.get(deadline)

    def select(
        self,
        bucket: str,
        name: str,
        generation: int,
        *,
        timings: Timings | None = None,
        deadline: Deadline | None = None,
    ) -> Selection:
        """The model for one upload; model loads are timed as `model_load` in `timings`, and
        their storage reads end by `deadline` (the request's)."""
        with _measure(timings, not self.stable.loaded):
            stable = self.stable.get(deadline)
        canary = self.canary
        if (
            canary is None
            or canary.version == stable.version
            or not routes_to_canary(bucket, name, generation, self.canary_percent)
        ):
            return Selection(stable, Track.STABLE)
        with _measure(timings, not canary.loaded):
            model = canary.get(deadline)
        if model is None:
            return Selection(stable, Track.STABLE)
        return Selection(model, Track.CANARY)


def _bounded(store: ObjectStore | None, deadline: Deadline | None) -> ObjectStore | None:
    """The store a load or refresh reads through: bound to the request's deadline (None: a
    local model directory, no store)."""
    return None if store is None else bound(store, deadline)


def _measure(timings: Timings | None, loading: bool) -> AbstractContextManager[None]:
    if timings is None or not loading:
        return nullcontext()
    return timings.measure("model_load")


def serving_models(
    model_uri: str,
    *,
    store: ObjectStore | None,
    cache_dir: str | Path,
    num_threads: int,
    pool_size: int = 1,
    refresh_seconds: float = 0,
    canary_version: str | None = None,
    canary_percent: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    background: Callable[[Callable[[], None]], None] = _in_background,
) -> ServingModels:
    """The stable track (MODEL_URI, refreshed every `refresh_seconds` when it follows `latest`)
    and, when `canary_percent` > 0, the canary `<family>/<canary_version>` beside it."""
    stable = StableModel(
        model_uri,
        store=store,
        cache_dir=cache_dir,
        num_threads=num_threads,
        pool_size=pool_size,
        refresh_seconds=refresh_seconds,
        clock=clock,
        background=background,
    )
    canary = None
    if canary_version and canary_percent > 0:
        canary = CanaryModel(
            version_uri(model_uri, canary_version),
            canary_version,
            store=store,
            cache_dir=cache_dir,
            num_threads=num_threads,
            pool_size=pool_size,
            clock=clock,
        )
    return ServingModels(stable, canary, canary_percent)
