"""A seeded, deterministic generator of pet-like scenes with trimap-style masks.

Each scene is a textured foreground blob (a union of rotated ellipses: body, head, ears) on a
textured background, with a thin border ring straddling the blob's outline, like the
Oxford-IIIT Pet trimaps. Example `i` of seed `s` is the same on every machine and in any order,
so tests and offline training runs are reproducible without the real data set.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

PET, BACKGROUND, BORDER = 0, 1, 2

# Fur-like foreground colours and scene-like background colours (RGB); they overlap a little.
FOREGROUND_PALETTE = np.array(
    [[139, 90, 43], [210, 160, 90], [60, 45, 35], [230, 225, 215], [160, 110, 70], [90, 90, 95]],
    dtype=np.float32,
)
BACKGROUND_PALETTE = np.array(
    [
        [70, 120, 60],
        [120, 150, 190],
        [180, 170, 150],
        [100, 100, 110],
        [200, 190, 170],
        [50, 70, 40],
    ],
    dtype=np.float32,
)


def synthetic_example(
    index: int, seed: int = 0, min_side: int = 96, max_side: int = 192
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (uint8 RGB image [H, W, 3], uint8 class mask [H, W]) for example `index`."""
    rng = np.random.default_rng([seed, index])
    height = int(rng.integers(min_side, max_side + 1))
    width = int(rng.integers(min_side, max_side + 1))
    distance = _blob_distance(rng, height, width)
    ring = float(rng.uniform(1.0, 2.5))

    mask = np.full((height, width), BACKGROUND, dtype=np.uint8)
    mask[distance < 0] = PET
    mask[np.abs(distance) <= ring] = BORDER

    background = _texture(rng, height, width, BACKGROUND_PALETTE, streaks=False)
    foreground = _texture(rng, height, width, FOREGROUND_PALETTE, streaks=True)
    alpha = np.clip(0.5 - distance, 0.0, 1.0)[..., np.newaxis]  # anti-aliased outline
    image = alpha * foreground + (1.0 - alpha) * background
    image += rng.normal(0.0, 6.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _blob_distance(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Approximate signed distance (pixels, negative inside) to a union of rotated ellipses."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    side = min(height, width)
    cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.4, 0.65) * height
    body_a, body_b = rng.uniform(0.26, 0.4) * side, rng.uniform(0.2, 0.3) * side
    ellipses = [(cx, cy, body_a, body_b, rng.uniform(0, np.pi))]
    head_angle = rng.uniform(0, 2 * np.pi)
    head_r = rng.uniform(0.13, 0.2) * side
    hx = cx + np.cos(head_angle) * body_a * 0.9
    hy = cy + np.sin(head_angle) * body_b * 0.9
    ellipses.append((hx, hy, head_r, head_r * rng.uniform(0.8, 1.1), rng.uniform(0, np.pi)))
    for ear in range(int(rng.integers(0, 3))):
        angle = head_angle + (-0.6 if ear == 0 else 0.6)
        ex, ey = hx + np.cos(angle) * head_r, hy + np.sin(angle) * head_r
        ellipses.append((ex, ey, head_r * 0.45, head_r * 0.25, angle))

    distance = np.full((height, width), np.inf, dtype=np.float32)
    for ex, ey, a, b, theta in ellipses:
        cos, sin = np.cos(theta), np.sin(theta)
        u = ((xx - ex) * cos + (yy - ey) * sin) / a
        v = (-(xx - ex) * sin + (yy - ey) * cos) / b
        distance = np.minimum(distance, (np.sqrt(u * u + v * v) - 1.0) * min(a, b))
    return distance


def _texture(
    rng: np.random.Generator, height: int, width: int, palette: np.ndarray, streaks: bool
) -> np.ndarray:
    """Two palette colours blended by low-frequency noise, plus fine grain (and fur streaks)."""
    first, second = palette[rng.choice(len(palette), size=2, replace=False)]
    blend = _smooth_noise(rng, height, width, cells=int(rng.integers(3, 8)))[..., np.newaxis]
    texture = blend * first + (1.0 - blend) * second
    if streaks:
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        phase = xx * np.cos(angle) + yy * np.sin(angle)
        texture *= (1.0 + 0.12 * np.sin(phase * rng.uniform(0.6, 1.4)))[..., np.newaxis]
    texture += rng.normal(0.0, 10.0, (height, width, 1))
    return texture


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    smooth = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(smooth, dtype=np.float32) / 255.0
