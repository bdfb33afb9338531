"""The U-Net of the TensorFlow image segmentation tutorial, as a pure builder.

MobileNetV2 encoder (skips at five of its layers) and a pix2pix-style decoder of transposed
convolutions. The model takes uint8 RGB and rescales inside, so every consumer (the Cloud Function,
the TFLite variants) feeds raw pixels: see docs/architecture.md, decision 5.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, Literal

import keras
from segmentation.contract import CLASS_NAMES  # the output's class order: the model contract's

from model_build.config import IMAGE_SIZE

NUM_CLASSES = len(CLASS_NAMES)

SKIP_LAYERS = (
    "block_1_expand_relu",  # 64x64
    "block_3_expand_relu",  # 32x32
    "block_6_expand_relu",  # 16x16
    "block_13_expand_relu",  # 8x8
    "block_16_project",  # 4x4
)
DECODER_FILTERS = (512, 256, 128, 64)
ENCODER_NAME = "encoder"

EncoderWeights = Literal["imagenet"] | None

# Policies that compute in 16 bits while keeping float32 variables (training speed on a GPU).
MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")
HALF_FLOATS = ("float16", "bfloat16")


class EncoderWeightsUnavailableError(RuntimeError):
    """The pretrained encoder weights could not be downloaded (offline machine)."""


def build_unet(
    image_size: int = IMAGE_SIZE,
    num_classes: int = NUM_CLASSES,
    encoder_weights: EncoderWeights = "imagenet",
    freeze_encoder: bool = True,
) -> keras.Model:
    """Builds the tutorial's U-Net: uint8 [N, size, size, 3] in, float32 logits out.

    `encoder_weights="imagenet"` downloads MobileNetV2's ImageNet weights (the cloud default);
    `None` starts from random weights, in which case the encoder must train (freeze_encoder is
    ignored: a frozen random encoder is useless, docs/architecture.md decision 9).
    """
    encoder = build_encoder(image_size, encoder_weights)
    encoder.trainable = not (freeze_encoder and encoder_weights is not None)

    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="image")
    # MobileNetV2 expects [-1, 1]; rescaling inside the model keeps the uint8 contract.
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    skips = encoder(x)
    x = skips[-1]
    for filters, skip in zip(DECODER_FILTERS, reversed(skips[:-1]), strict=True):
        x = upsample_block(filters, name=f"up_{filters}")(x)
        x = keras.layers.Concatenate(name=f"concat_{filters}")([x, skip])
    x = keras.layers.Conv2DTranspose(
        num_classes, 3, strides=2, padding="same", name="logits_upsample"
    )(x)
    # float32 logits even under a mixed_float16 policy.
    outputs = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="unet_mobilenetv2")


def build_encoder(image_size: int, encoder_weights: EncoderWeights) -> keras.Model:
    """MobileNetV2 without its head, returning the five skip activations."""
    try:
        base = keras.applications.MobileNetV2(
            input_shape=(image_size, image_size, 3),
            include_top=False,
            weights=encoder_weights,
        )
    except Exception as exc:
        if encoder_weights is None:
            raise
        raise EncoderWeightsUnavailableError(
            f"could not load MobileNetV2 '{encoder_weights}' weights ({exc}). This machine is "
            "probably offline. Either train from scratch with --encoder-weights none "
            "(build_unet(encoder_weights=None)), or place the weights file in "
            f"{os.path.join(_keras_home(), 'models')} beforehand."
        ) from exc
    outputs = [base.get_layer(name).output for name in SKIP_LAYERS]
    return keras.Model(base.input, outputs, name=ENCODER_NAME)


def _keras_home() -> str:
    return os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))


def upsample_block(filters: int, size: int = 3, name: str | None = None) -> keras.Sequential:
    """pix2pix's upsample: Conv2DTranspose (stride 2, no bias) -> BatchNorm -> ReLU."""
    return keras.Sequential(
        [
            keras.layers.Conv2DTranspose(
                filters,
                size,
                strides=2,
                padding="same",
                kernel_initializer=keras.initializers.RandomNormal(0.0, 0.02),
                use_bias=False,
            ),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
        ],
        name=name,
    )


def set_encoder_trainable(model: keras.Model, trainable: bool) -> None:
    """Freezes or unfreezes the encoder (the fine-tune phase unfreezes it)."""
    model.get_layer(ENCODER_NAME).trainable = trainable


def iter_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """`layer` and every layer inside it, nested models included."""
    yield layer
    for child in getattr(layer, "layers", ()):
        yield from iter_layers(child)


def iter_batchnorm_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer inside `layer`, nested models included."""
    for child in iter_layers(layer):
        if isinstance(child, keras.layers.BatchNormalization):
            yield child


@contextlib.contextmanager
def global_policy(name: str) -> Iterator[None]:
    """Sets Keras' global dtype policy for the block and restores the previous one after."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def uses_mixed_precision(model: keras.Model) -> bool:
    return any(layer.dtype_policy.name in MIXED_POLICIES for layer in iter_layers(model))


def as_float32(model: keras.Model) -> keras.Model:
    """The same model computing in float32: what conversion, evaluation and serving need.

    A model built under a mixed policy keeps that policy per layer (also in model.keras), so its
    export would compute in float16. The model is rebuilt from its config with every mixed policy
    replaced by float32, and its weights are copied over: mixed policies keep float32 variables,
    so nothing is lost. The copy has no optimizer (it is for inference). A float32 model is
    returned as it is.
    """
    if not uses_mixed_precision(model):
        return model
    config = _without_mixed_policies(keras.saving.serialize_keras_object(model))
    config.pop("compile_config", None)  # inference only: no optimizer, no loss
    with global_policy("float32"):
        clone = keras.saving.deserialize_keras_object(config)
    clone.set_weights(model.get_weights())
    return clone


def _without_mixed_policies(config: Any) -> Any:
    """The config with float32 for every mixed policy and every 16-bit float tensor dtype.

    Besides each layer's policy, a functional config records the dtype of every tensor between
    layers (`__keras_tensor__` entries, float16 under mixed_float16); a nested model casts its
    inputs to those, so they must change too. The U-Net has no deliberate 16-bit float.
    """
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy":
            name = config.get("config", {}).get("name")
            if name in MIXED_POLICIES:
                return {**config, "config": {**config["config"], "name": "float32"}}
        return {
            key: "float32"
            if key == "dtype" and value in HALF_FLOATS
            else _without_mixed_policies(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_without_mixed_policies(value) for value in config]
    if isinstance(config, str) and config in MIXED_POLICIES:  # a policy as a bare name
        return "float32"
    return config
