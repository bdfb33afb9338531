"""Scores a model directory on real photos through the Cloud Function's own path.

    python -m model_build score --model-dir models/default --data-dir ~/oxford-iiit-pet

Each photo's bytes go through `segmentation.imaging.decode_image` (JPEG draft decoding, EXIF
orientation, the resize the function does), `SegmentationModel.predict` (LiteRT, the manifest's
contract checks) and `encode_mask` (the PNG users get, at the photo's own size); the mask is then
compared with the trimap at full resolution. evaluate's figures are at 128x128 on arrays
prepared by model_build; these are what a user who uploads the photo gets. `flip` overrides the
manifest's `test_time_flip`, to see what serving a model with (or without) flip averaging would
give before publishing it so. Scores are also given per breed (the Oxford name's `<Breed>_<n>`),
each marked by whether the model's training saw it (held out with `--holdout-breed`, or not in
its training data at all): quality on breeds the model never saw, next to those it did, from
one run of one model.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from segmentation.contract import CLASS_NAMES
from segmentation.imaging import decode_image, encode_mask
from segmentation.model import load_model
from segmentation.settings import DEFAULT_MAX_IMAGE_PIXELS

from model_build import metrics, oxford_folder, progress, quality_sheet

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
NUM_CLASSES = len(CLASS_NAMES)


@dataclass
class ServingScore:
    model_version: str
    quantization: str
    test_time_flip: bool
    split: str
    examples: int
    scores: dict[str, Any]  # metrics.summarize over every pixel of every photo
    per_image: dict[str, float] = field(default_factory=dict)  # name -> image mIoU
    skipped: Counter[str] = field(default_factory=Counter)
    # breed -> the same scores over its photos, `examples`, and `training`: whether the model's
    # training saw it, from its manifest's metrics.data (see `breed_scores`).
    by_breed: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "quantization": self.quantization,
            "test_time_flip": self.test_time_flip,
            "split": self.split,
            "examples": self.examples,
            **self.scores,
            "skipped": dict(self.skipped),
            "by_breed": self.by_breed,
            "per_image_miou": self.per_image,
        }


def score_folder(
    model_dir: Path,
    root: Path,
    split: str = "test",
    limit: int | None = None,
    sheet: Path | None = None,
    sheet_rows: int = 4,
    flip: bool | None = None,
) -> ServingScore:
    """Scores `model_dir` on a split of an Oxford-layout folder; optionally draws the sheet."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    names = oxford_folder.split_names(root)[SPLITS.index(split)][:limit]
    with tempfile.TemporaryDirectory(prefix="score-cache-") as cache:
        model = load_model(str(model_dir), store=None, cache_dir=cache, num_threads=1)
        if flip is not None:
            model.serve_test_time_flip(flip)
        confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
        tallies: dict[str, BreedTally] = {}
        result = ServingScore(
            model.version,
            model.manifest.quantization,
            model.manifest.test_time_flip,
            split,
            0,
            {},
        )
        examples: list[quality_sheet.Example] = []
        for name in progress.bar(names, f"score {split}", "photo"):
            try:
                photo, truth, predicted = _segment_one(model, root, name)
            except oxford_folder.ExampleSkippedError as skip:
                result.skipped[skip.reason] += 1
                log.warning("skipping photo", extra={"example": name, "reason": skip.reason})
                continue
            photo_confusion = metrics.confusion_matrix(truth, predicted, NUM_CLASSES)
            confusion += photo_confusion
            breed = oxford_folder.breed_of(name)
            if breed is not None:
                tallies.setdefault(breed, BreedTally()).add(photo_confusion)
            iou = quality_sheet.image_miou(truth, predicted, NUM_CLASSES)
            result.per_image[name] = round(iou, 4)
            examples.append(quality_sheet.Example(name, photo, truth, predicted, iou))
    if not examples:
        raise ValueError(f"no usable photo in the {split} split of {root}")
    result.examples = len(examples)
    result.scores = metrics.summarize(confusion, CLASS_NAMES)
    result.by_breed = breed_scores(tallies, model.manifest.raw)
    if sheet is not None:
        title = (
            f"{model.version} ({serving(result)}) on {len(examples)} {split} photos "
            f"through the function's path: mIoU {result.scores['miou']:.3f}"
        )
        quality_sheet.write(examples, sheet, title, sheet_rows)
    return result


@dataclass
class BreedTally:
    """One breed's photos: their pooled confusion matrix and how many there were."""

    confusion: np.ndarray = field(default_factory=lambda: np.zeros((NUM_CLASSES,) * 2, np.int64))
    examples: int = 0

    def add(self, confusion: np.ndarray) -> None:
        self.confusion += confusion
        self.examples += 1


# What a model's training data says of a breed (`by_breed[...]["training"]`).
HELD_OUT, SEEN, NOT_IN_TRAINING, UNKNOWN = "held_out", "seen", "not_in_training", "unknown"
TRAINING_WORDS = {
    HELD_OUT: "held out of training: never seen",
    SEEN: "seen in training",
    NOT_IN_TRAINING: "not in the training data: never seen",
    UNKNOWN: "training breeds not recorded",
}


def breed_scores(tallies: dict[str, BreedTally], manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Each breed's scores, and whether the model's training saw it (`training`)."""
    data = (manifest.get("metrics") or {}).get("data") or {}
    held_out = set(data.get("holdout_breeds") or ())
    trained = data.get("train_breeds")  # absent from manifests made before it was recorded

    def training(breed: str) -> str:
        if breed in held_out:
            return HELD_OUT
        if trained is None:
            return UNKNOWN
        return SEEN if breed in trained else NOT_IN_TRAINING

    return {
        breed: {
            "examples": tally.examples,
            "training": training(breed),
            **metrics.summarize(tally.confusion, CLASS_NAMES),
        }
        for breed, tally in sorted(tallies.items())
    }


def serving(result: ServingScore) -> str:
    """How the model was served: its variant, and flip averaging when on."""
    return result.quantization + (", flip-averaged" if result.test_time_flip else "")


def _segment_one(model: Any, root: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo RGB, truth classes, predicted classes), all at the photo's size."""
    image_path = oxford_folder.find_image(root, name)
    trimap = oxford_folder.trimap_path(root, name)
    if not trimap.is_file():
        raise oxford_folder.ExampleSkippedError("missing_trimap", f"no trimap for {name}")
    data = image_path.read_bytes()
    decoded = decode_image(data, max_pixels=DEFAULT_MAX_IMAGE_PIXELS, size=model.input_size)
    mask_png = encode_mask(model.predict(decoded.array), decoded.original_size)
    with Image.open(io.BytesIO(mask_png)) as mask:
        predicted = np.asarray(mask)  # palette indices are the classes
    with Image.open(trimap) as tri:
        truth = np.asarray(tri.convert("L")).astype(np.int16) - 1
    if truth.shape != predicted.shape:
        raise oxford_folder.ExampleSkippedError(
            "size_mismatch", f"{name}: mask {predicted.shape} vs trimap {truth.shape}"
        )
    if truth.min() < 0 or truth.max() >= NUM_CLASSES:
        raise oxford_folder.ExampleSkippedError("bad_trimap", f"{name}: values out of range")
    with Image.open(image_path) as img:
        photo = np.asarray(img.convert("RGB"))
    return photo, truth.astype(np.uint8), predicted.astype(np.uint8)
