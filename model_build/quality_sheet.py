"""A picture of a model's quality: the worst and the best held-out photos by IoU, each as
photo | ground truth | prediction, so a reader sees what the numbers mean.

The sheet shows dataset photos: it is written next to a run's manifest and never committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps
from segmentation.imaging import PALETTE

CELL = 160
PAD = 6
CAPTION = 16
COLUMNS = ("photo", "truth", "prediction")
BACKDROP = (64, 64, 64)
SHEET_BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
HEADER = 22


@dataclass(frozen=True)
class Example:
    name: str
    image: np.ndarray  # uint8 [H, W, 3]
    truth: np.ndarray  # uint8 [h, w] class map
    prediction: np.ndarray  # uint8 [h, w] class map
    iou: float


def image_miou(truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> float:
    """Mean IoU over the classes present in the truth or the prediction of one image."""
    ious = []
    for cls in range(num_classes):
        t, p = truth == cls, prediction == cls
        union = np.logical_or(t, p).sum()
        if union:
            ious.append(np.logical_and(t, p).sum() / union)
    return float(np.mean(ious)) if ious else float("nan")


def worst_and_best(examples: Sequence[Example], count: int) -> tuple[list[Example], list[Example]]:
    """The `count` lowest-IoU examples (worst first) and the `count` highest (best first)."""
    ranked = sorted(examples, key=lambda e: e.iou)
    worst = ranked[:count]
    best = [e for e in ranked[::-1][:count] if e not in worst]
    return worst, best


def render(worst: Sequence[Example], best: Sequence[Example], title: str) -> Image.Image:
    """Two panels side by side, worst on the left, best on the right."""
    panel = len(COLUMNS) * CELL + (len(COLUMNS) - 1) * PAD
    rows = max(len(worst), len(best), 1)
    width = 2 * panel + 4 * PAD
    height = 2 * HEADER + rows * (CAPTION + CELL + PAD) + PAD
    sheet = Image.new("RGB", (width, height), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, 5), title, fill=TEXT)
    for index, (label, group) in enumerate((("worst", worst), ("best", best))):
        left = PAD + index * (panel + 2 * PAD)
        draw.text((left, HEADER + 4), f"{label}: {' | '.join(COLUMNS)}", fill=TEXT)
        for row, example in enumerate(group):
            top = 2 * HEADER + row * (CAPTION + CELL + PAD)
            _draw_example(sheet, draw, example, left, top)
    return sheet


def _draw_example(
    sheet: Image.Image, draw: ImageDraw.ImageDraw, example: Example, left: int, top: int
) -> None:
    draw.text((left, top + 2), f"{example.name}  IoU {example.iou:.2f}", fill=TEXT)
    cells = (
        Image.fromarray(example.image),
        _coloured(example.truth),
        _coloured(example.prediction),
    )
    for column, cell in enumerate(cells):
        resample = Image.Resampling.BILINEAR if column == 0 else Image.Resampling.NEAREST
        sheet.paste(_fit(cell, resample), (left + column * (CELL + PAD), top + CAPTION))


def write(examples: Sequence[Example], path: Path, title: str, count: int = 4) -> Path:
    """Draws the `count` worst and best of `examples` into a PNG at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    render(*worst_and_best(examples, count), title).save(path, format="PNG", optimize=True)
    return path


def _coloured(class_map: np.ndarray) -> Image.Image:
    palette = np.asarray(PALETTE, np.uint8)
    return Image.fromarray(palette[np.clip(class_map, 0, len(PALETTE) - 1)])


def _fit(image: Image.Image, resample: Image.Resampling) -> Image.Image:
    cell = Image.new("RGB", (CELL, CELL), BACKDROP)
    fitted = ImageOps.contain(image, (CELL, CELL), resample)
    cell.paste(fitted, ((CELL - fitted.width) // 2, (CELL - fitted.height) // 2))
    return cell
