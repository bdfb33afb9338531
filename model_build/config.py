"""Settings that the command line needs before anything heavy loads: the data source, the
training recipe's option names and defaults, the evaluation defaults, the model's input size.

Nothing here imports TensorFlow or Keras, so `python -m model_build --help` answers at once;
data.py, augment.py, losses.py, train.py and evaluate.py implement what these names select.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_SIZE = 128  # the tutorial's U-Net input (and the function's, through the manifest)

SOURCES = ("synthetic", "oxford", "folder")

LOSSES = ("ce", "ce_dice")
DEFAULT_LOSS = "ce_dice"

AUGMENTATIONS = ("none", "basic", "strong")
DEFAULT_AUGMENTATION = "strong"

LR_SCHEDULES = ("constant", "cosine")
DEFAULT_LR_SCHEDULE = "cosine"
DEFAULT_WARMUP_EPOCHS = 3
DEFAULT_WEIGHT_DECAY = 1e-4
DEFAULT_COPY_PASTE = 0.0

DEFAULT_TOLERANCE_POINTS = 1.0
# The deployed function runs NUM_THREADS=1 on 1 vCPU (infra's default and the function's):
# a variant is chosen by its 1-thread latency.
DEFAULT_SELECTION_THREADS = 1


# The training settings a manifest records (TrainConfig field names): enough to tell two
# recipes apart.
RECIPE_KEYS = (
    "fine_tune_epochs",
    "fine_tune_learning_rate",
    "bn_recalibration_steps",
    "encoder_weights",
    "batch_size",
    "learning_rate",
    "loss",
    "augmentation",
    "copy_paste",
    "lr_schedule",
    "warmup_epochs",
    "weight_decay",
    "validation_fraction",
)


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"
    data_dir: str | None = None
    tfds_data_dir: str | None = None
    image_size: int = IMAGE_SIZE
    synthetic_train_size: int = 512
    synthetic_test_size: int = 128
    seed: int = 0
    # Breeds kept out of training (folder source; the test split keeps them), so a score shows
    # quality on breeds the model never saw next to the breeds it did.
    holdout_breeds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"data source {self.source!r} is not one of {', '.join(SOURCES)}")
        if self.source == "folder" and not self.data_dir:
            raise ValueError("data source 'folder' needs data_dir (--data-dir PATH)")
        if self.holdout_breeds and self.source != "folder":
            raise ValueError("holding out breeds (--holdout-breed) needs the folder source")
