"""Command line: `python -m model_build {train,convert,evaluate,publish,all,score,plots} ...`.

    python -m model_build all --data synthetic --epochs 2 --out out/
    python -m model_build all --data oxford --epochs 20 --fine-tune-epochs 10 \
        --checkpoint-dir gs://MODELS/checkpoints/run-1 --out /tmp/run --publish gs://MODELS
    python -m model_build all --data-dir ~/oxford-iiit-pet --epochs 20 --out out/
    python -m model_build plots --out out/      # redraw a run's training curve and variant chart

Every step reads and writes one output directory (--out), so any step can run alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from segmentation.errors import SegmentationError

from model_build import config, layout, logs
from model_build.config import (
    DEFAULT_SELECTION_THREADS,
    DEFAULT_TOLERANCE_POINTS,
    SOURCES,
    DataConfig,
)

log = logging.getLogger("model_build.cli")

EXIT_FAILED = 1
STEPS = ("train", "convert", "evaluate", "publish", "all", "score", "plots")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model_build",
        description="Train, convert, evaluate and publish the segmentation U-Net.",
    )
    sub = parser.add_subparsers(dest="step", required=True)
    helps = {
        "train": "train (or resume) the Keras model",
        "convert": "convert the Keras model into four TFLite variants (batch 1)",
        "evaluate": "score Keras and every variant; write the chosen model + manifest",
        "publish": "upload the chosen model as a new immutable version; move `latest`",
        "all": "train, convert, evaluate (and publish with --publish)",
        "score": "score a model directory on real photos through the function's own path",
        "plots": "redraw a run's training curve and variant chart from what it left in --out",
    }
    for step in STEPS:
        step_parser = sub.add_parser(
            step,
            help=helps[step],
            description=helps[step],
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        step_parser.add_argument("--log-level", default="INFO")
        if step == "score":
            _add_score(step_parser)
            continue
        if step == "plots":
            _add_out(step_parser)
            step_parser.add_argument(
                "--checkpoint-dir",
                help="the run's checkpoints (state.json's history; may be gs://); default "
                "<out>/checkpoints, else <out>/training.json",
            )
            continue
        if step != "publish":
            _add_out(step_parser)
            _add_data(step_parser)
        if step in ("train", "all"):
            _add_train(step_parser)
        if step in ("convert", "all"):
            step_parser.add_argument("--representative-count", type=int, default=100)
        if step in ("evaluate", "all"):
            _add_evaluate(step_parser)
        if step == "publish":
            step_parser.add_argument("--model-dir", type=Path, required=True)
            step_parser.add_argument(
                "--to", required=True, help="base: gs://BUCKET[/prefix] or DIR"
            )
        if step in ("publish", "all"):
            step_parser.add_argument(
                "--no-latest", action="store_true", help="publish without moving `latest`"
            )
        if step == "all":
            step_parser.add_argument("--publish", metavar="BASE", help="gs://BUCKET or DIR")
    return parser


def _add_score(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, required=True, help="model.tflite + manifest")
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="photos and trimaps in the Oxford-IIIT layout"
    )
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--limit", type=int, help="score the first N photos of the split")
    parser.add_argument("--sheet", type=Path, help="write the worst and best photos here (PNG)")
    parser.add_argument("--json", type=Path, help="write the scores, per photo too, here")
    parser.add_argument(
        "--test-time-flip",
        choices=("manifest", "on", "off"),
        default="manifest",
        help="serve with flip averaging as the manifest says (default), or score as if it said "
        "on or off",
    )


def _add_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="the run's output directory")


def _add_data(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", choices=SOURCES, help="data source (default synthetic)")
    group.add_argument("--data-dir", help="a folder in the Oxford-IIIT layout (implies folder)")
    group.add_argument("--tfds-data-dir", help="tensorflow-datasets data_dir (may be gs://)")
    group.add_argument("--synthetic-train-size", type=int, default=512)
    group.add_argument("--synthetic-test-size", type=int, default=128)
    group.add_argument("--seed", type=int, default=0)
    group.add_argument(
        "--holdout-breed",
        action="append",
        default=[],
        metavar="BREED",
        help="keep this breed's photos out of training (folder source; repeatable): `score` "
        "then reports it as a breed the model never saw, e.g. Bengal",
    )


def _add_train(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=20)
    group.add_argument("--fine-tune-epochs", type=int, default=0)
    group.add_argument("--batch-size", type=int, default=64)
    group.add_argument("--learning-rate", type=float, default=1e-3)
    group.add_argument("--fine-tune-learning-rate", type=float, default=1e-4)
    group.add_argument("--steps-per-epoch", type=int, help="default: one pass over the data")
    group.add_argument("--validation-fraction", type=float, default=0.1)
    group.add_argument(
        "--encoder-weights",
        choices=("auto", "imagenet", "none"),
        default="auto",
        help="auto: imagenet for real data, none for synthetic (offline) data",
    )
    group.add_argument("--mixed-precision", choices=("auto", "on", "off"), default="auto")
    group.add_argument(
        "--early-stopping-patience",
        type=int,
        default=0,
        help="epochs without a better validation loss before a phase stops; 0 = off "
        "(a cosine schedule ends at a learning rate of zero: stopping early cuts it short)",
    )
    group.add_argument(
        "--loss", choices=config.LOSSES, default=config.DEFAULT_LOSS, help="ce_dice: + soft Dice"
    )
    group.add_argument(
        "--augmentation",
        choices=config.AUGMENTATIONS,
        default=config.DEFAULT_AUGMENTATION,
        help="strong: resized crop + rotation + flip + colour; basic: flip, zoom, brightness",
    )
    group.add_argument(
        "--lr-schedule", choices=config.LR_SCHEDULES, default=config.DEFAULT_LR_SCHEDULE
    )
    group.add_argument(
        "--warmup-epochs",
        type=int,
        default=config.DEFAULT_WARMUP_EPOCHS,
        help="linear warmup (cosine)",
    )
    group.add_argument(
        "--weight-decay", type=float, default=config.DEFAULT_WEIGHT_DECAY, help="AdamW; 0 = Adam"
    )
    group.add_argument(
        "--copy-paste",
        type=float,
        default=config.DEFAULT_COPY_PASTE,
        help="share of training examples that get another example's pet pasted on",
    )
    group.add_argument("--bn-recalibration-steps", type=int, default=20)
    group.add_argument("--checkpoint-dir", help="default <out>/checkpoints; may be gs://")


def _add_evaluate(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation")
    group.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE_POINTS,
        help="max mIoU points a variant may lose against Keras (default 1.0)",
    )
    group.add_argument(
        "--selection-threads",
        type=int,
        default=DEFAULT_SELECTION_THREADS,
        help="choose the fastest variant at this many interpreter threads; match the "
        f"function's NUM_THREADS (default {DEFAULT_SELECTION_THREADS}: 1 vCPU)",
    )
    group.add_argument(
        "--test-time-flip",
        action="store_true",
        help="serve with flip averaging (the manifest's test_time_flip): the logits of each "
        "image and of its mirror image are averaged, two inferences per image; Keras and every "
        "variant are scored and timed that way",
    )
    group.add_argument("--eval-limit", type=int, help="evaluate the first N held-out examples")
    group.add_argument("--latency-samples", type=int, default=30)


def data_config(args: argparse.Namespace) -> DataConfig:
    source = args.data or ("folder" if args.data_dir else "synthetic")
    return DataConfig(
        source=source,
        data_dir=args.data_dir,
        tfds_data_dir=args.tfds_data_dir,
        synthetic_train_size=args.synthetic_train_size,
        synthetic_test_size=args.synthetic_test_size,
        seed=args.seed,
        holdout_breeds=tuple(args.holdout_breed),
    )


def train_config(args: argparse.Namespace):  # -> TrainConfig (import kept lazy)
    from model_build.train import TrainConfig

    data = data_config(args)
    weights = args.encoder_weights
    if weights == "auto":
        weights = "none" if data.source == "synthetic" else "imagenet"
    return TrainConfig(
        data=data,
        out=str(args.out),
        checkpoint_dir=args.checkpoint_dir,
        epochs=args.epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        fine_tune_learning_rate=args.fine_tune_learning_rate,
        steps_per_epoch=args.steps_per_epoch,
        validation_fraction=args.validation_fraction,
        encoder_weights=None if weights == "none" else weights,
        mixed_precision=args.mixed_precision,
        early_stopping_patience=args.early_stopping_patience,
        bn_recalibration_steps=args.bn_recalibration_steps,
        copy_paste=args.copy_paste,
        loss=args.loss,
        augmentation=args.augmentation,
        lr_schedule=args.lr_schedule,
        warmup_epochs=args.warmup_epochs,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )


def score(args: argparse.Namespace) -> int:
    import json

    from model_build.serving_score import TRAINING_WORDS, score_folder, serving

    flip = {"manifest": None, "on": True, "off": False}[args.test_time_flip]
    result = score_folder(
        args.model_dir, args.data_dir, args.split, args.limit, args.sheet, flip=flip
    )
    if args.json:
        args.json.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    per_class = ", ".join(f"{k} {v:.3f}" for k, v in result.scores["per_class_iou"].items())
    print(
        f"{result.model_version} ({serving(result)}) on {result.examples} {args.split} "
        f"photos through the function's path: mIoU {result.scores['miou']:.3f}, "
        f"pixel accuracy {result.scores['pixel_accuracy']:.3f} ({per_class})"
    )
    for breed, scores in result.by_breed.items():
        print(
            f"  {breed}: {scores['examples']} photos, mIoU {scores['miou']:.3f}, "
            f"pixel accuracy {scores['pixel_accuracy']:.3f} "
            f"({TRAINING_WORDS[scores['training']]})"
        )
    return 0


def draw_plots(args: argparse.Namespace) -> int:
    from model_build.plots import redraw  # matplotlib, not TensorFlow

    for uri in redraw(args.out, args.checkpoint_dir):
        print(f"wrote {uri}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    try:
        return run(args)
    except (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        RuntimeError,
        SegmentationError,
    ) as exc:
        # Named, expected failures (bad settings, a step run out of order, an existing version,
        # no network for the ImageNet weights, a model the function would refuse) print one
        # clear line on stderr instead of a traceback; 2 stays argparse's usage error.
        log.error(str(exc), extra={"error": type(exc).__name__, "step": args.step})
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    # TensorFlow is imported here, after parsing, so `--help` answers at once.
    if args.step == "score":
        return score(args)
    if args.step == "plots":
        return draw_plots(args)
    from model_build import publish, steps, train

    if args.step in ("train", "all"):
        train.train(train_config(args))
    if args.step in ("convert", "all"):
        steps.convert_step(args.out, data_config(args), args.representative_count)
    if args.step in ("evaluate", "all"):
        options = steps.EvaluateOptions(
            args.tolerance,
            args.selection_threads,
            args.eval_limit,
            args.latency_samples,
            args.test_time_flip,
        )
        chosen = steps.evaluate_step(args.out, data_config(args), options)
        print(f"model: {args.out / layout.MODEL_DIR} (version {chosen['version']})")
    target = args.to if args.step == "publish" else getattr(args, "publish", None)
    if target:
        model_dir = args.model_dir if args.step == "publish" else args.out / layout.MODEL_DIR
        done = publish.publish(model_dir, target, move_latest=not args.no_latest)
        state = "already published" if done.already_published else "published"
        print(f"{state}: {done.uri} (latest moved: {done.latest_moved})")
    return 0
