"""A local folder in the Oxford-IIIT Pet layout, read with Pillow.

    ROOT/images/<name>.jpg
    ROOT/annotations/trimaps/<name>.png         (1 pet, 2 background, 3 border)
    ROOT/annotations/trainval.txt, test.txt     (optional; "<name> <class> <species> <breed>")

Without the split lists, a stable hash of the name puts about 20% of examples in the test split.
Corrupt or unmatched files are skipped and counted (with a warning) while the folder is read,
before training starts, so a bad file can never crash an epoch. Files no split can use are
counted too (`unused_files`): a trimap without an image, and, with split lists, an image or
trimap whose name neither list has.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TRIMAP_VALUES = (1, 2, 3)


class DatasetFolderError(ValueError):
    """The folder does not look like an Oxford-IIIT Pet layout, or holds no usable example."""


@dataclass
class FolderSplit:
    images: np.ndarray  # uint8 [N, S, S, 3]
    masks: np.ndarray  # uint8 [N, S, S], 0 pet / 1 background / 2 border
    names: list[str]
    skipped: Counter[str] = field(default_factory=Counter)


def split_names(root: Path) -> tuple[list[str], list[str]]:
    """(train names, test names) from the split lists, or a stable hash split without them."""
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise DatasetFolderError(f"{root} has no images/ folder (expected the Oxford-IIIT layout)")
    if _has_split_lists(root):
        trainval, test_list = _split_lists(root)
        return _read_list(trainval), _read_list(test_list)
    names = sorted(p.stem for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    test = [n for n in names if zlib.crc32(n.encode()) % 5 == 0]
    train = [n for n in names if zlib.crc32(n.encode()) % 5 != 0]
    return train, test


def unused_files(root: Path, train: list[str], test: list[str]) -> Counter[str]:
    """Counts (and warns about) files in the folder that neither split will read.

    `missing_image`: a trimap whose image is absent (without split lists; a listed name without
    an image is counted by load_split). `unlisted`: with split lists, a name that has an image or
    a trimap but is in neither list. Counted once per name.
    """
    listed = set(train) | set(test)
    images = {p.stem for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    trimaps_dir = root / "annotations" / "trimaps"
    trimaps = {p.stem for p in trimaps_dir.glob("*.png")} if trimaps_dir.is_dir() else set()
    reason = "unlisted" if _has_split_lists(root) else "missing_image"
    names = sorted((images | trimaps) - listed)
    if not names:
        return Counter()
    log.warning(
        "files no split uses",
        extra={"root": str(root), "reason": reason, "count": len(names), "first": names[:5]},
    )
    return Counter({reason: len(names)})


def _split_lists(root: Path) -> tuple[Path, Path]:
    return root / "annotations" / "trainval.txt", root / "annotations" / "test.txt"


def _has_split_lists(root: Path) -> bool:
    return all(path.is_file() for path in _split_lists(root))


def _read_list(path: Path) -> list[str]:
    names = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            names.append(line.split()[0])
    return names


def load_split(root: Path, names: list[str], size: int) -> FolderSplit:
    """Decodes, validates and resizes each named example; skips and counts the bad ones."""
    images, masks, kept = [], [], []
    skipped: Counter[str] = Counter()
    for name in names:
        try:
            image, mask = _load_example(root, name, size)
        except _SkipExampleError as skip:
            skipped[skip.reason] += 1
            detail = {"example": name, "reason": skip.reason, "detail": str(skip)}
            log.warning("skipping example", extra=detail)
            continue
        images.append(image)
        masks.append(mask)
        kept.append(name)
    if skipped:
        log.warning(
            "skipped examples in dataset folder", extra={"root": str(root), **dict(skipped)}
        )
    if not kept:
        raise DatasetFolderError(f"no usable example among {len(names)} in {root}: {dict(skipped)}")
    return FolderSplit(np.stack(images), np.stack(masks), kept, skipped)


class _SkipExampleError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _find_image(root: Path, name: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        path = root / "images" / f"{name}{suffix}"
        if path.is_file():
            return path
    raise _SkipExampleError("missing_image", f"no image for {name}")


def _load_example(root: Path, name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    image_path = _find_image(root, name)
    trimap_path = root / "annotations" / "trimaps" / f"{name}.png"
    if not trimap_path.is_file():
        raise _SkipExampleError("missing_trimap", f"no trimap for {name}")
    try:
        with Image.open(image_path) as img:
            img.load()
            image = img.convert("RGB")
        with Image.open(trimap_path) as tri:
            tri.load()
            trimap = tri.convert("L")
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's errors for corrupt files
        raise _SkipExampleError("corrupt", f"{name}: {exc}") from exc
    if image.size != trimap.size:
        raise _SkipExampleError("size_mismatch", f"{name}: image {image.size} trimap {trimap.size}")
    values = np.unique(np.asarray(trimap))
    if not set(values.tolist()) <= set(TRIMAP_VALUES):
        raise _SkipExampleError("bad_trimap", f"{name}: trimap values {values.tolist()}")
    image = image.resize((size, size), Image.Resampling.BILINEAR)
    trimap = trimap.resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(image, dtype=np.uint8), np.asarray(trimap, dtype=np.uint8) - 1
