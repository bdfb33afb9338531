"""A preempted training run resumes from its gs:// checkpoints (real GCS emulator)."""

import json

import keras
import pytest

from model_build.checkpoints import CheckpointStore
from model_build.data import DataConfig
from model_build.train import TrainConfig, train

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class PreemptedError(Exception):
    pass


class PreemptAfter(keras.callbacks.Callback):
    """Stops the process the way a spot VM's preemption does: abruptly, after epoch N."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.epochs:
            raise PreemptedError(f"preempted after epoch {epoch + 1}")


class CountEpochs(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.started = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started.append(epoch + 1)


def test_training_resumes_from_the_latest_gcs_checkpoint(bucket, tmp_path):
    config = TrainConfig(
        data=DataConfig(synthetic_train_size=24, synthetic_test_size=4),
        out=str(tmp_path / "run"),
        checkpoint_dir=f"gs://{bucket.name}/checkpoints/run-1",
        epochs=2,
        fine_tune_epochs=1,
        batch_size=8,
        steps_per_epoch=1,
        encoder_weights=None,
        bn_recalibration_steps=1,
        early_stopping_patience=5,  # off by default; its state must survive when on
        # What is resumed does not depend on the recipe: the lightest one traces fastest.
        augmentation="none",
        loss="ce",
    )
    with pytest.raises(PreemptedError):
        train(config, extra_callbacks=[PreemptAfter(1)])
    store = CheckpointStore(config.checkpoint_uri)
    state = store.load_state()
    assert (state.epoch, state.checkpoint, state.complete) == (1, "ckpt-0001.keras", False)
    # Early stopping's counter is saved with the epoch, so the resumed run continues it.
    assert state.early_stopping["phase"] == "head" and state.early_stopping["wait"] == 0

    counter = CountEpochs()
    final = train(config, extra_callbacks=[counter])
    assert counter.started == [2, 3]  # epoch 1 was not trained again; the fine-tune phase ran
    state = store.load_state()
    assert state.complete and state.epoch == 3 and state.phase_done == ["head", "fine_tune"]
    assert state.early_stopping["phase"] == "fine_tune"
    assert [h["epoch"] for h in state.history] == [1, 2, 3]
    assert [h["phase"] for h in state.history] == ["head", "head", "fine_tune"]
    # Only the newest checkpoints are kept in the bucket, beside the history and its curve.
    names = sorted(b.name for b in bucket.client.list_blobs(bucket, prefix="checkpoints/run-1/"))
    assert names == [
        "checkpoints/run-1/ckpt-0002.keras",
        "checkpoints/run-1/ckpt-0003.keras",
        "checkpoints/run-1/history.json",
        "checkpoints/run-1/state.json",
        "checkpoints/run-1/training-curve.png",
    ]
    facts = json.loads((tmp_path / "run" / "training.json").read_text())
    assert facts["epochs"] == 3 and facts["dataset"] == "synthetic"

    # A finished run is not trained again (safe to run twice on a restarted VM).
    again = CountEpochs()
    assert train(config, extra_callbacks=[again]) == final
    assert again.started == []
