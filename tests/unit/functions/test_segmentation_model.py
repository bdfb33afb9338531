"""The model: manifest and tensor contract, sha256 checks, gs:// fetching and caching, `latest`
resolution, a bounded pool of interpreters, and the tflite-runtime fallback."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from segmentation import model as model_lib
from segmentation.errors import (
    ConfigurationError,
    ModelContractError,
    ModelError,
    ModelIntegrityError,
    StorageUnavailableError,
)
from segmentation.manifest import parse_manifest
from segmentation.model import LazyModel, SegmentationModel, class_map, fetch_model, load_model

from tests.fakes.storage import FakeObjectStore

REPO = Path(__file__).resolve().parents[3]
MODELS = "demo-seg-models"


def _colour_image() -> np.ndarray:
    image = np.zeros((128, 128, 3), np.uint8)
    image[:, :64, 0] = 200  # red: pet
    image[:, 64:, 1] = 200  # green: background
    image[:16, :, 2] = 255  # blue: border
    return image


def _expected_classes() -> np.ndarray:
    expected = np.zeros((128, 128), np.uint8)
    expected[:, 64:] = 1
    expected[:16] = 2
    return expected


def _manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "manifest.json").read_text())


def _write_manifest(directory: Path, **changes: Any) -> None:
    document = _manifest(directory)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            document[section][field] = value
        else:
            document[section] = value
    (directory / "manifest.json").write_text(json.dumps(document))


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_int8_model_dir"])
def test_predict_returns_the_class_map(fixture: str, request: pytest.FixtureRequest) -> None:
    directory = request.getfixturevalue(fixture)
    model = load_model(str(directory), store=None, cache_dir="/unused", num_threads=2)
    assert model.version == _manifest(directory)["version"]
    assert model.input_size == (128, 128)
    classes = model.predict(_colour_image())
    assert classes.dtype == np.uint8 and classes.shape == (128, 128)
    assert (classes == _expected_classes()).all()


def test_predict_rejects_a_wrongly_sized_image(tiny_model: SegmentationModel) -> None:
    with pytest.raises(ValueError, match="model input"):
        tiny_model.predict(np.zeros((64, 64, 3), np.uint8))


class _Exclusive:
    """An interpreter that records being invoked by two threads at once (LiteRT's are not
    thread-safe); invoke sleeps a little to widen the window."""

    def __init__(self, inner: Any, overlaps: list[int]) -> None:
        self._inner, self._overlaps = inner, overlaps
        self._busy = threading.Lock()

    def invoke(self) -> None:
        if not self._busy.acquire(blocking=False):
            self._overlaps.append(1)
            return self._inner.invoke()
        try:
            time.sleep(0.002)
            return self._inner.invoke()
        finally:
            self._busy.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.parametrize(("pool_size", "threads"), [(1, 4), (3, 8), (4, 4)])
def test_a_pool_of_interpreters_bounded_by_pool_size_never_shared(
    tiny_model_dir: Path, pool_size: int, threads: int
) -> None:
    created: list[Any] = []
    overlaps: list[int] = []
    factory = model_lib.interpreter_class()

    def counting_factory(**kwargs: Any) -> Any:
        created.append(kwargs)
        return _Exclusive(factory(**kwargs), overlaps)

    manifest = parse_manifest(_manifest(tiny_model_dir))
    model = SegmentationModel(
        tiny_model_dir / "model.tflite",
        manifest,
        num_threads=3,
        pool_size=pool_size,
        interpreter_factory=counting_factory,
    )
    results: list[bool] = []
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for _ in range(5):
            results.append(bool((model.predict(_colour_image()) == _expected_classes()).all()))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert results == [True] * (5 * threads)
    assert overlaps == []  # no interpreter ran two requests at once
    assert 1 <= len(created) == model.interpreters <= pool_size  # not one per thread
    assert all(kwargs["num_threads"] == 3 for kwargs in created)


# --- test-time flip averaging (the manifest's test_time_flip) ----------------------------------


def _with_flip(directory: Path, target: Path, flip: bool) -> Path:
    shutil.copytree(directory, target)
    _write_manifest(target, test_time_flip=flip)
    return target


def _counting_model(directory: Path, invocations: list[int]) -> SegmentationModel:
    factory = model_lib.interpreter_class()

    class Counting:
        def __init__(self, **kwargs: Any) -> None:
            self._inner = factory(**kwargs)

        def invoke(self) -> None:
            invocations.append(1)
            self._inner.invoke()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    manifest = parse_manifest(_manifest(directory))
    return SegmentationModel(directory / "model.tflite", manifest, interpreter_factory=Counting)


def test_a_lopsided_model_without_flip_averaging_keeps_its_bias(
    tiny_lopsided_model_dir: Path, tmp_path: Path
) -> None:
    invocations: list[int] = []
    model = _counting_model(_with_flip(tiny_lopsided_model_dir, tmp_path / "m", False), invocations)
    classes = model.predict(_colour_image())
    assert invocations == [1]
    # Green (background, x >= 64 below the blue band) turns pet where the ramp passes 200/255.
    assert (classes[16:, 100:] == 0).all() and (classes[16:, 64:90] == 1).all()


def test_flip_averaging_runs_the_mirror_image_and_cancels_the_bias(
    tiny_lopsided_model_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    invocations: list[int] = []
    model = _counting_model(_with_flip(tiny_lopsided_model_dir, tmp_path / "m", True), invocations)
    assert model.manifest.test_time_flip
    prediction = model.segment(_colour_image())
    assert invocations == [1, 1]  # the image, then its mirror image
    assert (prediction.classes == _expected_classes()).all()
    # The signals are those of the averaged logits: the ramp cancels, so they are the plain
    # colour model's (float32 rounding apart), not the lopsided model's.
    fair = load_model(str(tiny_model_dir), store=None, cache_dir="/x", num_threads=1)
    expected = fair.segment(_colour_image()).quality
    assert prediction.quality.mean_confidence == pytest.approx(expected.mean_confidence, abs=1e-5)
    assert prediction.quality.low_confidence_fraction == pytest.approx(
        expected.low_confidence_fraction, abs=1e-3
    )
    assert prediction.quality.class_fractions == pytest.approx(expected.class_fractions, abs=1e-3)


def test_a_model_can_be_served_the_other_way_for_a_preview(
    tiny_lopsided_model_dir: Path, tmp_path: Path
) -> None:
    """`serve_test_time_flip` (score's and the bench's override) serves exactly as the manifest
    flag would, both ways."""
    invocations: list[int] = []
    model = _counting_model(_with_flip(tiny_lopsided_model_dir, tmp_path / "m", False), invocations)
    model.serve_test_time_flip(True)
    assert (model.predict(_colour_image()) == _expected_classes()).all()
    assert invocations == [1, 1]
    model.serve_test_time_flip(False)
    assert (model.predict(_colour_image())[16:, 100:] == 0).all()  # the ramp's bias is back
    assert invocations == [1, 1, 1]


def test_flip_average_dequantizes_then_mirrors_back() -> None:
    logits = np.array([[[10, 0], [0, 10], [4, 4]]], np.int8)  # (H=1, W=3, C=2)
    mirrored = np.array([[[2, 2], [0, 10], [10, 0]]], np.int8)
    averaged = model_lib.flip_average(logits, mirrored, scale=0.5, zero_point=2)
    expected = ((logits - 2) * 0.5 + ((mirrored - 2) * 0.5)[:, ::-1]) / 2
    assert averaged.dtype == np.float32
    np.testing.assert_allclose(averaged, expected)
    batched = model_lib.flip_average(logits[np.newaxis], mirrored[np.newaxis], 0.5, 2)
    np.testing.assert_allclose(batched[0], expected)  # the width axis is -2 in both shapes


def test_pool_size_must_be_positive(tiny_model_dir: Path) -> None:
    manifest = parse_manifest(_manifest(tiny_model_dir))
    with pytest.raises(ValueError, match="pool_size"):
        SegmentationModel(tiny_model_dir / "model.tflite", manifest, pool_size=0)


def test_sha256_mismatch_is_refused(tiny_model_copy: Path) -> None:
    _write_manifest(tiny_model_copy, sha256="0" * 64)
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_model(str(tiny_model_copy), store=None, cache_dir="/unused", num_threads=1)


def test_tampered_model_file_is_refused(tiny_model_copy: Path) -> None:
    path = tiny_model_copy / "model.tflite"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError) as info:
        load_model(str(tiny_model_copy), store=None, cache_dir="/unused", num_threads=1)
    assert isinstance(info.value, ConfigurationError)


def test_size_mismatch_is_refused(tiny_model_copy: Path) -> None:
    _write_manifest(tiny_model_copy, size_bytes=1)
    with pytest.raises(ModelIntegrityError, match="bytes"):
        load_model(str(tiny_model_copy), store=None, cache_dir="/unused", num_threads=1)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"input__shape": [1, 256, 256, 3], "output__shape": [1, 256, 256, 3]}, "input shape"),
        ({"input__dtype": "float32"}, "input dtype"),
        ({"output__dtype": "int8"}, "output dtype"),
    ],
)
def test_manifest_that_disagrees_with_the_interpreter_is_refused(
    tiny_model_copy: Path, changes: dict[str, Any], match: str
) -> None:
    _write_manifest(tiny_model_copy, **changes)
    with pytest.raises(ModelContractError, match=match):
        load_model(str(tiny_model_copy), store=None, cache_dir="/unused", num_threads=1)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"schema_version": 2}, "schema_version"),
        ({"input__shape": [1, 128, 128]}, "input shape"),
        ({"input__shape": [2, 128, 128, 3]}, "input shape"),
        ({"input__dtype": "int8"}, "input dtype"),
        ({"input__value_range": [-1, 1]}, "value_range"),
        ({"input__color": "BGR"}, "RGB"),
        ({"input__layout": "NCHW"}, "NHWC"),
        ({"output__classes": ["background", "pet", "border"]}, "classes"),
        ({"output__shape": [1, 128, 128, 4]}, "output shape"),
        ({"output__dtype": "float64"}, "output dtype"),
        ({"sha256": "xyz"}, "sha256"),
        ({"version": "../evil"}, "version"),
        ({"file": "../model.tflite"}, "file"),
        ({"input": None}, "invalid"),
        ({"name": None, "version": None}, "invalid"),
    ],
)
def test_manifest_schema_and_contract(
    tiny_model_dir: Path, changes: dict[str, Any], match: str
) -> None:
    document = _manifest(tiny_model_dir)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            document[section] = {**document[section], field: value}
        elif value is None:
            document.pop(section)
        else:
            document[section] = value
    with pytest.raises(ModelContractError, match=match):
        parse_manifest(document)


def test_missing_manifest_or_model_is_a_model_error(tmp_path: Path, tiny_model_copy: Path) -> None:
    with pytest.raises(ModelError, match=r"manifest\.json"):
        load_model(str(tmp_path / "nothing"), store=None, cache_dir="/unused", num_threads=1)
    (tiny_model_copy / "model.tflite").unlink()
    with pytest.raises(ModelError, match=r"model\.tflite"):
        load_model(str(tiny_model_copy), store=None, cache_dir="/unused", num_threads=1)
    (tiny_model_copy / "manifest.json").write_text("[not json")
    with pytest.raises(ModelError, match="not JSON"):
        load_model(str(tiny_model_copy), store=None, cache_dir="/unused", num_threads=1)


def test_unloadable_flatbuffer_is_a_model_error(tiny_model_copy: Path) -> None:
    data = b"not a flatbuffer" * 10
    (tiny_model_copy / "model.tflite").write_bytes(data)
    _write_manifest(tiny_model_copy, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    with pytest.raises(ModelError, match="interpreter"):
        load_model(str(tiny_model_copy), store=None, cache_dir="/unused", num_threads=1)


# --- Cloud Storage, cache and `latest` -------------------------------------------------------


def _publish(store: FakeObjectStore, directory: Path, prefix: str = "unet") -> str:
    version = _manifest(directory)["version"]
    for file in ("model.tflite", "manifest.json"):
        store.put(MODELS, f"{prefix}/{version}/{file}", (directory / file).read_bytes())
    return version


def _point_latest(store: FakeObjectStore, directory: Path, path: str, **extra: Any) -> None:
    manifest = _manifest(directory)
    pointer = {"version": manifest["version"], "path": path, "sha256": manifest["sha256"]}
    pointer.update(extra)
    store.put(MODELS, "unet/latest.json", json.dumps(pointer).encode())


def _model_reads(store: FakeObjectStore) -> int:
    return sum(1 for op, _, name in store.log if op == "read" and name.endswith(".tflite"))


def test_gs_model_is_fetched_once_and_cached(
    store: FakeObjectStore, tiny_model_dir: Path, tmp_path: Path
) -> None:
    version = _publish(store, tiny_model_dir)
    uri = f"gs://{MODELS}/unet/{version}"
    first = fetch_model(uri, store=store, cache_dir=tmp_path)
    assert first.model_path == tmp_path / version / "model.tflite"
    assert (tmp_path / version / "manifest.json").is_file()
    second = fetch_model(uri, store=store, cache_dir=tmp_path)
    assert second.model_path == first.model_path
    assert _model_reads(store) == 1


def test_corrupted_cache_is_refetched(
    store: FakeObjectStore, tiny_model_dir: Path, tmp_path: Path
) -> None:
    version = _publish(store, tiny_model_dir)
    uri = f"gs://{MODELS}/unet/{version}"
    path = fetch_model(uri, store=store, cache_dir=tmp_path).model_path
    path.write_bytes(b"garbage")
    fetch_model(uri, store=store, cache_dir=tmp_path)
    assert path.read_bytes() == (tiny_model_dir / "model.tflite").read_bytes()
    assert _model_reads(store) == 2


def test_tampered_gs_model_is_refused_and_not_cached(
    store: FakeObjectStore, tiny_model_dir: Path, tmp_path: Path
) -> None:
    version = _publish(store, tiny_model_dir)
    store.put(MODELS, f"unet/{version}/model.tflite", b"evil")
    with pytest.raises(ModelIntegrityError):
        fetch_model(f"gs://{MODELS}/unet/{version}", store=store, cache_dir=tmp_path)
    assert not (tmp_path / version / "model.tflite").exists()


def test_latest_is_resolved_through_the_pointer(
    store: FakeObjectStore, tiny_model_dir: Path, tmp_path: Path
) -> None:
    version = _publish(store, tiny_model_dir)
    _point_latest(store, tiny_model_dir, f"gs://{MODELS}/unet/{version}", published="now")
    model = load_model(f"gs://{MODELS}/unet/latest", store=store, cache_dir=tmp_path, num_threads=1)
    assert model.version == version
    assert (model.predict(_colour_image()) == _expected_classes()).all()


def test_latest_pointer_with_a_relative_path(
    store: FakeObjectStore, tiny_model_dir: Path, tmp_path: Path
) -> None:
    version = _publish(store, tiny_model_dir)
    _point_latest(store, tiny_model_dir, version)
    files = fetch_model(f"gs://{MODELS}/unet/latest/", store=store, cache_dir=tmp_path)
    assert files.source == f"gs://{MODELS}/unet/{version}"


def test_latest_pointer_sha_must_match_the_manifest(
    store: FakeObjectStore, tiny_model_dir: Path, tmp_path: Path
) -> None:
    version = _publish(store, tiny_model_dir)
    _point_latest(store, tiny_model_dir, f"gs://{MODELS}/unet/{version}", sha256="f" * 64)
    with pytest.raises(ModelIntegrityError, match=r"latest\.json"):
        fetch_model(f"gs://{MODELS}/unet/latest", store=store, cache_dir=tmp_path)


@pytest.mark.parametrize(
    "pointer", [b"{}", b"[]", b"not json", b'{"version": "../x", "path": "p"}']
)
def test_bad_latest_pointer(store: FakeObjectStore, tmp_path: Path, pointer: bytes) -> None:
    store.put(MODELS, "unet/latest.json", pointer)
    with pytest.raises(ModelError):
        fetch_model(f"gs://{MODELS}/unet/latest", store=store, cache_dir=tmp_path)


def test_missing_gs_model_is_a_model_error(store: FakeObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        fetch_model(f"gs://{MODELS}/unet/latest", store=store, cache_dir=tmp_path)
    with pytest.raises(ModelError, match="object store"):
        fetch_model(f"gs://{MODELS}/unet/v1", store=None, cache_dir=tmp_path)


def test_storage_outage_while_fetching_stays_transient(
    store: FakeObjectStore, tiny_model_dir: Path, tmp_path: Path
) -> None:
    version = _publish(store, tiny_model_dir)
    store.fail_next("read", StorageUnavailableError("503"))
    with pytest.raises(StorageUnavailableError):
        fetch_model(f"gs://{MODELS}/unet/{version}", store=store, cache_dir=tmp_path)


def test_local_latest_pointer(tiny_model_dir: Path, tmp_path: Path) -> None:
    version = _manifest(tiny_model_dir)["version"]
    shutil.copytree(tiny_model_dir, tmp_path / "unet" / version)
    pointer = {"version": version, "path": version, "sha256": _manifest(tiny_model_dir)["sha256"]}
    (tmp_path / "unet" / "latest.json").write_text(json.dumps(pointer))
    files = fetch_model(str(tmp_path / "unet" / "latest"), store=None, cache_dir="/unused")
    assert files.model_path == tmp_path / "unet" / version / "model.tflite"


# --- lazy loading, output decoding, interpreter choice ---------------------------------------


def test_lazy_model_loads_once_across_threads(tiny_model: SegmentationModel) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def loader() -> SegmentationModel:
        gate.wait(1)
        calls.append(1)
        return tiny_model

    lazy = LazyModel(loader)
    assert not lazy.loaded
    threads = [threading.Thread(target=lazy.get) for _ in range(4)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join()
    assert calls == [1]
    assert lazy.loaded and lazy.get() is tiny_model
    assert tiny_model.get() is tiny_model


def test_lazy_model_retries_after_a_failed_load(tiny_model: SegmentationModel) -> None:
    outcomes: list[Any] = [ModelIntegrityError("bad"), tiny_model]

    def loader() -> SegmentationModel:
        result = outcomes.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    lazy = LazyModel(loader)
    with pytest.raises(ModelIntegrityError):
        lazy.get()
    assert not lazy.loaded
    assert lazy.get() is tiny_model


def test_class_map_of_float_and_quantized_logits() -> None:
    logits = np.array([[[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]]], np.float32)
    assert class_map(logits).tolist() == [[1, 0]]
    quantized = np.array([[[-128, 5, 127], [100, -100, 0]]], np.int8)
    assert class_map(quantized, 0.05).tolist() == [[2, 0]]
    assert class_map(quantized.astype(np.int16) + 128, 0.05).tolist() == [[2, 0]]
    assert class_map(quantized, -0.05).tolist() == [[0, 1]]
    assert class_map(quantized).dtype == np.uint8


def test_interpreter_falls_back_to_tflite_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    fallback = types.ModuleType("tflite_runtime.interpreter")
    fallback.Interpreter = type("Interpreter", (), {})  # type: ignore[attr-defined]
    real_import = model_lib.importlib.import_module

    def fake_import(name: str) -> Any:
        if name == "ai_edge_litert.interpreter":
            raise ImportError(name)
        if name == "tflite_runtime.interpreter":
            return fallback
        return real_import(name)

    monkeypatch.setattr(model_lib.importlib, "import_module", fake_import)
    assert model_lib.interpreter_class() is fallback.Interpreter


def test_no_interpreter_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_import(name: str) -> Any:
        raise ImportError(name)

    monkeypatch.setattr(model_lib.importlib, "import_module", no_import)
    with pytest.raises(ModelError, match="no TFLite interpreter"):
        model_lib.interpreter_class()


def test_functions_never_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from segmentation import events, imaging, logs, model, pipeline, settings, storage\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO / "functions", check=True, timeout=120)
    sources = "\n".join(p.read_text() for p in (REPO / "functions").rglob("*.py"))
    assert "import tensorflow" not in sources and "from tensorflow" not in sources


TFLITE_VENV_PYTHON = REPO / ".venv-tflite" / "bin" / "python"


@pytest.mark.skipif(not TFLITE_VENV_PYTHON.exists(), reason="no .venv-tflite (make setup)")
@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_int8_model_dir", "lopsided+flip"])
def test_model_module_runs_on_tflite_runtime(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The fallback interpreter, for real: Python 3.11, tflite-runtime 2.14, numpy<2. With flip
    averaging too: the mirror image reaches the interpreter as a contiguous copy."""
    if fixture == "lopsided+flip":
        directory = _with_flip(
            request.getfixturevalue("tiny_lopsided_model_dir"), tmp_path / "m", True
        )
    else:
        directory = request.getfixturevalue(fixture)
    code = f"""
import numpy as np
from segmentation.model import interpreter_class, load_model
assert interpreter_class().__module__.startswith("tflite_runtime"), interpreter_class()
model = load_model({str(directory)!r}, store=None, cache_dir="/unused", num_threads=1)
image = np.zeros((128, 128, 3), np.uint8)
image[:, :64, 0] = 200
image[:, 64:, 1] = 200
classes = model.predict(image)
assert (classes[:, :64] == 0).all() and (classes[:, 64:] == 1).all(), classes
"""
    subprocess.run(
        [str(TFLITE_VENV_PYTHON), "-c", code],
        cwd=REPO / "functions",
        check=True,
        timeout=120,
        capture_output=True,
    )
