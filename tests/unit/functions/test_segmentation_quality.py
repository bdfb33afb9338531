"""Per-mask quality signals: hand-computed values on tiny logits arrays (float, float16, int8,
uint8, a negative scale), their metadata form, and `SegmentationModel.segment` on the tiny
models (float32 and int8 outputs)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from segmentation import storage
from segmentation.contract import CLASS_NAMES, LOW_CONFIDENCE_THRESHOLD
from segmentation.model import (
    SegmentationModel,
    class_map,
    dequantize,
    load_model,
    output_quantization,
    quality_signals,
)
from segmentation.results import QualitySignals

# Four pixels (2x2), real-valued logits in class order pet, background, border.
#   [0, 0, 0]      top probability 1/3             argmax pet         (low confidence)
#   [2, 0, 0]      e^2 / (e^2 + 2)    ~ 0.787      pet
#   [0, 3, 0]      e^3 / (e^3 + 2)    ~ 0.909      background
#   [0, 0, 1]      e / (e + 2)        ~ 0.576      border
REAL = np.array([[[0, 0, 0], [2, 0, 0]], [[0, 3, 0], [0, 0, 1]]], np.float32)
TOPS = [1 / 3, math.e**2 / (math.e**2 + 2), math.e**3 / (math.e**3 + 2), math.e / (math.e + 2)]
EXPECTED_MEAN = sum(TOPS) / 4
EXPECTED_LOW = 0.25
EXPECTED_FRACTIONS = {"pet": 0.5, "background": 0.25, "border": 0.25}


def _assert_expected(signals: QualitySignals) -> None:
    assert signals.mean_confidence == pytest.approx(EXPECTED_MEAN, abs=1e-6)
    assert signals.low_confidence_fraction == EXPECTED_LOW
    assert signals.class_fractions == pytest.approx(EXPECTED_FRACTIONS)
    assert list(signals.class_fractions) == list(CLASS_NAMES)


def test_threshold_is_defined_once_in_the_contract() -> None:
    assert LOW_CONFIDENCE_THRESHOLD == 0.5
    assert min(TOPS) < LOW_CONFIDENCE_THRESHOLD < sorted(TOPS)[1]


def test_float32_logits() -> None:
    _assert_expected(quality_signals(REAL))


def test_float16_logits() -> None:
    signals = quality_signals(REAL.astype(np.float16))
    assert signals.mean_confidence == pytest.approx(EXPECTED_MEAN, abs=1e-3)
    assert signals.low_confidence_fraction == EXPECTED_LOW
    assert signals.class_fractions == pytest.approx(EXPECTED_FRACTIONS)


def test_int8_logits_are_dequantized_with_scale_and_zero_point() -> None:
    scale, zero_point = 0.5, -10
    quantized = (REAL / scale + zero_point).astype(np.int8)  # exact: every value is a step
    np.testing.assert_array_equal(dequantize(quantized, scale, zero_point), REAL)
    _assert_expected(quality_signals(quantized, scale, zero_point))
    # Without dequantizing, the same bytes would read as far more confident.
    raw = quality_signals(quantized)
    assert raw.mean_confidence > EXPECTED_MEAN + 0.05


def test_uint8_logits() -> None:
    scale, zero_point = 0.25, 128
    quantized = (REAL / scale + zero_point).astype(np.uint8)
    _assert_expected(quality_signals(quantized, scale, zero_point))


def test_negative_scale_reverses_the_order_consistently() -> None:
    scale, zero_point = -0.5, 0
    quantized = (REAL / scale + zero_point).astype(np.int8)
    signals = quality_signals(quantized, scale, zero_point)
    assert (class_map(quantized, scale) == class_map(REAL)).all()
    _assert_expected(signals)


def test_given_class_map_is_used_and_float_input_is_not_copied_needlessly() -> None:
    classes = np.full((2, 2), 2, np.uint8)
    signals = quality_signals(REAL, classes=classes)
    assert signals.class_fractions == {"pet": 0.0, "background": 0.0, "border": 1.0}
    assert dequantize(REAL) is REAL


def test_certain_and_uniform_extremes() -> None:
    certain = np.zeros((4, 4, 3), np.float32)
    certain[..., 1] = 50.0
    signals = quality_signals(certain)
    assert signals.mean_confidence == pytest.approx(1.0)
    assert signals.low_confidence_fraction == 0.0
    assert signals.class_fractions["background"] == 1.0
    uniform = quality_signals(np.zeros((4, 4, 3), np.float32))
    assert uniform.mean_confidence == pytest.approx(1 / 3)
    assert uniform.low_confidence_fraction == 1.0


def test_output_quantization_of_interpreter_details() -> None:
    assert output_quantization({"quantization": (0.0, 0)}) == (0.0, 0)
    assert output_quantization({"quantization": (0.125, -7)}) == (0.125, -7)
    assert output_quantization({}) == (0.0, 0)


def test_rounded_log_form_and_metadata_form() -> None:
    signals = quality_signals(REAL)
    assert signals.rounded() == {
        "mean_confidence": round(EXPECTED_MEAN, 4),
        "low_confidence_fraction": 0.25,
        "class_fractions": {"pet": 0.5, "background": 0.25, "border": 0.25},
    }
    assert storage.quality_metadata(signals) == {
        "quality-mean-confidence": f"{EXPECTED_MEAN:.4f}",
        "quality-low-confidence-fraction": "0.2500",
        "quality-fraction-pet": "0.5000",
        "quality-fraction-background": "0.2500",
        "quality-fraction-border": "0.2500",
    }


# --- through the interpreter -----------------------------------------------------------------


def _colour_image() -> np.ndarray:
    image = np.zeros((128, 128, 3), np.uint8)
    image[:, :64, 0] = 200  # red: pet
    image[:, 64:, 1] = 200  # green: background
    image[:16, :, 2] = 255  # blue: border
    return image


def _expected_from_real_logits() -> QualitySignals:
    # The tiny model's logits are the image's channels / 255 (identity 1x1 convolutions).
    return quality_signals(_colour_image().astype(np.float32) / 255.0)


def test_segment_on_the_float_model(tiny_model: SegmentationModel) -> None:
    prediction = tiny_model.segment(_colour_image())
    assert (prediction.classes == tiny_model.predict(_colour_image())).all()
    expected = _expected_from_real_logits()
    assert prediction.quality.mean_confidence == pytest.approx(expected.mean_confidence, abs=1e-5)
    assert prediction.quality.low_confidence_fraction == expected.low_confidence_fraction
    assert prediction.quality.class_fractions == pytest.approx(
        {"pet": 0.4375, "background": 0.4375, "border": 0.125}
    )


def test_segment_on_the_int8_model_dequantizes(tiny_int8_model_dir: Path) -> None:
    model = load_model(
        str(tiny_int8_model_dir), store=None, cache_dir="/nonexistent", num_threads=1
    )
    prediction = model.segment(_colour_image())
    expected = _expected_from_real_logits()
    assert prediction.quality.mean_confidence == pytest.approx(expected.mean_confidence, abs=0.01)
    assert prediction.quality.class_fractions == pytest.approx(
        {"pet": 0.4375, "background": 0.4375, "border": 0.125}
    )
    with model._slot() as slot:
        assert slot.output_scale > 0  # a real quantized output: the test above needed the scale
