"""The names and defaults of the training recipe's options, free of TensorFlow imports so the
command line can list them without loading it. augment.py, losses.py and train.py implement them.
"""

LOSSES = ("ce", "ce_dice")
DEFAULT_LOSS = "ce_dice"

AUGMENTATIONS = ("none", "basic", "strong")
DEFAULT_AUGMENTATION = "strong"

LR_SCHEDULES = ("constant", "cosine")
DEFAULT_LR_SCHEDULE = "cosine"
DEFAULT_WARMUP_EPOCHS = 3
DEFAULT_WEIGHT_DECAY = 1e-4
