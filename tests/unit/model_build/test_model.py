import keras
import numpy as np
import pytest

from model_build import model as model_lib
from model_build.model import EncoderWeightsUnavailableError, build_unet


@pytest.fixture(scope="module")
def unet():
    return build_unet(encoder_weights=None)


def test_output_shape_and_dtype(unet):
    logits = unet(np.zeros((2, 128, 128, 3), np.uint8), training=False)
    assert tuple(logits.shape) == (2, 128, 128, 3)
    assert logits.dtype == "float32"


def test_parameter_count_matches_the_tutorial(unet):
    # The TensorFlow segmentation tutorial's summary: Total params: 6,504,227.
    assert unet.count_params() == 6_504_227


def test_input_contract_is_uint8_rgb_and_rescaling_is_inside(unet):
    assert unet.input.dtype == "uint8"
    assert tuple(unet.input.shape) == (None, 128, 128, 3)
    rescale = unet.get_layer("rescale")
    out = rescale(np.array([[0, 127.5, 255]], np.float32))
    np.testing.assert_allclose(np.asarray(out), [[-1.0, 0.0, 1.0]], atol=1e-6)


def test_skip_connections_and_decoder_follow_the_tutorial(unet):
    encoder = unet.get_layer(model_lib.ENCODER_NAME)
    for output, name in zip(encoder.outputs, model_lib.SKIP_LAYERS, strict=True):
        assert output is encoder.get_layer(name).output
    spatial = [tuple(t.shape[1:3]) for t in encoder.outputs]
    assert spatial == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
    for filters in (512, 256, 128, 64):
        block = unet.get_layer(f"up_{filters}")
        transpose = block.layers[0]
        assert isinstance(transpose, keras.layers.Conv2DTranspose)
        assert transpose.filters == filters and transpose.strides == (2, 2)
    last = unet.get_layer("logits_upsample")
    assert last.filters == 3 and last.kernel_size == (3, 3) and last.strides == (2, 2)


def test_random_encoder_trains_even_when_freezing_is_asked(unet):
    # A frozen random encoder is useless (docs/architecture.md, decision 9).
    assert unet.get_layer(model_lib.ENCODER_NAME).trainable


def test_set_encoder_trainable_toggles_the_encoder():
    unet = build_unet(encoder_weights=None)
    model_lib.set_encoder_trainable(unet, False)
    frozen = len(unet.trainable_weights)
    model_lib.set_encoder_trainable(unet, True)
    assert len(unet.trainable_weights) > frozen


def test_imagenet_weights_offline_fail_with_an_error_that_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached weights file

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.applications.mobilenet_v2.file_utils.get_file", offline)
    with pytest.raises(EncoderWeightsUnavailableError) as info:
        build_unet(encoder_weights="imagenet")
    message = str(info.value)
    assert "--encoder-weights none" in message
    assert str(tmp_path / "models") in message


def test_iter_batchnorm_layers_finds_nested_layers(unet):
    layers = list(model_lib.iter_batchnorm_layers(unet))
    # 52 in MobileNetV2 up to block_16_project, plus one per decoder block.
    assert len(layers) == 54
