"""The contact sheet never stops on a file the function handles: hostile input, a placeholder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segment import contact_sheet
from tests.fakes.images import halves_png, png_header_only

HOSTILE = {
    "bomb.png": png_header_only(100_000, 100_000),  # Pillow: DecompressionBombError
    "over-limit.png": png_header_only(8_000, 6_000),  # 48 MP: above MAX_IMAGE_PIXELS
    "one-row.png": png_header_only(65_000, 1),
    "truncated.png": halves_png()[:60],
    "text.jpg": b"hello",
    "empty.png": b"",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_input_gets_a_placeholder_not_a_crash(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(HOSTILE[name])
    sheet = contact_sheet.render([contact_sheet.Row(name, path, None, "corrupt_image")])
    assert sheet.size == contact_sheet.sheet_size(1)
    left, top = contact_sheet.PAD, contact_sheet.PAD + contact_sheet.CAPTION
    assert sheet.getpixel((left + 2, top + 2)) == contact_sheet.BACKDROP  # the grey cell


def test_a_large_jpeg_is_previewed_small(tmp_path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (4000, 3000), (200, 30, 30)).save(path, quality=80)
    preview = contact_sheet._open_input(path)
    assert preview is not None and max(preview.size) <= 2 * contact_sheet.CELL
    assert preview.getpixel((10, 10))[0] > 150


def test_a_large_input_still_gets_its_overlay(tmp_path):
    """The preview is shrunk; the mask (at the input's full size) is shrunk to match it."""
    from segmentation.imaging import encode_mask

    path = tmp_path / "large.jpg"
    Image.new("RGB", (1200, 900), (30, 30, 200)).save(path, quality=80)
    classes = np.zeros((90, 120), np.uint8)  # all "pet": the overlay tints every pixel
    mask_png = encode_mask(classes, (1200, 900))
    sheet = contact_sheet.render([contact_sheet.Row("large.jpg", path, mask_png)])
    left = contact_sheet.PAD + 2 * (contact_sheet.CELL + contact_sheet.PAD)
    top = contact_sheet.PAD + contact_sheet.CAPTION + contact_sheet.CELL // 2
    r, _, b = sheet.getpixel((left + contact_sheet.CELL // 2, top))
    assert r > 100 and b < 150  # orange over blue, not the grey backdrop
