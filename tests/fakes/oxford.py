"""A small folder in the Oxford-IIIT Pet layout, made from synthetic scenes (no dataset file)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from model_build.synthetic import synthetic_example


def write_oxford_folder(root: Path, names, corrupt=(), no_trimap=()) -> Path:
    """images/<name>.jpg and annotations/trimaps/<name>.png (values 1/2/3) for each name."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    for index, name in enumerate(names):
        image, mask = synthetic_example(index)
        path = root / "images" / f"{name}.jpg"
        Image.fromarray(image).save(path, quality=90)
        if name in corrupt:
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])  # truncated
        if name not in no_trimap:
            Image.fromarray(mask + 1).save(root / "annotations" / "trimaps" / f"{name}.png")
    return root
