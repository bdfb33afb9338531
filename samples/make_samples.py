"""Writes the sample uploads in samples/ (deterministic: run it again, get the same files).

    .venv/bin/python samples/make_samples.py

Pet-like synthetic scenes from `model_build.synthetic` (the generator the default model is
trained on) in the formats the function accepts, plus one EXIF-rotated JPEG, one large JPEG
and one file that is not an image (its upload gets an error record, not a mask).
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

SAMPLES = Path(__file__).resolve().parent
sys.path.insert(0, str(SAMPLES.parent))

from model_build.synthetic import synthetic_example  # noqa: E402

SEED = 2026
EXIF_ORIENTATION = 0x0112
ROTATE_90_CW_TO_DISPLAY = 6  # EXIF orientation 6: the viewer turns the stored pixels 90° CW


def scene(index: int, size: tuple[int, int] | None = None) -> Image.Image:
    pixels, _mask = synthetic_example(index, seed=SEED, min_side=128, max_side=192)
    image = Image.fromarray(pixels, "RGB")
    return image.resize(size, Image.Resampling.BICUBIC) if size else image


def main() -> None:
    scene(0).save(SAMPLES / "pet-01.jpg", format="JPEG", quality=90)
    scene(1).save(SAMPLES / "pet-02.png", format="PNG", optimize=True)
    scene(2).save(SAMPLES / "pet-03.webp", format="WEBP", quality=90, method=6)

    # Stored on its side; EXIF says "rotate 90° clockwise to display" (a phone portrait shot).
    upright = scene(3)
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW_TO_DISPLAY
    stored.save(SAMPLES / "pet-04-exif-rotated.jpg", format="JPEG", quality=90, exif=exif)

    scene(4, size=(1200, 900)).save(SAMPLES / "pet-05-large.jpg", format="JPEG", quality=85)

    (SAMPLES / "not-an-image.jpg").write_text(
        "This is a text file with a .jpg name: the function records a not_an_image error.\n"
    )


if __name__ == "__main__":
    main()
