"""Train the U-Net: a frozen-encoder phase, an optional fine-tune phase, resumable per epoch.

    python -m model_build train --data synthetic --epochs 5 --out out/
    python -m model_build train --data oxford --epochs 20 --fine-tune-epochs 10 \
        --checkpoint-dir gs://BUCKET/checkpoints/run-1 --out /var/lib/segmentation/run

A restarted run (a preempted spot VM) resumes from the latest checkpoint in --checkpoint-dir;
a finished run is not trained again.
"""

from __future__ import annotations

import json
import logging
import math
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from model_build import config, plots, progress
from model_build import data as data_lib
from model_build import losses as losses_lib
from model_build import model as model_lib
from model_build.checkpoints import (
    CheckpointCallback,
    CheckpointStore,
    ResumableEarlyStopping,
    TrainingState,
)
from model_build.layout import DEFAULT_CHECKPOINTS, KERAS_MODEL, TRAINING_FACTS
from model_build.manifest import git_commit
from model_build.model import build_unet, iter_batchnorm_layers, set_encoder_trainable
from model_build.storage import LocalLocation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    data: data_lib.DataConfig = field(default_factory=data_lib.DataConfig)
    out: str = "out"
    checkpoint_dir: str | None = None  # default <out>/checkpoints; may be gs://
    epochs: int = 20
    fine_tune_epochs: int = 0
    batch_size: int = 64
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    steps_per_epoch: int | None = None  # None: one pass over the training split
    validation_fraction: float = 0.1
    encoder_weights: str | None = "imagenet"  # or None: train the encoder from scratch
    mixed_precision: str = "auto"  # auto (on with a GPU) | on | off
    early_stopping_patience: int = 0  # 0 = off
    bn_recalibration_steps: int = 20
    # The recipe for little data and no pretrained encoder (README "The model" has the table).
    loss: str = config.DEFAULT_LOSS
    augmentation: str = config.DEFAULT_AUGMENTATION
    lr_schedule: str = config.DEFAULT_LR_SCHEDULE  # cosine: linear warmup, cosine decay to 0
    warmup_epochs: int = config.DEFAULT_WARMUP_EPOCHS
    copy_paste: float = config.DEFAULT_COPY_PASTE  # share of examples that get a pasted pet
    weight_decay: float = config.DEFAULT_WEIGHT_DECAY  # AdamW's decoupled decay; 0 = Adam
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "fine_tune_epochs": self.fine_tune_epochs >= 0,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "validation_fraction": 0 <= self.validation_fraction < 1,
            "mixed_precision": self.mixed_precision in ("auto", "on", "off"),
            "encoder_weights": self.encoder_weights in ("imagenet", None),
            "loss": self.loss in config.LOSSES,
            "augmentation": self.augmentation in config.AUGMENTATIONS,
            "lr_schedule": self.lr_schedule in config.LR_SCHEDULES,
            "warmup_epochs": self.warmup_epochs >= 0,
            "copy_paste": 0 <= self.copy_paste <= 1,
            "weight_decay": self.weight_decay >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid training setting(s): {', '.join(bad)}")

    @property
    def checkpoint_uri(self) -> str:
        return self.checkpoint_dir or str(Path(self.out) / DEFAULT_CHECKPOINTS)


def train(config: TrainConfig, extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> Path:
    """Trains (or resumes, or skips a finished run) and returns the saved Keras model's path.

    `extra_callbacks` run after the checkpoint callback (progress hooks, tests).
    """
    out = Path(config.out)
    final_path = out / KERAS_MODEL
    store = CheckpointStore(config.checkpoint_uri)
    state = store.load_state() or TrainingState()
    if state.complete and final_path.exists():
        log.info("training already complete", extra={"model": str(final_path)})
        return final_path

    # The code that trains is the code at the start: a checkout may move during a long run.
    commit = git_commit()
    with model_lib.global_policy(_precision_policy(config.mixed_precision)):
        model, splits, plain_batches = _train_phases(config, store, state, out, extra_callbacks)
    write_training_pictures(store, state, out)  # also when a resumed run had no epoch left
    # Recalibrated and saved in float32: what convert and evaluate load (and serving runs).
    model = model_lib.as_float32(model)
    recalibrate_batchnorm(model, plain_batches, config.bn_recalibration_steps)
    save_final_model(model, final_path)
    _write_training_facts(config, splits, state, out, commit)
    state.complete = True
    store.save_state(state)
    log.info("training complete", extra={"model": str(final_path), "epochs": state.epoch})
    return final_path


def _train_phases(
    config: TrainConfig,
    store: CheckpointStore,
    state: TrainingState,
    out: Path,
    extra_callbacks: Sequence[keras.callbacks.Callback],
) -> tuple[keras.Model, data_lib.Splits, tf.data.Dataset]:
    """Runs the phases not done yet (under the global policy set by the caller)."""
    splits = data_lib.load_splits(config.data)
    train_ds, val_ds = _split_validation(splits, config.validation_fraction)
    train_batches = data_lib.training_batches(
        train_ds, config.batch_size, config.seed, config.augmentation, config.copy_paste
    )
    val_batches = data_lib.evaluation_batches(val_ds, config.batch_size) if val_ds else None
    plain_batches = data_lib.training_batches(train_ds, config.batch_size, config.seed, "none")
    steps_per_epoch = config.steps_per_epoch or math.ceil(
        (splits.train_size - _validation_count(splits, config.validation_fraction))
        / config.batch_size
    )

    if state.checkpoint:
        log.info("resuming", extra={"checkpoint": state.checkpoint, "epoch": state.epoch})
        model = store.load_model(state.checkpoint)
    else:
        keras.utils.set_random_seed(config.seed)
        model = build_unet(encoder_weights=config.encoder_weights, freeze_encoder=True)

    phases = [("head", config.epochs, config.learning_rate, False)]
    if config.fine_tune_epochs:
        phases.append(("fine_tune", config.fine_tune_epochs, config.fine_tune_learning_rate, True))
    end_epoch = 0
    for phase, epochs, learning_rate, unfreeze in phases:
        end_epoch += epochs
        if phase in state.phase_done:
            continue
        resumed_in_phase = state.checkpoint is not None and state.phase == phase
        if not resumed_in_phase:  # a resumed model keeps its compiled optimizer state
            if unfreeze:
                set_encoder_trainable(model, True)
            _compile(model, config, learning_rate, epochs * steps_per_epoch, steps_per_epoch)
        callbacks = [
            RecalibrateBatchNorm(plain_batches, config.bn_recalibration_steps),
            *_callbacks(config, store, state, phase, out),
            *extra_callbacks,
        ]
        model.fit(
            train_batches,
            validation_data=val_batches,
            initial_epoch=state.epoch,
            epochs=end_epoch,
            steps_per_epoch=config.steps_per_epoch,
            callbacks=callbacks,
            verbose=progress.keras_verbosity(),
        )
        state.phase_done.append(phase)
        state.epoch = end_epoch  # early stopping ends the phase too
        store.save_state(state)

    return model, splits, plain_batches


def save_final_model(model: keras.Model, path: Path) -> Path:
    """Saves the final model in float32 with the trained weights.

    Under mixed precision every layer keeps its mixed_float16 policy in model.keras; loading
    that for conversion would trace a float16 graph into the "float32" TFLite variant.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    model_lib.as_float32(model).save(path)
    return path


def _precision_policy(mode: str) -> str:
    gpu = bool(tf.config.list_physical_devices("GPU"))
    policy = "mixed_float16" if mode == "on" or (mode == "auto" and gpu) else "float32"
    log.info("precision policy", extra={"policy": policy, "gpu": gpu})
    return policy


def _split_validation(
    splits: data_lib.Splits, fraction: float
) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """Holds out the first `fraction` of the training split for validation (the test split
    stays untouched for the final evaluation)."""
    count = _validation_count(splits, fraction)
    if count == 0:
        return splits.train, None
    return splits.train.skip(count), splits.train.take(count)


def _validation_count(splits: data_lib.Splits, fraction: float) -> int:
    return int(splits.train_size * fraction)


def learning_rate_schedule(
    config: TrainConfig, peak: float, total_steps: int, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The phase's learning rate: constant, or a linear warmup then a cosine decay to zero.

    The schedule reads the optimizer's step counter, which checkpoints carry, so a resumed
    phase continues the curve where it stopped.
    """
    if config.lr_schedule == "constant":
        return peak
    warmup = min(config.warmup_epochs * steps_per_epoch, max(total_steps - 1, 0))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak,
        decay_steps=max(total_steps - warmup, 1),
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def _compile(
    model: keras.Model,
    config: TrainConfig,
    peak: float,
    total_steps: int,
    steps_per_epoch: int,
) -> None:
    rate = learning_rate_schedule(config, peak, total_steps, steps_per_epoch)
    optimizer = (
        keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
        if config.weight_decay
        else keras.optimizers.Adam(rate)
    )
    model.compile(optimizer=optimizer, loss=losses_lib.by_name(config.loss), metrics=["accuracy"])


def _callbacks(
    config: TrainConfig, store: CheckpointStore, state: TrainingState, phase: str, out: Path
) -> list[keras.callbacks.Callback]:
    monitor = "val_loss" if config.validation_fraction > 0 else "loss"
    callbacks: list[keras.callbacks.Callback] = []
    if config.early_stopping_patience > 0:
        # Before the checkpoint callback: it saves the state this one updates.
        callbacks.append(
            ResumableEarlyStopping(
                state, phase, monitor=monitor, patience=config.early_stopping_patience
            )
        )
    return [
        *callbacks,
        CheckpointCallback(store, state, phase),
        TrainingPictures(store, state, out),  # after the checkpoint: it records the epoch
        keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard"), profile_batch=0),
    ]


def write_training_pictures(store: CheckpointStore, state: TrainingState, out: Path) -> None:
    """history.json and training-curve.png next to the checkpoints (local or gs://) and in
    `out` (plots.py). A picture never stops a run: a failure is logged and training goes on."""
    if not state.history:
        return
    try:
        plots.write_training_history(state.history, [store.location, LocalLocation(out)])
    except Exception as exc:  # matplotlib, fonts, an upload: none is worth a run
        log.warning("training curve not written", extra={"error": f"{type(exc).__name__}: {exc}"})


class TrainingPictures(keras.callbacks.Callback):
    """Redraws the training curve at the end of every epoch (a few hundred points: well
    under a second), so a long or preempted run always has an up-to-date picture."""

    def __init__(self, store: CheckpointStore, state: TrainingState, out: Path) -> None:
        super().__init__()
        self.store = store
        self.state = state
        self.out = out

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        write_training_pictures(self.store, self.state, self.out)


def recalibrate_batchnorm(model: keras.Model, batches: tf.data.Dataset, steps: int) -> int:
    """Re-estimates trainable BatchNorm moving statistics as the plain average over `steps`
    batches (docs/architecture.md, decision 9: short runs otherwise collapse in inference mode).

    Frozen BatchNorm layers (a pretrained, frozen encoder) keep their statistics. Returns the
    number of batches used.
    """
    layers = [bn for bn in iter_batchnorm_layers(model) if bn.trainable]
    if steps <= 0 or not layers:
        return 0
    momenta = [bn.momentum for bn in layers]
    used = 0
    try:
        for used, (images, _) in enumerate(batches.take(steps).repeat(), start=1):
            for bn in layers:  # moving = ((k-1) * moving + batch) / k: a running mean
                bn.momentum = (used - 1) / used
            model(images, training=True)
            if used >= steps:
                break
    finally:
        for bn, momentum in zip(layers, momenta, strict=True):
            bn.momentum = momentum
    log.info("recalibrated batch norm", extra={"layers": len(layers), "batches": used})
    return used


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """Re-estimates BatchNorm statistics before each validation pass.

    MobileNetV2's BatchNorm layers move their statistics with momentum 0.999: a randomly
    initialised encoder trained for a few hundred steps validates (inference mode) on stale
    statistics, predicts all-background, and early stopping would end training on that noise.
    With a frozen pretrained encoder only the decoder's layers are recalibrated.
    """

    def __init__(self, batches: tf.data.Dataset, steps: int) -> None:
        super().__init__()
        self.batches = batches
        self.steps = steps

    def on_test_begin(self, logs: dict[str, float] | None = None) -> None:
        recalibrate_batchnorm(self.model, self.batches, self.steps)


def _write_training_facts(
    config: TrainConfig, splits: data_lib.Splits, state: TrainingState, out: Path, commit: str
) -> None:
    facts: dict[str, Any] = {
        "dataset": splits.description.get("dataset"),
        "dataset_version": splits.description.get("version"),
        "train_examples": splits.train_size,
        "epochs": state.epoch,
        "history": state.history,
        "config": _jsonable(asdict(config)),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
        "git_commit": commit,
        "numpy_seed": config.seed,
    }
    (out / TRAINING_FACTS).write_text(json.dumps(facts, indent=2, default=str) + "\n")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def load_training_facts(out: Path) -> dict[str, Any]:
    path = out / TRAINING_FACTS
    return json.loads(path.read_text()) if path.exists() else {}
