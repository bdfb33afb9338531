"""The chain's steps after training, over one output directory:

<out>/keras/model.keras          train
<out>/tflite/<variant>.tflite    convert
<out>/evaluation.json            evaluate (every variant, and Keras)
<out>/model/                     evaluate: the chosen variant as model.tflite + manifest.json,
                                 quality.png (worst and best held-out examples), and (plots.py)
                                 training-curve.png (train's, copied) and variant-chart.png
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from segmentation.contract import TEST_TIME_FLIP

from model_build import config, convert, evaluate, manifest, plots, quality_sheet
from model_build import data as data_lib
from model_build import model as model_lib
from model_build.convert import representative_images
from model_build.layout import EVALUATION_FILE, KERAS_MODEL, MODEL_DIR, QUALITY_SHEET, TFLITE_DIR
from model_build.model import NUM_CLASSES
from model_build.storage import LocalLocation
from model_build.train import load_training_facts

log = logging.getLogger(__name__)


class MissingStepOutputError(FileNotFoundError):
    """A step's input is missing: the step before it has not run in this output directory."""


@dataclass(frozen=True)
class EvaluateOptions:
    tolerance_points: float = config.DEFAULT_TOLERANCE_POINTS
    selection_threads: int = config.DEFAULT_SELECTION_THREADS
    limit: int | None = None  # evaluate on the first N held-out examples (None: all)
    latency_samples: int = 30
    test_time_flip: bool = False  # serve (and so measure) with flip averaging


def load_keras_model(out: Path) -> keras.Model:
    """The trained model in float32 (a model.keras saved under mixed precision included)."""
    path = out / KERAS_MODEL
    if not path.exists():
        raise MissingStepOutputError(f"{path} not found: run `python -m model_build train` first")
    with model_lib.global_policy("float32"):
        return model_lib.as_float32(keras.models.load_model(path))


def trained_data_config(out: Path, data_config: data_lib.DataConfig) -> data_lib.DataConfig:
    """`data_config` with the breeds the run's training held out (its training.json), so the
    manifest records the data the model was trained on. A different `--holdout-breed` is
    refused: the manifest would then claim training data the model never had."""
    facts = load_training_facts(out)
    if not facts:
        return data_config
    data = (facts.get("config") or {}).get("data") or {}
    trained = tuple(sorted(set(data.get("holdout_breeds") or ())))
    asked = tuple(sorted(set(data_config.holdout_breeds)))
    if asked and asked != trained:
        raise ValueError(
            f"--holdout-breed {', '.join(asked)} is not what {out} was trained without "
            f"({', '.join(trained) or 'no breed held out'}); leave the flag out after `train`"
        )
    return replace(data_config, holdout_breeds=trained)


def convert_step(
    out: Path, data_config: data_lib.DataConfig, representative_count: int = 100
) -> dict[str, Path]:
    data_config = trained_data_config(out, data_config)
    model = load_keras_model(out)
    splits = data_lib.load_splits(data_config)
    images = representative_images(splits, representative_count)
    return convert.convert_all(model, out / TFLITE_DIR, lambda: images)


def variant_paths(out: Path) -> dict[str, Path]:
    paths = {v: out / TFLITE_DIR / f"{v}.tflite" for v in convert.VARIANTS}
    present = {v: p for v, p in paths.items() if p.exists()}
    if not present:
        raise MissingStepOutputError(
            f"no TFLite variant in {out / TFLITE_DIR}: run `python -m model_build convert` first"
        )
    return present


def evaluate_step(
    out: Path, data_config: data_lib.DataConfig, options: EvaluateOptions
) -> dict[str, Any]:
    """Evaluates every variant, writes evaluation.json and the chosen model directory."""
    data_config = trained_data_config(out, data_config)
    model = load_keras_model(out)
    splits = data_lib.load_splits(data_config)
    images, masks = data_lib.to_numpy(splits.test, limit=options.limit)
    threads = tuple(sorted({*evaluate.MEASURED_THREADS, options.selection_threads}))
    result = evaluate.evaluate(
        model,
        variant_paths(out),
        images,
        masks,
        threads,
        options.latency_samples,
        options.test_time_flip,
    )
    selection = evaluate.select_variant(
        result.variants,
        float(result.keras["miou"]),
        options.tolerance_points,
        options.selection_threads,
    )
    chosen_path = Path(result.variants[selection.variant].path)
    model_bytes = chosen_path.read_bytes()
    training = {
        "dataset": splits.description.get("dataset"),
        "dataset_version": splits.description.get("version"),
        "epochs": 0,
        "tensorflow_version": tf.__version__,
        "git_commit": manifest.git_commit(),
        **_training_summary(load_training_facts(out)),
    }
    chosen = manifest.build_manifest(
        model_bytes,
        result,
        selection,
        options.tolerance_points,
        options.selection_threads,
        training,
        splits.description,
        image_size=data_config.image_size,
    )
    manifest.write_model_dir(model_bytes, chosen, out / MODEL_DIR)
    _write_quality_sheet(
        chosen_path, images, masks, splits, out / MODEL_DIR / QUALITY_SHEET, chosen
    )
    report = {**result.to_json(), "selection": chosen["selection"], "version": chosen["version"]}
    (out / EVALUATION_FILE).write_text(json.dumps(report, indent=2) + "\n")
    _write_pictures(out, report, chosen)
    facts = {"variant": selection.variant, "version": chosen["version"], "rule": selection.reason}
    log.info("selected variant", extra=facts)
    return chosen


def _write_quality_sheet(
    model_path: Path,
    images: np.ndarray,
    masks: np.ndarray,
    splits: data_lib.Splits,
    path: Path,
    chosen: dict[str, Any],
) -> Path:
    """The worst and best held-out examples of the chosen variant, next to its manifest."""
    flip = bool(chosen.get(TEST_TIME_FLIP))
    maps, _, _ = evaluate.tflite_class_maps(model_path, images, num_threads=1, flip=flip)
    names = splits.test_names or [f"test #{i}" for i in range(len(images))]
    examples = [
        quality_sheet.Example(
            name, image, mask, predicted, quality_sheet.image_miou(mask, predicted, NUM_CLASSES)
        )
        for name, image, mask, predicted in zip(names, images, masks, maps, strict=False)
    ]
    scores = chosen["metrics"]["tflite"]
    title = (
        f"{chosen['version']} ({chosen['quantization']}) on {len(examples)} held-out "
        f"{splits.description.get('dataset')} examples at 128x128: mIoU {scores['miou']:.3f}"
    )
    return quality_sheet.write(examples, path, title)


def _write_pictures(out: Path, report: dict[str, Any], chosen: dict[str, Any]) -> None:
    """Into the model directory: the training curve (train's copy in `out`, else drawn from
    training.json's history) and the chart of the variants. Pictures never fail the step."""
    model_dir = LocalLocation(out / MODEL_DIR)
    try:
        curve = out / plots.TRAINING_CURVE
        if curve.exists():
            model_dir.write_bytes(plots.TRAINING_CURVE, curve.read_bytes())
        elif history := load_training_facts(out).get("history"):  # a run older than the curve
            curve_png = plots.training_curve(history)
            model_dir.write_bytes(plots.TRAINING_CURVE, curve_png, content_type=plots.PNG)
        plots.write_variant_chart(report, chosen, model_dir)
    except Exception as exc:  # matplotlib, fonts: the model directory is complete without them
        log.warning("pictures not written", extra={"error": f"{type(exc).__name__}: {exc}"})


def _training_summary(facts: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "dataset",
        "dataset_version",
        "train_examples",
        "epochs",
        "tensorflow_version",
        "keras_version",
        "git_commit",
    )
    summary = {k: facts[k] for k in keys if k in facts}
    settings = facts.get("config", {})
    for key in config.RECIPE_KEYS:
        if key in settings:
            summary[key] = settings[key]
    return summary
