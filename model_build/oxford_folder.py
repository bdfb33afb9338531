"""A local folder in the Oxford-IIIT Pet layout, read with Pillow.

    ROOT/images/<name>.jpg
    ROOT/annotations/trimaps/<name>.png         (1 pet, 2 background, 3 border)
    ROOT/annotations/trainval.txt, test.txt     (optional; "<name> <class> <species> <breed>")

Without the split lists, a stable hash of the name puts about 20% of examples in the test split.
Corrupt or unmatched files, and trimaps that mark no pet pixel (the full dataset has such
labelling errors), are skipped and counted (with a warning) while the folder is read, before
training starts, so a bad file can never crash an epoch. Images are decoded by content, not by
extension: a GIF or an RGBA PNG named `.jpg` is read and counted as a quirk. Files no split can
use are counted too (`unused_files`): a trimap without an image, and, with split lists, an image or
trimap whose name neither list has.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TRIMAP_VALUES = (1, 2, 3)
PET_VALUE = 1
FORMATS_BY_SUFFIX = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
BREED_NAME = re.compile(r"(.+)_\d+")  # Oxford-IIIT example names: <Breed>_<number>
MAX_BREEDS_SHOWN = 40


class DatasetFolderError(ValueError):
    """The folder does not look like an Oxford-IIIT Pet layout, or holds no usable example."""


@dataclass
class FolderSplit:
    images: np.ndarray  # uint8 [N, S, S, 3]
    masks: np.ndarray  # uint8 [N, S, S], 0 pet / 1 background / 2 border
    names: list[str]
    skipped: Counter[str] = field(default_factory=Counter)
    quirks: Counter[str] = field(default_factory=Counter)  # read, but not what the name says
    files: list[Path] = field(default_factory=list)  # every image and trimap read


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


def breed_of(name: str) -> str | None:
    """The breed in an Oxford-IIIT example name, `<Breed>_<number>`: `Bengal_12` -> `Bengal`,
    `american_bulldog_3` -> `american_bulldog` (cats are capitalised, dogs are not); None for
    a name of another shape."""
    match = BREED_NAME.fullmatch(name)
    return match.group(1) if match else None


def breeds_of(names: list[str]) -> list[str]:
    """The breeds among `names`, sorted (names of another shape have none)."""
    return sorted({b for b in map(breed_of, names) if b is not None})


def without_breeds(names: list[str], breeds: tuple[str, ...]) -> list[str]:
    """`names` less every example of `breeds` (held out of training, to be scored as breeds the
    model never saw). A breed with no example among `names` is refused: most likely a typo."""
    present = breeds_of(names)
    missing = sorted(set(breeds) - set(present))
    if missing:
        more = ", ..." if len(present) > MAX_BREEDS_SHOWN else ""
        shown = ", ".join(present[:MAX_BREEDS_SHOWN]) + more
        raise DatasetFolderError(
            f"no training photo of breed {', '.join(missing)} to hold out; breeds here: "
            f"{shown or 'none (names are not <Breed>_<number>)'} (case matters)"
        )
    return [n for n in names if breed_of(n) not in breeds]


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
    images, masks, kept, files = [], [], [], []
    skipped: Counter[str] = Counter()
    quirks: Counter[str] = Counter()
    for name in names:
        try:
            example = _load_example(root, name, size)
        except ExampleSkippedError as skip:
            skipped[skip.reason] += 1
            detail = {"example": name, "reason": skip.reason, "detail": str(skip)}
            log.warning("skipping example", extra=detail)
            continue
        images.append(example.image)
        masks.append(example.mask)
        kept.append(name)
        files.extend(example.files)
        if example.quirk:
            quirks[example.quirk] += 1
            log.info("read by content", extra={"example": name, "quirk": example.quirk})
    if skipped:
        log.warning(
            "skipped examples in dataset folder", extra={"root": str(root), **dict(skipped)}
        )
    if not kept:
        raise DatasetFolderError(f"no usable example among {len(names)} in {root}: {dict(skipped)}")
    return FolderSplit(np.stack(images), np.stack(masks), kept, skipped, quirks, files)


class ExampleSkippedError(Exception):
    """An example that cannot be used; `reason` is the counter it is reported under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def find_image(root: Path, name: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        path = root / "images" / f"{name}{suffix}"
        if path.is_file():
            return path
    raise ExampleSkippedError("missing_image", f"no image for {name}")


def trimap_path(root: Path, name: str) -> Path:
    return root / "annotations" / "trimaps" / f"{name}.png"


@dataclass(frozen=True)
class _Example:
    image: np.ndarray
    mask: np.ndarray
    files: tuple[Path, Path]
    quirk: str | None  # e.g. "gif_named_jpg", "rgba_png_named_jpg"


def _load_example(root: Path, name: str, size: int) -> _Example:
    image_path = find_image(root, name)
    trimap_file = trimap_path(root, name)
    if not trimap_file.is_file():
        raise ExampleSkippedError("missing_trimap", f"no trimap for {name}")
    try:
        with Image.open(image_path) as img:  # Pillow identifies the format by its bytes
            img.load()
            quirk = _quirk(image_path, str(img.format), img.mode)
            image = img.convert("RGB")
        with Image.open(trimap_file) as tri:
            tri.load()
            trimap = tri.convert("L")
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's errors for corrupt files
        raise ExampleSkippedError("corrupt", f"{name}: {exc}") from exc
    if image.size != trimap.size:
        raise ExampleSkippedError(
            "size_mismatch", f"{name}: image {image.size} trimap {trimap.size}"
        )
    values = np.unique(np.asarray(trimap))
    if not set(values.tolist()) <= set(TRIMAP_VALUES):
        raise ExampleSkippedError("bad_trimap", f"{name}: trimap values {values.tolist()}")
    if PET_VALUE not in values:
        raise ExampleSkippedError("trimap_without_pet", f"{name}: the trimap marks no pet pixel")
    image = image.resize((size, size), Image.Resampling.BILINEAR)
    trimap = trimap.resize((size, size), Image.Resampling.NEAREST)
    return _Example(
        np.asarray(image, dtype=np.uint8),
        np.asarray(trimap, dtype=np.uint8) - 1,
        (image_path, trimap_file),
        quirk,
    )


def _quirk(path: Path, content_format: str, mode: str) -> str | None:
    """Names a file whose content is not what its extension says (or RGBA), else None."""
    named = FORMATS_BY_SUFFIX.get(path.suffix.lower())
    parts = []
    if mode in ("RGBA", "LA", "PA"):
        parts.append(mode.lower())
    if content_format != named:
        parts.append(f"{content_format.lower()}_named_{path.suffix.lower().lstrip('.')}")
    return "_".join(parts) or None
