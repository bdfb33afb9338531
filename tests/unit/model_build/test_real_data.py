"""The folder source on the real Oxford-IIIT Pet subset, its quirks, and data fingerprints."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from model_build import provenance
from model_build.data import DataConfig, load_splits
from tests.fakes.oxford import write_oxford_folder


def _splits(root):
    return load_splits(DataConfig(source="folder", data_dir=str(root)))


def test_real_subset_reads_its_split_lists(real_subset):
    splits = _splits(real_subset)
    assert (splits.train_size, splits.test_size) == (300, 149)
    described = splits.description
    assert (described["train_examples"], described["test_examples"]) == (300, 149)
    assert described["skipped"] == {"unlisted": 2}  # two photos in no split list
    assert described["fingerprint"].startswith("sha256:")
    assert _splits(real_subset).description["fingerprint"] == described["fingerprint"]


def _copy_without_lists(real_subset, root):
    """The subset's photos and trimaps without split lists: every file is read."""
    shutil.copytree(real_subset / "images", root / "images")
    shutil.copytree(real_subset / "annotations" / "trimaps", root / "annotations" / "trimaps")


def test_real_quirks_are_read_by_content_counted_and_never_crash(real_subset, tmp_path):
    _copy_without_lists(real_subset, tmp_path)
    # The full dataset also has an RGBA PNG named .jpg: make one from a real photo.
    rgba = Image.open(tmp_path / "images" / "Bengal_10.jpg").convert("RGBA")
    rgba.save(tmp_path / "images" / "Bengal_10.jpg", format="PNG")

    splits = _splits(tmp_path)
    described = splits.description
    # Abyssinian_34.jpg is a GIF whose trimap marks no pet: read by content, then skipped.
    assert described["skipped"] == {"trimap_without_pet": 1}
    assert described["quirks"] == {"rgba_png_named_jpg": 1}
    assert splits.train_size + splits.test_size == 450
    images = np.stack([image for image, _ in splits.train.take(3).as_numpy_iterator()])
    assert images.shape == (3, 128, 128, 3) and images.dtype == np.uint8


def test_a_gif_named_jpg_with_a_real_trimap_is_kept_and_counted(real_subset, tmp_path):
    _copy_without_lists(real_subset, tmp_path)
    gif = tmp_path / "images" / "Bengal_10.jpg"
    Image.open(gif).convert("P").save(gif, format="GIF")
    described = _splits(tmp_path).description
    assert described["quirks"] == {"gif_named_jpg": 1}


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pets"
    write_oxford_folder(root, [f"cat_{i}" for i in range(6)])
    return root


def _fingerprint(root):
    return provenance.fingerprint(root, [p for p in root.rglob("*") if p.is_file()])


def test_fingerprint_changes_when_any_file_changes(folder):
    before = _fingerprint(folder)
    assert _fingerprint(folder) == before
    image = folder / "images" / "cat_3.jpg"
    original = image.read_bytes()
    image.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit
    assert _fingerprint(folder) != before
    image.write_bytes(original)
    assert _fingerprint(folder) == before
    image.rename(image.with_name("cat_9.jpg"))  # same bytes, another name
    assert _fingerprint(folder) != before


def test_fingerprint_ignores_read_order_and_names_the_used_files(folder):
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert provenance.fingerprint(folder, files) == provenance.fingerprint(folder, files[::-1])
    assert provenance.fingerprint(folder, files[1:]) != provenance.fingerprint(folder, files)


def test_folder_description_fingerprints_only_the_examples_used(folder):
    described = _splits(folder).description
    (folder / "images" / "stray.jpg").write_bytes(b"not used by any split")
    assert _splits(folder).description["fingerprint"] == described["fingerprint"]
    trimap = folder / "annotations" / "trimaps" / "cat_0.png"
    Image.open(trimap).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(trimap)
    assert _splits(folder).description["fingerprint"] != described["fingerprint"]
