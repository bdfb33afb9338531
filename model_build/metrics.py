"""Segmentation metrics on class maps: confusion matrix, IoU, mIoU, pixel accuracy, agreement."""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """[num_classes, num_classes] counts; rows are the true class, columns the predicted one."""
    if truth.shape != predicted.shape:
        raise ValueError(f"shape mismatch: truth {truth.shape} vs predicted {predicted.shape}")
    truth = truth.astype(np.int64).ravel()
    predicted = predicted.astype(np.int64).ravel()
    if truth.size and (truth.max() >= num_classes or predicted.max() >= num_classes):
        raise ValueError(f"class index out of range for {num_classes} classes")
    counts = np.bincount(truth * num_classes + predicted, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def per_class_iou(confusion: np.ndarray) -> np.ndarray:
    """IoU per class; NaN for a class absent from both truth and prediction."""
    intersection = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, intersection / union, np.nan)


def summarize(confusion: np.ndarray, class_names: tuple[str, ...]) -> dict[str, object]:
    """mIoU (mean over classes that occur), pixel accuracy and per-class IoU."""
    ious = per_class_iou(confusion)
    present = ious[~np.isnan(ious)]
    total = confusion.sum()
    return {
        "miou": float(present.mean()) if present.size else math.nan,
        "pixel_accuracy": float(np.trace(confusion) / total) if total else math.nan,
        "per_class_iou": {
            name: (None if math.isnan(iou) else float(iou))
            for name, iou in zip(class_names, ious, strict=True)
        },
    }


def agreement(first: np.ndarray, second: np.ndarray) -> float:
    """Share of pixels where two class maps agree."""
    if first.shape != second.shape:
        raise ValueError(f"shape mismatch: {first.shape} vs {second.shape}")
    return float(np.mean(first == second))
