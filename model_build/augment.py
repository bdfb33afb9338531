"""Training augmentations: the same geometry on image and mask, colour on the image only.

Every function takes `(image uint8 [S, S, 3], mask uint8 [S, S], seed int [2])` and is built
from stateless ops, so a seed always gives the same result (tests, resumed runs).

  basic   horizontal flip, square zoom into 70-100% of the side, brightness and contrast
  strong  one affine warp per example (random resized crop of 30-100% of the area with aspect
          3/4-4/3, rotation up to ±15°, flip, reflected borders) plus brightness, contrast,
          saturation and hue. With 300 training photos and no pretrained encoder the basic set
          overfits from about epoch 90; geometry diversity is what the encoder lacks.
"""

from __future__ import annotations

import math

import tensorflow as tf

from model_build.config import AUGMENTATIONS

MIN_AREA, MAX_AREA = 0.30, 1.0
MAX_LOG_ASPECT = math.log(4 / 3)
MAX_ROTATION = math.radians(15)


def basic(
    image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, photometric: bool = True
) -> tuple[tf.Tensor, tf.Tensor]:
    """Random flip and zoom applied identically to image and mask; colour jitter on the image."""
    size = tf.shape(image)[0]
    flip = tf.random.stateless_uniform([], seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)

    # Zoom: one random box (70-100% of the side) cut from both tensors and resized back.
    scale = tf.random.stateless_uniform([], seed + 1, 0.7, 1.0)
    offset = tf.random.stateless_uniform([2], seed + 2) * (1.0 - scale)
    box = tf.stack([offset[0], offset[1], offset[0] + scale, offset[1] + scale])[tf.newaxis]
    crop = tf.stack([size, size])
    image_f = tf.image.crop_and_resize(
        tf.cast(image, tf.float32)[tf.newaxis], box, [0], crop, method="bilinear"
    )[0]
    mask_f = tf.image.crop_and_resize(
        tf.cast(mask, tf.float32)[tf.newaxis, ..., tf.newaxis], box, [0], crop, method="nearest"
    )[0, ..., 0]

    if photometric:
        image_f = tf.image.stateless_random_brightness(image_f, 25.0, seed + 3)
        image_f = tf.image.stateless_random_contrast(image_f, 0.8, 1.2, seed + 4)
    image = tf.cast(tf.clip_by_value(tf.round(image_f), 0, 255), tf.uint8)
    return image, tf.cast(mask_f, tf.uint8)


def strong(
    image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, photometric: bool = True
) -> tuple[tf.Tensor, tf.Tensor]:
    """A random resized crop with rotation and flip (one warp), then colour jitter."""
    transform = _random_affine(tf.shape(image)[0], seed)
    image_f = _warp(tf.cast(image, tf.float32), transform, "BILINEAR")
    mask_f = _warp(tf.cast(mask, tf.float32)[..., tf.newaxis], transform, "NEAREST")[..., 0]
    if photometric:
        image_f = _colour_jitter(image_f, seed + 10)
    image = tf.cast(tf.clip_by_value(tf.round(image_f), 0, 255), tf.uint8)
    return image, tf.cast(mask_f, tf.uint8)


def _random_affine(size: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The [8] projective transform mapping output pixels to input pixels."""
    side = tf.cast(size, tf.float32)
    area = tf.random.stateless_uniform([], seed, MIN_AREA, MAX_AREA)
    log_aspect = tf.random.stateless_uniform([], seed + 1, -MAX_LOG_ASPECT, MAX_LOG_ASPECT)
    aspect = tf.exp(log_aspect)
    crop_w = tf.minimum(tf.sqrt(area * aspect), 1.0)
    crop_h = tf.minimum(tf.sqrt(area / aspect), 1.0)
    # Crop centre anywhere the crop stays inside the image (before rotation).
    centre = tf.random.stateless_uniform([2], seed + 2)
    centre_x = (crop_w / 2 + centre[0] * (1 - crop_w)) * side
    centre_y = (crop_h / 2 + centre[1] * (1 - crop_h)) * side
    angle = tf.random.stateless_uniform([], seed + 3, -MAX_ROTATION, MAX_ROTATION)
    flip = tf.where(tf.random.stateless_uniform([], seed + 4) < 0.5, -1.0, 1.0)

    cos, sin = tf.cos(angle), tf.sin(angle)
    # input = centre + R(angle) @ diag(flip * crop_w, crop_h) @ (output - side / 2)
    a0, a1 = cos * flip * crop_w, -sin * crop_h
    b0, b1 = sin * flip * crop_w, cos * crop_h
    half = side / 2
    a2 = centre_x - a0 * half - a1 * half
    b2 = centre_y - b0 * half - b1 * half
    return tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])


def _warp(image: tf.Tensor, transform: tf.Tensor, interpolation: str) -> tf.Tensor:
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform[tf.newaxis],
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode="REFLECT",
    )[0]


def _colour_jitter(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Brightness, contrast, saturation and hue on a float [0, 255] RGB image."""
    unit = image / 255.0
    unit = tf.image.stateless_random_brightness(unit, 0.12, seed)
    unit = tf.image.stateless_random_contrast(unit, 0.75, 1.25, seed + 1)
    unit = tf.image.stateless_random_saturation(tf.clip_by_value(unit, 0, 1), 0.7, 1.3, seed + 2)
    unit = tf.image.stateless_random_hue(unit, 0.04, seed + 3)
    return unit * 255.0


BACKGROUND_CLASS = 1  # CLASS_NAMES order: pet, background, border


def copy_paste(
    images: tf.Tensor, masks: tf.Tensor, seed: tf.Tensor, probability: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Pastes the pet (pet and border pixels) of another example of the batch onto each
    example with `probability` (Ghiasi et al., "Simple Copy-Paste", CVPR 2021).

    Runs on a batch after the per-example warp, so the pasted pet has its own crop, rotation
    and flip; pasted pixels take the pasted labels, so image and mask stay consistent.
    """
    count = tf.shape(images)[0]
    donors = tf.roll(tf.range(count), shift=1, axis=0)  # each example's neighbour
    paste = tf.random.stateless_uniform([count], seed) < probability
    donor_masks = tf.gather(masks, donors)
    region = (donor_masks != BACKGROUND_CLASS) & paste[:, tf.newaxis, tf.newaxis]
    images = tf.where(region[..., tf.newaxis], tf.gather(images, donors), images)
    masks = tf.where(region, donor_masks, masks)
    return images, masks


def by_name(name: str):
    """The augmentation function called `name` (None for "none")."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augmentation {name!r} is not one of {', '.join(AUGMENTATIONS)}")
    return {"none": None, "basic": basic, "strong": strong}[name]
