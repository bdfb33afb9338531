"""One interface over three data sources, and the tf.data pipeline for training.

Sources (`DataConfig.source`):
  oxford     tensorflow-datasets `oxford_iiit_pet` (downloads; `tfds_data_dir` may be gs://)
  folder     a local folder in the Oxford-IIIT layout (`data_dir`), see oxford_folder.py
  synthetic  seeded pet-like scenes, see synthetic.py (offline machines, tests)

Every source yields (uint8 image [S, S, 3], uint8 mask [S, S]) with classes 0 pet, 1 background,
2 border: the Oxford trimap values 1/2/3 shifted down by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image

from model_build import augment as augment_lib
from model_build import oxford_folder, provenance
from model_build.config import DataConfig
from model_build.synthetic import synthetic_example

TFDS_NAME = "oxford_iiit_pet"


@dataclass
class Splits:
    train: tf.data.Dataset  # unbatched (image, mask)
    test: tf.data.Dataset
    train_size: int
    test_size: int
    description: dict[str, Any] = field(default_factory=dict)
    test_names: list[str] | None = None  # example names where the source has them


def load_splits(config: DataConfig) -> Splits:
    """The training and held-out splits of the configured source."""
    if config.source == "synthetic":
        return _synthetic_splits(config)
    if config.source == "folder":
        return _folder_splits(config)
    return _tfds_splits(config)


def _synthetic_splits(config: DataConfig) -> Splits:
    # Test examples come from index ranges disjoint from training, so they are truly held out.
    train = synthetic_arrays(range(config.synthetic_train_size), config.seed, config.image_size)
    test_indices = range(10**6, 10**6 + config.synthetic_test_size)
    test = synthetic_arrays(test_indices, config.seed, config.image_size)
    description = {"dataset": "synthetic", "version": "1", "seed": config.seed}
    return Splits(
        _from_arrays(*train), _from_arrays(*test), len(train[0]), len(test[0]), description
    )


def synthetic_arrays(indices: range, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic examples resized to size x size: (uint8 [N,S,S,3], uint8 [N,S,S])."""
    images, masks = [], []
    for index in indices:
        image, mask = synthetic_example(index, seed)
        images.append(_resize(image, size, Image.Resampling.BILINEAR))
        masks.append(_resize(mask, size, Image.Resampling.NEAREST))
    return np.stack(images), np.stack(masks)


def _resize(array: np.ndarray, size: int, method: Image.Resampling) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((size, size), method))


def _folder_splits(config: DataConfig) -> Splits:
    root = Path(str(config.data_dir))
    listed_train, test_names = oxford_folder.split_names(root)
    unused = oxford_folder.unused_files(root, listed_train, test_names)
    train_names = oxford_folder.without_breeds(listed_train, config.holdout_breeds)
    train = oxford_folder.load_split(root, train_names, config.image_size)
    test = oxford_folder.load_split(root, test_names, config.image_size)
    description = {
        "dataset": f"folder:{root.name}",
        "version": "local",
        "train_examples": len(train.names),
        "test_examples": len(test.names),
        "fingerprint": provenance.fingerprint(root, [*train.files, *test.files]),
        "skipped": dict(train.skipped + test.skipped + unused),
        "quirks": dict(train.quirks + test.quirks),
    }
    breeds = oxford_folder.breeds_of(train.names)
    if breeds:  # which breeds the model saw, so a score can tell the ones it never saw
        description["train_breeds"] = breeds
    if config.holdout_breeds:
        description["holdout_breeds"] = sorted(set(config.holdout_breeds))
        description["held_out_train_names"] = len(listed_train) - len(train_names)
    return Splits(
        _from_arrays(train.images, train.masks),
        _from_arrays(test.images, test.masks),
        len(train.names),
        len(test.names),
        description,
        test_names=test.names,
    )


def _tfds_splits(config: DataConfig) -> Splits:
    import tensorflow_datasets as tfds  # heavy; only this source needs it

    (train, test), info = tfds.load(
        f"{TFDS_NAME}:4.*.*",
        split=["train", "test"],
        data_dir=config.tfds_data_dir,
        with_info=True,
    )
    size = config.image_size

    def to_example(features: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        return tfds_example(features["image"], features["segmentation_mask"], size)

    description = {"dataset": TFDS_NAME, "version": str(info.version)}
    return Splits(
        train.map(to_example, num_parallel_calls=tf.data.AUTOTUNE),
        test.map(to_example, num_parallel_calls=tf.data.AUTOTUNE),
        _split_size(train, info, "train"),
        _split_size(test, info, "test"),
        description,
    )


def _split_size(dataset: tf.data.Dataset, info: Any, split: str) -> int:
    """tfds datasets carry their cardinality; the dataset info is the fallback."""
    cardinality = int(dataset.cardinality())
    return cardinality if cardinality >= 0 else info.splits[split].num_examples


def tfds_example(image: tf.Tensor, trimap: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Resizes one tfds example and maps the trimap 1/2/3 to classes 0/1/2."""
    image = tf.image.resize(image, (size, size), method="bilinear")
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    mask = tf.image.resize(trimap, (size, size), method="nearest")
    mask = tf.cast(mask, tf.int32)[..., 0] - 1
    return image, tf.cast(tf.clip_by_value(mask, 0, 2), tf.uint8)


def _from_arrays(images: np.ndarray, masks: np.ndarray) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((images, masks))


def training_batches(
    dataset: tf.data.Dataset,
    batch_size: int,
    seed: int,
    augmentation: str = "basic",
    copy_paste: float = 0.0,
) -> tf.data.Dataset:
    """Shuffled, augmented (see augment.py), batched training data (one pass = one epoch);
    with `copy_paste` > 0, that share of examples gets another example's pet pasted on."""
    dataset = dataset.shuffle(2048, seed=seed, reshuffle_each_iteration=True)
    transform = augment_lib.by_name(augmentation)
    if transform is not None:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda example, s: transform(example[0], example[1], s),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    dataset = dataset.batch(batch_size)
    if copy_paste > 0:
        seeds = tf.data.Dataset.random(seed=seed + 1).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda batch, s: augment_lib.copy_paste(batch[0], batch[1], s, copy_paste),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def evaluation_batches(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def to_numpy(dataset: tf.data.Dataset, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Materializes (images, masks) of an unbatched split, optionally only the first `limit`."""
    if limit is not None:
        dataset = dataset.take(limit)
    images, masks = [], []
    for image, mask in dataset.as_numpy_iterator():
        images.append(image)
        masks.append(mask)
    if not images:
        raise ValueError("the split is empty")
    return np.stack(images), np.stack(masks)
