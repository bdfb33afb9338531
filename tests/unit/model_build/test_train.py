import keras
import numpy as np
import pytest
import tensorflow as tf

from model_build.cli import build_parser, train_config
from model_build.train import RecalibrateBatchNorm, TrainConfig, recalibrate_batchnorm


def _bn_model(momentum=0.999):
    inputs = keras.Input((4,))
    outputs = keras.layers.BatchNormalization(momentum=momentum, name="bn")(inputs)
    return keras.Model(inputs, outputs)


def _batches(values):
    return tf.data.Dataset.from_tensor_slices(
        (np.asarray(values, np.float32), np.zeros(len(values)))
    ).batch(2)


def test_recalibration_sets_moving_stats_to_the_average_batch_statistics():
    model = _bn_model()
    bn = model.get_layer("bn")
    # Two batches with means 1 and 5: the recalibrated moving mean is exactly their average.
    data = _batches([[0.0] * 4, [2.0] * 4, [4.0] * 4, [6.0] * 4])
    used = recalibrate_batchnorm(model, data, steps=2)
    assert used == 2
    np.testing.assert_allclose(bn.moving_mean.numpy(), [3.0] * 4, rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), [1.0] * 4, rtol=1e-5)
    assert bn.momentum == 0.999  # restored


def test_recalibration_leaves_frozen_batchnorm_alone():
    model = _bn_model()
    model.get_layer("bn").trainable = False
    assert recalibrate_batchnorm(model, _batches([[9.0] * 4] * 4), steps=2) == 0
    np.testing.assert_array_equal(model.get_layer("bn").moving_mean.numpy(), [0.0] * 4)


def test_recalibration_runs_before_each_validation_pass():
    model = _bn_model()
    callback = RecalibrateBatchNorm(_batches([[4.0] * 4] * 4), steps=2)
    callback.set_model(model)
    callback.on_test_begin()
    np.testing.assert_allclose(model.get_layer("bn").moving_mean.numpy(), [4.0] * 4)


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 0), ("batch_size", 0), ("mixed_precision", "maybe"), ("encoder_weights", "x")],
)
def test_train_config_names_the_bad_setting(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_cli_chooses_encoder_weights_by_data_source(tmp_path):
    parser = build_parser()
    synthetic = train_config(parser.parse_args(["train", "--out", str(tmp_path)]))
    assert synthetic.encoder_weights is None and synthetic.data.source == "synthetic"
    folder = train_config(parser.parse_args(["train", "--out", "o", "--data-dir", str(tmp_path)]))
    assert folder.encoder_weights == "imagenet" and folder.data.source == "folder"
    explicit = parser.parse_args(["train", "--out", "o", "--data", "oxford"])
    explicit.encoder_weights = "none"
    assert train_config(explicit).encoder_weights is None


def test_cli_reports_a_step_run_out_of_order(tmp_path, capsys):
    from model_build.cli import main

    assert main(["convert", "--out", str(tmp_path)]) == 1
    assert "run `python -m model_build train` first" in capsys.readouterr().err


def _flat_loss_fit(callbacks, initial_epoch, epochs):
    """Fits a tiny model whose loss never improves (learning rate 0); returns epochs run."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = np.ones((4, 2), np.float32)
    history = model.fit(
        x, x[:, :1], initial_epoch=initial_epoch, epochs=epochs, callbacks=callbacks, verbose=0
    )
    return len(history.history["loss"])


def test_early_stopping_patience_survives_a_preemption(tmp_path):
    from model_build.checkpoints import CheckpointStore, TrainingState
    from model_build.train import _callbacks

    config = TrainConfig(out=str(tmp_path), early_stopping_patience=2, validation_fraction=0)
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    state = TrainingState()
    # Epoch 1 sets the best loss, epoch 2 does not improve: one epoch of patience used.
    assert _flat_loss_fit(_callbacks(config, store, state, "head", tmp_path), 0, 2) == 2
    saved = store.load_state()  # what a restarted VM reads
    assert saved.early_stopping["wait"] == 1 and saved.early_stopping["phase"] == "head"

    # Resumed: the second epoch without improvement ends the phase at once.
    callbacks = _callbacks(config, store, saved, "head", tmp_path)
    assert _flat_loss_fit(callbacks, 2, 10) == 1
    # A new phase starts with fresh patience.
    fresh = _callbacks(config, store, store.load_state(), "fine_tune", tmp_path)
    assert _flat_loss_fit(fresh, 3, 10) == 3
