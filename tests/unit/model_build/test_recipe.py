"""The training recipe's pieces: the Dice loss, the learning-rate schedule, the option checks."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from model_build import losses
from model_build.cli import build_parser, train_config
from model_build.train import TrainConfig, learning_rate_schedule


def _ce_dice_by_hand(labels: np.ndarray, logits: np.ndarray, smooth: float = 1.0) -> float:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    one_hot = np.eye(logits.shape[-1])[labels]
    ce = -np.mean(np.log(np.sum(probs * one_hot, axis=-1)))
    overlap = (probs * one_hot).sum(axis=(0, 1, 2))
    total = probs.sum(axis=(0, 1, 2)) + one_hot.sum(axis=(0, 1, 2))
    dice = (2 * overlap + smooth) / (total + smooth)
    return float(ce + 1.0 - dice.mean())


def test_ce_dice_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(2, 4, 4))
    logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    value = float(losses.CrossEntropyDice()(labels, logits))
    assert value == pytest.approx(_ce_dice_by_hand(labels, logits), rel=1e-5)


def test_ce_dice_rewards_the_rare_class_more_than_cross_entropy_alone():
    """Missing a thin class costs little cross-entropy but a whole Dice term."""
    labels = np.ones((1, 8, 8), np.int64)
    labels[0, 0, :] = 2  # one row of "border": 1/8 of the pixels
    right = np.where(np.eye(3)[labels] > 0, 4.0, -4.0).astype(np.float32)
    wrong = right.copy()
    wrong[0, 0, :] = [-4.0, 4.0, -4.0]  # the border row called background
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    dice = losses.CrossEntropyDice()
    ce_gap = float(ce(labels, wrong)) - float(ce(labels, right))
    dice_gap = float(dice(labels, wrong)) - float(dice(labels, right))
    assert dice_gap > ce_gap + 0.25


def test_ce_dice_survives_a_saved_and_loaded_compiled_model(tmp_path):
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    model.compile(optimizer="adam", loss=losses.CrossEntropyDice(dice_weight=0.5))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.loss, losses.CrossEntropyDice) and loaded.loss.dice_weight == 0.5


def test_cosine_schedule_warms_up_then_decays_to_zero():
    config = TrainConfig(lr_schedule="cosine", warmup_epochs=2)
    schedule = learning_rate_schedule(config, peak=1e-3, total_steps=100, steps_per_epoch=10)
    rate = [float(schedule(step)) for step in (0, 10, 20, 60, 100)]
    assert rate[0] == 0.0
    assert rate[1] == pytest.approx(5e-4)  # half-way through the warmup
    assert rate[2] == pytest.approx(1e-3)  # the peak
    assert rate[3] == pytest.approx(5e-4, rel=1e-3)  # half-way through the decay
    assert rate[4] == pytest.approx(0.0, abs=1e-9)


def test_constant_schedule_is_the_peak():
    config = TrainConfig(lr_schedule="constant")
    assert learning_rate_schedule(config, 3e-4, total_steps=50, steps_per_epoch=5) == 3e-4


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("loss", "focal"),
        ("augmentation", "wild"),
        ("lr_schedule", "step"),
        ("weight_decay", -1),
        ("copy_paste", 1.5),
    ],
)
def test_recipe_settings_are_checked(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_cli_passes_the_recipe_through(tmp_path):
    args = build_parser().parse_args(
        [
            "train",
            "--out",
            str(tmp_path),
            "--loss",
            "ce",
            "--augmentation",
            "basic",
            "--lr-schedule",
            "constant",
            "--weight-decay",
            "0",
            "--warmup-epochs",
            "1",
        ]
    )
    config = train_config(args)
    assert (config.loss, config.augmentation, config.lr_schedule) == ("ce", "basic", "constant")
    assert (config.weight_decay, config.warmup_epochs) == (0.0, 1)
    defaults = train_config(build_parser().parse_args(["train", "--out", str(tmp_path)]))
    assert (defaults.loss, defaults.augmentation, defaults.lr_schedule) == (
        "ce_dice",
        "strong",
        "cosine",
    )


def test_help_loads_no_tensorflow_and_shows_defaults():
    """`python -m model_build STEP --help` answers before TensorFlow or Keras is imported."""
    import subprocess
    import sys

    probe = (
        "import sys, contextlib, io\n"
        "from model_build.cli import build_parser\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    build_parser().parse_args(['train', '--help'])\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "print(heavy, 'default: ce_dice' in out.getvalue())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[] True"
    assert result.stderr == ""


def test_progress_is_plain_when_nobody_watches(monkeypatch, capsys):
    """Bars only on a terminal: the VM's logs and CI keep one line per epoch."""
    import io

    from model_build import progress

    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert list(progress.bar(range(3), "evaluate", "variant")) == [0, 1, 2]
    assert progress.keras_verbosity() == 2
    assert capsys.readouterr().err == ""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert progress.keras_verbosity() == 1
    assert list(progress.bar(range(3), "evaluate", "variant")) == [0, 1, 2]
    assert "evaluate" in terminal.getvalue()
