import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from model_build import augment as augment_lib
from model_build import data as data_lib
from model_build.data import DataConfig, load_splits, tfds_example
from model_build.oxford_folder import DatasetFolderError
from model_build.synthetic import BORDER, PET, synthetic_example
from tests.fakes.oxford import write_oxford_folder


def test_synthetic_generator_is_deterministic():
    first_image, first_mask = synthetic_example(7, seed=3)
    second_image, second_mask = synthetic_example(7, seed=3)
    np.testing.assert_array_equal(first_image, second_image)
    np.testing.assert_array_equal(first_mask, second_mask)
    other_image, _ = synthetic_example(7, seed=4)
    assert not np.array_equal(first_image, other_image)
    # Order does not matter: example 7 is the same whether or not 0..6 were generated.
    np.testing.assert_array_equal(synthetic_example(7, seed=3)[0], first_image)


def test_synthetic_scene_looks_like_a_trimap():
    image, mask = synthetic_example(0)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert mask.shape == image.shape[:2]
    assert set(np.unique(mask)) == {0, 1, 2}
    # The border is a thin ring: every pet pixel next to background crosses a border pixel.
    pet, border = mask == PET, mask == BORDER
    assert border.mean() < 0.15 < pet.mean() + border.mean()
    touching = pet[:, :-1] & (mask[:, 1:] == 1)
    assert not touching.any()


def test_synthetic_splits_have_the_contract_shapes():
    splits = load_splits(DataConfig(synthetic_train_size=6, synthetic_test_size=3))
    assert (splits.train_size, splits.test_size) == (6, 3)
    images, masks = data_lib.to_numpy(splits.train)
    assert images.shape == (6, 128, 128, 3) and images.dtype == np.uint8
    assert masks.shape == (6, 128, 128) and masks.dtype == np.uint8
    test_images, _ = data_lib.to_numpy(splits.test)
    assert not any(np.array_equal(t, i) for t in test_images for i in images)
    assert splits.description["dataset"] == "synthetic"


def test_folder_source_skips_corrupt_and_unmatched_files(tmp_path, caplog):
    names = [f"cat_{i}" for i in range(8)]
    write_oxford_folder(tmp_path, names, corrupt={"cat_2"}, no_trimap={"cat_5"})
    (tmp_path / "annotations" / "trainval.txt").write_text(
        "".join(f"{n} 1 1 1\n" for n in names[:6]) + "missing_one 1 1 1\n"
    )
    (tmp_path / "annotations" / "test.txt").write_text("# comment\ncat_6 1 1 1\ncat_7 1 1 1\n")
    with caplog.at_level("WARNING"):
        splits = load_splits(DataConfig(source="folder", data_dir=str(tmp_path)))
    assert (splits.train_size, splits.test_size) == (4, 2)
    assert splits.description["skipped"] == {
        "corrupt": 1,
        "missing_trimap": 1,
        "missing_image": 1,
    }
    assert any("skipped examples" in r.message for r in caplog.records)
    images, masks = data_lib.to_numpy(splits.train)
    assert images.shape == (4, 128, 128, 3)
    assert set(np.unique(masks)) <= {0, 1, 2}
    # The trimap 1/2/3 became 0/1/2 aligned with the image.
    _, expected = synthetic_example(0)
    expected = np.asarray(Image.fromarray(expected).resize((128, 128), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(masks[0], expected)


def test_folder_source_without_split_lists_uses_a_stable_hash_split(tmp_path):
    names = [f"dog_{i}" for i in range(20)]
    write_oxford_folder(tmp_path, names)
    first = load_splits(DataConfig(source="folder", data_dir=str(tmp_path)))
    second = load_splits(DataConfig(source="folder", data_dir=str(tmp_path)))
    assert first.train_size + first.test_size == 20
    assert 0 < first.test_size < 10
    assert (first.train_size, first.test_size) == (second.train_size, second.test_size)


def test_folder_source_counts_a_trimap_without_an_image(tmp_path, caplog):
    write_oxford_folder(tmp_path, [f"dog_{i}" for i in range(20)])
    orphan = tmp_path / "annotations" / "trimaps" / "dog_0.png"
    orphan.rename(orphan.with_name("lost_pet.png"))  # dog_0: image only; lost_pet: trimap only
    with caplog.at_level("WARNING"):
        splits = load_splits(DataConfig(source="folder", data_dir=str(tmp_path)))
    assert splits.train_size + splits.test_size == 19
    assert splits.description["skipped"] == {"missing_trimap": 1, "missing_image": 1}
    assert any(getattr(r, "first", None) == ["lost_pet"] for r in caplog.records)


def test_folder_source_counts_files_the_split_lists_leave_out(tmp_path, caplog):
    names = [f"cat_{i}" for i in range(6)]
    write_oxford_folder(tmp_path, names)
    (tmp_path / "annotations" / "trainval.txt").write_text("cat_0 1 1 1\ncat_1 1 1 1\n")
    (tmp_path / "annotations" / "test.txt").write_text("cat_2 1 1 1\n")
    with caplog.at_level("WARNING"):
        splits = load_splits(DataConfig(source="folder", data_dir=str(tmp_path)))
    assert (splits.train_size, splits.test_size) == (2, 1)
    assert splits.description["skipped"] == {"unlisted": 3}
    warning = next(r for r in caplog.records if r.getMessage() == "files no split uses")
    assert (warning.reason, warning.count, warning.first) == ("unlisted", 3, names[3:])


def test_folder_source_holds_breeds_out_of_training_only(tmp_path):
    names = [f"Bengal_{i}" for i in range(4)] + [f"american_bulldog_{i}" for i in range(4)]
    write_oxford_folder(tmp_path, names)
    train, test = names[:2] + names[4:6], names[2:4] + names[6:]
    (tmp_path / "annotations" / "trainval.txt").write_text("".join(f"{n} 1 1 1\n" for n in train))
    (tmp_path / "annotations" / "test.txt").write_text("".join(f"{n} 1 1 1\n" for n in test))
    config = DataConfig(source="folder", data_dir=str(tmp_path), holdout_breeds=("Bengal",))
    splits = load_splits(config)
    everything = load_splits(DataConfig(source="folder", data_dir=str(tmp_path)))
    assert (splits.train_size, splits.test_size) == (2, 4)  # the test split keeps the breed
    assert splits.description["holdout_breeds"] == ["Bengal"]
    assert splits.description["held_out_train_names"] == 2
    assert splits.description["train_breeds"] == ["american_bulldog"]
    assert "holdout_breeds" not in everything.description
    assert everything.description["train_breeds"] == ["Bengal", "american_bulldog"]
    # Different training data, different fingerprint: the two can never claim the same data.
    assert splits.description["fingerprint"] != everything.description["fingerprint"]
    with pytest.raises(DatasetFolderError, match=r"breed bengal.*Bengal, american_bulldog"):
        load_splits(DataConfig(source="folder", data_dir=str(tmp_path), holdout_breeds=("bengal",)))
    with pytest.raises(ValueError, match="--holdout-breed"):
        DataConfig(holdout_breeds=("Bengal",))


def test_folder_source_names_the_problem(tmp_path):
    with pytest.raises(DatasetFolderError, match="images/"):
        load_splits(DataConfig(source="folder", data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="data_dir"):
        DataConfig(source="folder")


def test_tfds_trimap_mapping_by_hand():
    trimap = tf.constant([[[1], [2]], [[3], [1]]], tf.uint8)
    image = tf.fill([2, 2, 3], tf.constant(200, tf.uint8))
    resized_image, mask = tfds_example(image, trimap, size=2)
    np.testing.assert_array_equal(mask.numpy(), [[0, 1], [2, 0]])
    assert resized_image.dtype == tf.uint8 and mask.dtype == tf.uint8


def test_tfds_source_through_tfds_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=3):
        splits = load_splits(DataConfig(source="oxford"))
        images, masks = data_lib.to_numpy(splits.train)
    assert images.shape[1:] == (128, 128, 3) and images.dtype == np.uint8
    assert masks.shape[1:] == (128, 128) and masks.max() <= 2
    assert splits.description["dataset"] == "oxford_iiit_pet"


def _class_coded_example(size=128):
    _, mask = synthetic_example(1)
    mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))
    colours = np.array([[250, 0, 0], [0, 250, 0], [0, 0, 250]], np.uint8)
    return colours[mask], mask


AUGMENTATIONS = [augment_lib.basic, augment_lib.strong]


@pytest.mark.parametrize("augment", AUGMENTATIONS, ids=["basic", "strong"])
@pytest.mark.parametrize("seed", [[1, 2], [3, 4], [5, 6], [7, 8]])
def test_augmentation_keeps_image_and_mask_aligned(augment, seed):
    image, mask = _class_coded_example()
    aug_image, aug_mask = augment(
        tf.constant(image), tf.constant(mask), tf.constant(seed, tf.int64), photometric=False
    )
    decoded = np.argmax(aug_image.numpy(), axis=-1)  # the class each pixel's colour encodes
    assert np.mean(decoded == aug_mask.numpy()) > 0.97  # only anti-aliased edges may differ
    assert aug_mask.dtype == tf.uint8 and set(np.unique(aug_mask.numpy())) <= {0, 1, 2}
    assert not np.array_equal(aug_mask.numpy(), mask)  # it did move something


@pytest.mark.parametrize("augment", AUGMENTATIONS, ids=["basic", "strong"])
def test_augmentation_is_seeded_and_photometric_changes_only_the_image(augment):
    image, mask = _class_coded_example()
    seed = tf.constant([11, 12], tf.int64)
    a_image, a_mask = augment(tf.constant(image), tf.constant(mask), seed)
    b_image, _ = augment(tf.constant(image), tf.constant(mask), seed)
    np.testing.assert_array_equal(a_image.numpy(), b_image.numpy())
    plain_image, plain_mask = augment(
        tf.constant(image), tf.constant(mask), seed, photometric=False
    )
    np.testing.assert_array_equal(a_mask.numpy(), plain_mask.numpy())
    assert not np.array_equal(a_image.numpy(), plain_image.numpy())


def test_strong_augmentation_rotates_crops_and_flips():
    """Over many seeds the strong warp produces rotated (non axis-aligned) and flipped views."""
    mask = np.full((128, 128), 1, np.uint8)
    mask[:, :64] = 0  # left half pet: a vertical edge
    image = np.zeros((128, 128, 3), np.uint8)
    flipped = tilted = 0
    for k in range(24):
        _, out = augment_lib.strong(
            tf.constant(image), tf.constant(mask), tf.constant([k, 3], tf.int64)
        )
        out = out.numpy()
        flipped += int(out[64, 4] == 1 and out[64, 123] == 0)
        # A rotated edge crosses different columns at the top and the bottom rows.
        edge = [int(np.argmax(row != row[0])) for row in (out[8], out[119])]
        tilted += int(abs(edge[0] - edge[1]) >= 3)
    assert flipped >= 4 and tilted >= 8


def test_unknown_augmentation_is_named():
    with pytest.raises(ValueError, match="augmentation 'wild'"):
        augment_lib.by_name("wild")


def test_training_batches_are_batched_and_augmented():
    splits = load_splits(DataConfig(synthetic_train_size=10, synthetic_test_size=2))
    batches = list(data_lib.training_batches(splits.train, batch_size=4, seed=0))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert batches[0][1].shape == (4, 128, 128)


def test_copy_paste_pastes_a_neighbours_pet_with_its_labels():
    image, mask = _class_coded_example()
    other_mask = np.full_like(mask, 1)
    other_mask[10:40, 10:40] = 0  # a square pet, border ring around it
    other_mask[8:10, 8:42] = 2
    other_image = np.array([[250, 0, 0], [0, 250, 0], [0, 0, 250]], np.uint8)[other_mask]
    images = tf.constant(np.stack([image, other_image]))
    masks = tf.constant(np.stack([mask, other_mask]))
    seed = tf.constant([1, 2], tf.int64)

    pasted_images, pasted_masks = augment_lib.copy_paste(images, masks, seed, probability=1.0)
    pasted_images, pasted_masks = pasted_images.numpy(), pasted_masks.numpy()
    # Example 0 received example 1's pet (and border) where example 1 is not background.
    region = other_mask != 1
    np.testing.assert_array_equal(pasted_masks[0][region], other_mask[region])
    np.testing.assert_array_equal(pasted_masks[0][~region], mask[~region])
    # Image and mask still agree everywhere (the colour encodes the class).
    assert np.mean(np.argmax(pasted_images, axis=-1) == pasted_masks) > 0.97

    same_images, same_masks = augment_lib.copy_paste(images, masks, seed, probability=0.0)
    np.testing.assert_array_equal(same_masks.numpy(), masks.numpy())
    np.testing.assert_array_equal(same_images.numpy(), images.numpy())


def test_training_batches_with_copy_paste_keep_shapes_and_classes():
    splits = load_splits(DataConfig(synthetic_train_size=8, synthetic_test_size=2))
    batches = list(
        data_lib.training_batches(splits.train, 4, seed=0, augmentation="strong", copy_paste=0.5)
    )
    assert [b[0].shape for b in batches] == [(4, 128, 128, 3)] * 2
    assert all(set(np.unique(b[1].numpy())) <= {0, 1, 2} for b in batches)
