"""A contact sheet: one row per image, input | mask (palette colours) | overlay.

Every cell is CELL x CELL (the image fitted and centred on grey), under a caption with the name
and the outcome; an error record shows its reason where the mask would be.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps
from segmentation.settings import DEFAULT_MAX_IMAGE_PIXELS

CELL = 192
PAD = 8
CAPTION = 18
COLUMNS = 3
BACKDROP = (64, 64, 64)
SHEET_BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
OVERLAY_ALPHA = 0.5
BACKGROUND_CLASS = 1
PREVIEW_MAX_PIXELS = DEFAULT_MAX_IMAGE_PIXELS  # the function refuses larger images anyway


@dataclass(frozen=True)
class Row:
    name: str
    input_path: Path
    mask_png: bytes | None = None  # palette PNG from the function
    error: str | None = None  # reason, when the function wrote an error record instead


def sheet_size(rows: int) -> tuple[int, int]:
    """(width, height) of a sheet with `rows` rows."""
    width = COLUMNS * CELL + (COLUMNS + 1) * PAD
    height = max(rows, 1) * (CAPTION + CELL + PAD) + PAD
    return width, height


def render(rows: Sequence[Row]) -> Image.Image:
    sheet = Image.new("RGB", sheet_size(len(rows)), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, row in enumerate(rows):
        top = PAD + index * (CAPTION + CELL + PAD)
        status = f"error: {row.error}" if row.error else ("mask" if row.mask_png else "no output")
        draw.text((PAD, top + 3), f"{row.name}  ({status})", fill=TEXT)
        source = _open_input(row.input_path)
        mask = _open_mask(row.mask_png)
        cells = [source, None, None]
        if mask is not None:
            coloured = mask.convert("RGB")
            cells[1] = coloured
            if source is not None and _same_aspect(source.size, mask.size):
                small_mask = mask.resize(source.size, Image.Resampling.NEAREST)
                cells[2] = _overlay(source, small_mask)
        for column, image in enumerate(cells):
            left = PAD + column * (CELL + PAD)
            box = (left, top + CAPTION, left + CELL, top + CAPTION + CELL)
            resample = Image.Resampling.NEAREST if column == 1 else Image.Resampling.BILINEAR
            sheet.paste(_cell(image, resample), box[:2])
            if image is None:
                label = row.error if (row.error and column == 1) else "-"
                where = (left + 8, top + CAPTION + CELL // 2 - 6)
                draw.text(where, label[:30], fill=(230, 230, 230))
    return sheet


def write(rows: Sequence[Row], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    render(rows).save(path, format="PNG", optimize=True)
    return path


def _open_input(path: Path) -> Image.Image | None:
    """The input as a small RGB preview, or None (a grey placeholder) for anything that cannot
    be previewed cheaply: not an image, damaged, or larger than PREVIEW_MAX_PIXELS.

    The sheet is drawn after every upload has its mask or error record, from the user's own
    files, which may be hostile: no file may stop it (a decompression bomb raised
    DecompressionBombError, which is no OSError, and ended `segment local run` with a
    traceback), so every Pillow failure becomes a placeholder.
    """
    try:
        with Image.open(path) as image:
            if image.width * image.height > PREVIEW_MAX_PIXELS:
                return None
            image.seek(0)
            image.draft("RGB", (CELL, CELL))  # JPEG: decode at a reduced size
            image.thumbnail((CELL * 2, CELL * 2))
            oriented = ImageOps.exif_transpose(image)
            return oriented.convert("RGB")
    except Exception:  # Pillow's decoders raise many types on hostile input
        return None


def _same_aspect(preview: tuple[int, int], mask: tuple[int, int]) -> bool:
    """True when the (possibly shrunk) preview has the mask's shape, to a pixel of rounding."""
    (pw, ph), (mw, mh) = preview, mask
    return abs(pw * mh - ph * mw) <= max(mw, mh)


def _open_mask(png: bytes | None) -> Image.Image | None:
    if not png:
        return None
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        return image.copy()


def _overlay(source: Image.Image, mask: Image.Image) -> Image.Image:
    """The mask's colours blended over the input, except where it is background."""
    blended = Image.blend(source, mask.convert("RGB"), OVERLAY_ALPHA)
    classes = np.asarray(mask.convert("L") if mask.mode not in ("P", "L") else mask)
    keep = Image.fromarray(np.where(classes == BACKGROUND_CLASS, 0, 255).astype(np.uint8), "L")
    return Image.composite(blended, source, keep)


def _cell(image: Image.Image | None, resample: Image.Resampling) -> Image.Image:
    cell = Image.new("RGB", (CELL, CELL), BACKDROP)
    if image is None:
        return cell
    fitted = ImageOps.contain(image, (CELL, CELL), resample)
    cell.paste(fitted, ((CELL - fitted.width) // 2, (CELL - fitted.height) // 2))
    return cell
