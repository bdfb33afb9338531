"""A model trained under mixed_float16 (the GPU VM) reaches conversion and evaluation in float32."""

import json

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from model_build import convert, steps
from model_build import model as model_lib
from model_build.train import KERAS_MODEL, _precision_policy, save_final_model


@pytest.fixture(scope="module")
def mixed_unet():
    """The U-Net built under the GPU's policy, with BatchNorm statistics that are not the
    initial ones (a trained model's), and a forward pass in float16 on the CPU."""
    with model_lib.global_policy("mixed_float16"):
        model = build_mixed()
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    return model


def build_mixed():
    model = model_lib.build_unet(encoder_weights=None)
    rng = np.random.default_rng(0)
    for bn in model_lib.iter_batchnorm_layers(model):
        bn.moving_mean.assign(rng.normal(0, 0.1, bn.moving_mean.shape))
        bn.moving_variance.assign(rng.uniform(0.5, 1.5, bn.moving_variance.shape))
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)


def _policies(model):
    return {layer.dtype_policy.name for layer in model_lib.iter_layers(model)}


def test_the_mixed_model_really_computes_in_float16(mixed_unet):
    assert "mixed_float16" in _policies(mixed_unet)
    assert mixed_unet.get_layer("rescale").compute_dtype == "float16"
    assert {v.dtype for v in mixed_unet.weights} == {"float32"}  # variables stay float32


def test_as_float32_keeps_the_weights_and_computes_in_float32(mixed_unet, images):
    model = model_lib.as_float32(mixed_unet)
    assert _policies(model) == {"float32"}
    for ours, theirs in zip(model.weights, mixed_unet.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # Exactly what a float32 build with these weights predicts; close to the float16 compute.
    reference = model_lib.build_unet(encoder_weights=None)
    reference.set_weights(mixed_unet.get_weights())
    expected = reference.predict(images, verbose=0)
    scale = np.abs(expected).max()
    got = model.predict(images, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3 * scale)
    mixed = mixed_unet.predict(images, verbose=0)
    assert np.abs(mixed - expected).max() < 0.05 * scale
    assert np.mean(mixed.argmax(-1) == got.argmax(-1)) > 0.95
    # No tensor between layers stays float16 either (a nested model would cast back to it).
    assert '"float16"' not in json.dumps(keras.saving.serialize_keras_object(model))
    assert model_lib.as_float32(model) is model  # already float32: unchanged


def test_the_final_model_and_what_convert_loads_are_float32(mixed_unet, tmp_path):
    save_final_model(mixed_unet, tmp_path / KERAS_MODEL)
    saved = keras.models.load_model(tmp_path / KERAS_MODEL)
    assert _policies(saved) == {"float32"}
    loaded = steps.load_keras_model(tmp_path)  # what convert and evaluate use
    assert _policies(loaded) == {"float32"}
    for ours, theirs in zip(loaded.weights, mixed_unet.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())  # the trained weights


def test_a_mixed_model_keras_from_an_older_run_is_loaded_in_float32(mixed_unet, tmp_path):
    (tmp_path / KERAS_MODEL).parent.mkdir(parents=True)
    mixed_unet.save(tmp_path / KERAS_MODEL)  # as train saved it before the fix
    assert _policies(steps.load_keras_model(tmp_path)) == {"float32"}


def test_the_float32_variant_of_a_mixed_model_has_no_float16_tensor(mixed_unet, images, tmp_path):
    paths = convert.convert_all(mixed_unet, tmp_path, lambda: [], variants=("float32",))
    interpreter = Interpreter(model_path=str(paths["float32"]))
    interpreter.allocate_tensors()
    dtypes = {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    assert "float16" not in dtypes
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], images[:1])
    interpreter.invoke()
    logits = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    expected = model_lib.as_float32(mixed_unet).predict(images[:1], verbose=0)
    np.testing.assert_allclose(logits, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_precision_policy_follows_the_setting():
    assert _precision_policy("on") == "mixed_float16"
    assert _precision_policy("off") == "float32"
    assert _precision_policy("auto") == "float32"  # no GPU here


def test_global_policy_is_restored_even_after_an_error():
    with pytest.raises(RuntimeError), model_lib.global_policy("mixed_float16"):
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        raise RuntimeError("training failed")
    assert keras.mixed_precision.global_policy().name == "float32"
