"""Deterministic benchmark JPEGs: a photo-like scene (smooth gradients, a few shapes, sensor noise)
so that the encoded size and the decoder's work resemble a real upload, not a flat colour."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

FULL_SIZES = {"typical_500x375": (500, 375), "large_4000x3000": (4000, 3000)}
QUICK_SIZES = {"typical_320x240": (320, 240), "large_1600x1200": (1600, 1200)}
JPEG_QUALITY = 90


def scene_jpeg(width: int, height: int, *, seed: int = 7) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            120 + 80 * np.sin(x / width * 3.1 + 0.3),
            110 + 70 * np.cos(y / height * 2.3),
            100 + 60 * np.sin((x + y) / (width + height) * 4.0),
        ],
        axis=-1,
    )
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.25) * min(width, height)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((cx - r, cy - r * 0.8, cx + r, cy + r * 0.8), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=max(1, width // 400)))
    noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 6, (height, width, 3)).astype(
        np.int16
    )
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def ensure_images(directory: Path, *, quick: bool) -> dict[str, Path]:
    """{name: path} of the benchmark JPEGs, written once into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (width, height) in (QUICK_SIZES if quick else FULL_SIZES).items():
        path = directory / f"{name}.jpg"
        if not path.is_file():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(scene_jpeg(width, height))
            tmp.replace(path)
        paths[name] = path
    return paths
