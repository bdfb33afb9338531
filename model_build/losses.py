"""Training losses over integer masks and float logits.

ce        sparse categorical cross-entropy (the tutorial's loss)
ce_dice   cross-entropy + soft Dice averaged over the classes. The border class is about
          a tenth of a photo's pixels; cross-entropy alone lets the model trade it away,
          Dice weighs each class's overlap equally (Milletari et al., V-Net, 2016).
"""

from __future__ import annotations

import keras
from keras import ops

from model_build.config import LOSSES


@keras.saving.register_keras_serializable(package="model_build")
class CrossEntropyDice(keras.losses.Loss):
    """Cross-entropy on logits plus `dice_weight` x (1 - mean soft Dice over classes).

    Dice is computed over the whole batch (not per image): an image without a class
    would otherwise score that class 0 whatever the model predicts.
    """

    def __init__(
        self, dice_weight: float = 1.0, smooth: float = 1.0, name: str = "ce_dice", **kwargs
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.dice_weight = dice_weight
        self.smooth = smooth

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        labels = ops.cast(ops.reshape(y_true, ops.shape(logits)[:-1]), "int32")
        ce = ops.mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )
        probs = ops.softmax(logits, axis=-1)
        one_hot = ops.one_hot(labels, ops.shape(logits)[-1], dtype="float32")
        axes = (0, 1, 2)
        overlap = ops.sum(probs * one_hot, axis=axes)
        total = ops.sum(probs, axis=axes) + ops.sum(one_hot, axis=axes)
        dice = (2.0 * overlap + self.smooth) / (total + self.smooth)
        # One value per batch; Keras' reduction averages a scalar to itself.
        return ce + self.dice_weight * (1.0 - ops.mean(dice))

    def get_config(self) -> dict:
        return {**super().get_config(), "dice_weight": self.dice_weight, "smooth": self.smooth}


def by_name(name: str) -> keras.losses.Loss:
    if name not in LOSSES:
        raise ValueError(f"loss {name!r} is not one of {', '.join(LOSSES)}")
    if name == "ce":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return CrossEntropyDice()
