import math

import numpy as np
import pytest

from model_build import metrics

CLASSES = ("pet", "background", "border")


def test_confusion_matrix_by_hand():
    truth = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    cm = metrics.confusion_matrix(truth, predicted, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def test_iou_miou_and_pixel_accuracy_by_hand():
    truth = np.array([[0, 0, 1], [1, 2, 2]])
    predicted = np.array([[0, 1, 1], [1, 2, 0]])
    summary = metrics.summarize(metrics.confusion_matrix(truth, predicted, 3), CLASSES)
    # pet: 1 / (2 + 2 - 1); background: 2 / (3 + 2 - 2); border: 1 / (1 + 2 - 1)
    assert summary["per_class_iou"] == pytest.approx(
        {"pet": 1 / 3, "background": 2 / 3, "border": 1 / 2}
    )
    assert summary["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert summary["pixel_accuracy"] == pytest.approx(4 / 6)


def test_a_class_absent_from_truth_and_prediction_is_left_out_of_the_mean():
    truth = np.array([0, 0, 1, 1])
    predicted = np.array([0, 1, 1, 1])
    summary = metrics.summarize(metrics.confusion_matrix(truth, predicted, 3), CLASSES)
    assert summary["per_class_iou"]["border"] is None
    assert summary["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_perfect_prediction_scores_one():
    truth = np.random.default_rng(0).integers(0, 3, (4, 16, 16))
    summary = metrics.summarize(metrics.confusion_matrix(truth, truth, 3), CLASSES)
    assert summary["miou"] == 1.0 and summary["pixel_accuracy"] == 1.0


def test_agreement_and_shape_checks():
    assert metrics.agreement(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75
    with pytest.raises(ValueError, match="shape"):
        metrics.confusion_matrix(np.zeros(3), np.zeros(4), 3)
    with pytest.raises(ValueError, match="out of range"):
        metrics.confusion_matrix(np.array([3]), np.array([0]), 3)
    assert math.isnan(metrics.per_class_iou(np.zeros((3, 3)))[0])
