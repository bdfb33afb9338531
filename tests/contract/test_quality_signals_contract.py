"""Contract: a written mask carries its quality signals in its object metadata and in the
`mask_written` summary line, served by functions-framework over the fake store; model_build's
baseline is the same computation over the same interpreter output, and the manifest field that
records it is optional."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import numpy as np
import pytest
from segmentation import contract, storage
from segmentation.model import load_model
from segmentation.results import QualitySignals

from model_build import evaluate
from model_build import manifest as manifest_lib
from tests.contract.test_segment_image_contract import (
    MASK,
    NAME,
    _fixture,
    _summaries,
    _upload,
    function,
)
from tests.fakes import fixtures as fake_fixtures
from tests.fakes.notifications import OUTPUT_BUCKET, push_path
from tests.unit.model_build import fabricate

__all__ = ["function"]

REPO = Path(__file__).resolve().parents[2]
tiny_int8_model_dir = fake_fixtures.tiny_int8_model_dir
tiny_lopsided_model_dir = fake_fixtures.tiny_lopsided_model_dir

QUALITY_KEYS = {
    storage.META_MEAN_CONFIDENCE,
    storage.META_LOW_CONFIDENCE_FRACTION,
    *(f"{storage.META_CLASS_FRACTION_PREFIX}{name}" for name in contract.CLASS_NAMES),
}

pytestmark = pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning")


def test_mask_metadata_and_summary_line_carry_the_quality_signals(
    function: SimpleNamespace, capsys: Any
) -> None:
    _upload(function.store)  # red left half (pet), green right half (background), 64x48
    response = function.client.post(push_path(), json=_fixture("pubsub_push.json"))
    assert response.status_code == 200, response.get_data(as_text=True)
    meta = function.store.get(OUTPUT_BUCKET, MASK).info.metadata
    assert set(meta) >= QUALITY_KEYS
    assert all(isinstance(meta[key], str) for key in QUALITY_KEYS)
    [summary] = _summaries(capsys)
    assert summary["outcome"] == "mask_written"
    quality = summary["quality"]
    assert set(quality) == {"mean_confidence", "low_confidence_fraction", "class_fractions"}
    assert list(quality["class_fractions"]) == list(contract.CLASS_NAMES)
    # One measurement, two renderings.
    assert float(meta[storage.META_MEAN_CONFIDENCE]) == pytest.approx(
        quality["mean_confidence"], abs=1e-4
    )
    assert float(meta[storage.META_LOW_CONFIDENCE_FRACTION]) == pytest.approx(
        quality["low_confidence_fraction"], abs=1e-4
    )
    for name, fraction in quality["class_fractions"].items():
        assert float(meta[f"{storage.META_CLASS_FRACTION_PREFIX}{name}"]) == pytest.approx(
            fraction, abs=1e-4
        )
    fractions = quality["class_fractions"]
    assert fractions["pet"] == pytest.approx(0.5, abs=0.02)
    assert fractions["background"] == pytest.approx(0.5, abs=0.02)
    assert fractions["border"] == 0.0
    assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-3)
    assert 1 / 3 <= quality["mean_confidence"] <= 1.0


def test_lines_without_a_mask_log_quality_as_null(function: SimpleNamespace, capsys: Any) -> None:
    _upload(function.store, b"<html>nope</html>")
    assert function.client.post(push_path(), json=_fixture("pubsub_push.json")).status_code == 200
    [summary] = _summaries(capsys)
    assert summary["outcome"] == "error_recorded" and summary["quality"] is None
    record = function.store.get(OUTPUT_BUCKET, storage.error_name(NAME))
    assert record is not None and not QUALITY_KEYS & set(record.info.metadata)


# --- the baseline: model_build measures what the function logs -------------------------------


@pytest.mark.parametrize(
    ("fixture", "flip"),
    [
        ("tiny_int8_model_dir", False),
        ("tiny_lopsided_model_dir", False),
        ("tiny_lopsided_model_dir", True),
    ],
)
def test_model_build_measures_the_functions_signals(
    fixture: str, flip: bool, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Masks and signals, flip-averaged or not, are the same on both sides: what the manifest
    states is what the function serves."""
    source = request.getfixturevalue(fixture)
    directory = tmp_path / "model"
    shutil.copytree(source, directory)
    document = json.loads((directory / contract.MANIFEST_FILE).read_text())
    document[contract.TEST_TIME_FLIP] = flip
    (directory / contract.MANIFEST_FILE).write_text(json.dumps(document))
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (4, 128, 128, 3), dtype=np.uint8)
    signals: list[QualitySignals] = []
    maps, _, dtype = evaluate.tflite_class_maps(
        directory / "model.tflite", images, 1, signals, flip=flip
    )
    assert dtype == document["output"]["dtype"] and len(signals) == len(images)  # no warm-ups
    model = load_model(str(directory), store=None, cache_dir="/nonexistent", num_threads=1)
    for image, classes, measured in zip(images, maps, signals, strict=True):
        prediction = model.segment(image)
        assert (prediction.classes == classes).all()
        assert prediction.quality == measured


def _signals(mean: float, low: float, pet: float) -> QualitySignals:
    return QualitySignals(mean, low, {"pet": pet, "background": 1 - pet, "border": 0.0})


def test_baseline_averages_the_per_image_signals() -> None:
    baseline = evaluate.quality_baseline(
        [_signals(0.9, 0.1, 0.25), _signals(0.7, 0.3, 0.75), _signals(0.8, 0.2, 0.5)]
    )
    assert baseline == {
        "images": 3,
        "low_confidence_threshold": contract.LOW_CONFIDENCE_THRESHOLD,
        "mean_confidence": 0.8,
        "mean_confidence_std": round(float(np.std([0.9, 0.7, 0.8])), 4),
        "mean_confidence_p05": round(float(np.percentile([0.9, 0.7, 0.8], 5)), 4),
        "low_confidence_fraction": 0.2,
        "class_fractions": {"pet": 0.5, "background": 0.5, "border": 0.0},
    }
    assert evaluate.quality_baseline([]) is None


def _built_manifest(quality: dict[str, Any] | None) -> dict[str, Any]:
    result = fabricate.evaluation()
    result.variants["int8"].quality_signals = quality
    return fabricate.built_manifest(b"flatbuffer", result)


def test_manifest_records_the_baseline_of_the_chosen_variant() -> None:
    baseline = evaluate.quality_baseline([_signals(0.9, 0.1, 0.25), _signals(0.7, 0.3, 0.75)])
    built = _built_manifest(baseline)
    assert built["metrics"]["tflite"][contract.QUALITY_SIGNALS] == baseline
    assert contract.QUALITY_SIGNALS not in _built_manifest(None)["metrics"]["tflite"]


def test_the_baseline_is_optional_and_checked_by_the_schema() -> None:
    schema = manifest_lib.schema()
    tflite = schema["properties"]["metrics"]["properties"]["tflite"]
    assert contract.QUALITY_SIGNALS in tflite["properties"]
    assert contract.QUALITY_SIGNALS not in tflite.get("required", [])
    classes = schema["$defs"][contract.QUALITY_SIGNALS]["properties"]["class_fractions"]
    assert classes["required"] == list(contract.CLASS_NAMES)
    # An older manifest (the committed default model's, if it has none) stays valid.
    default = json.loads((REPO / "models" / "default" / "manifest.json").read_text())
    old = copy.deepcopy(default)
    old["metrics"]["tflite"].pop(contract.QUALITY_SIGNALS, None)
    manifest_lib.validate(old)
    good = _built_manifest(evaluate.quality_baseline([_signals(0.9, 0.1, 0.25)]))
    for path, value in [
        (("mean_confidence",), 1.5),
        (("images",), 0),
        (("class_fractions", "border"), None),
        (("class_fractions", "cat"), 0.1),
    ]:
        bad = copy.deepcopy(good)
        target = bad["metrics"]["tflite"][contract.QUALITY_SIGNALS]
        *parents, last = path
        for key in parents:
            target = target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
