"""Decoding, validation, preprocessing and mask encoding."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from segmentation import imaging
from segmentation.errors import (
    CorruptImageError,
    EmptyObjectError,
    NotAnImageError,
    TooManyPixelsError,
    UnsupportedFormatError,
)

from tests.fakes.images import GREEN, RED, decode_mask, encode, halves, png_header_only

SIZE = (128, 128)
LIMIT = 4_000_000


def decode(data: bytes, max_pixels: int = LIMIT) -> imaging.DecodedImage:
    return imaging.decode_image(data, max_pixels=max_pixels, size=SIZE)


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("JPEG", {"quality": 95}),
        ("PNG", {}),
        ("WEBP", {"lossless": True}),
        ("GIF", {}),
    ],
)
def test_accepted_formats_decode_to_model_input(fmt: str, params: dict) -> None:
    decoded = decode(encode(halves(64, 48), fmt, **params))
    assert decoded.array.shape == (128, 128, 3)
    assert decoded.array.dtype == np.uint8
    assert decoded.original_size == (64, 48)
    assert decoded.format == fmt
    left, right = decoded.array[:, :60].mean(axis=(0, 1)), decoded.array[:, 68:].mean(axis=(0, 1))
    assert left.argmax() == 0 and right.argmax() == 1


def _solid(mode: str, value: object, size: tuple[int, int] = (20, 10)) -> Image.Image:
    return Image.new(mode, size, value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("image", "fmt", "expected"),
    [
        (_solid("L", 100), "PNG", (100, 100, 100)),
        (_solid("LA", (100, 255)), "PNG", (100, 100, 100)),
        (_solid("LA", (100, 0)), "PNG", (255, 255, 255)),
        (_solid("RGBA", (200, 10, 10, 255)), "PNG", (200, 10, 10)),
        (_solid("RGBA", (200, 10, 10, 0)), "PNG", (255, 255, 255)),
        (_solid("RGBA", (0, 0, 0, 128)), "PNG", (127, 127, 127)),
        (_solid("CMYK", (0, 255, 255, 0)), "JPEG", (255, 0, 0)),
        (_solid("I;16", 65535), "PNG", (255, 255, 255)),
        (_solid("I;16", 257 * 40), "PNG", (40, 40, 40)),
        (_solid("1", 1), "PNG", (255, 255, 255)),
        (_solid("1", 0), "PNG", (0, 0, 0)),
        (_solid("RGB", (10, 20, 30)).convert("P", palette=Image.Palette.ADAPTIVE), "PNG", None),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_modes_convert_to_rgb(
    image: Image.Image, fmt: str, expected: tuple[int, int, int] | None
) -> None:
    data = encode(image, fmt)
    decoded = decode(data)
    assert decoded.array.shape == (128, 128, 3)
    if expected is None:
        expected = tuple(np.asarray(image.convert("RGB"))[0, 0])
    tolerance = 6 if fmt == "JPEG" else 1
    assert np.abs(decoded.array.astype(int) - np.array(expected)).max() <= tolerance


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.full((2, 2), 0.5, np.float32), 128),  # float in 0..1
        (np.full((2, 2), 200.0, np.float32), 200),  # float in 0..255
        (np.full((2, 2), 30000, np.int32), 117),  # 16-bit range
    ],
)
def test_wide_samples_scale_to_uint8(values: np.ndarray, expected: int) -> None:
    # No accepted format decodes to I or F any more (TIFF did); I;16 PNGs reach this as I.
    assert (imaging._scale_to_uint8(values) == expected).all()


def test_palette_with_transparency_is_composited_over_white() -> None:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0])
    data = encode(image, "PNG", transparency=1)
    assert (decode(data).array == 255).all()


def test_first_frame_of_an_animation() -> None:
    frames = [Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), GREEN)]
    for fmt in ("GIF", "WEBP"):
        buffer = io.BytesIO()
        frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
        array = decode(buffer.getvalue()).array
        assert array.mean(axis=(0, 1)).argmax() == 0, fmt


def _with_orientation(image: Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[imaging.EXIF_ORIENTATION] = orientation
    return encode(image, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_exif_transpose(orientation: int) -> None:
    pixels = np.zeros((60, 90, 3), np.uint8)  # asymmetric: a red block top-left, green bottom
    pixels[:20, :30] = RED
    pixels[40:, :] = GREEN
    data = _with_orientation(Image.fromarray(pixels), orientation, fmt="PNG")
    decoded = decode(data)
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    assert decoded.original_size == reference.size
    assert decoded.orientation == orientation
    expected = np.asarray(reference.resize(SIZE, imaging.RESAMPLE))
    assert np.abs(decoded.array.astype(int) - expected).max() <= 2


def test_big_jpeg_is_decoded_in_draft_mode_but_keeps_its_size() -> None:
    data = encode(halves(2000, 1200), "JPEG", quality=90)
    decoded = decode(data)
    assert decoded.original_size == (2000, 1200)
    assert decoded.decoded_size == (250, 150)  # the 1/8 DCT scale: smallest still >= 128
    assert min(decoded.decoded_size) >= 128


def test_rotated_jpeg_reports_the_oriented_original_size() -> None:
    decoded = decode(_with_orientation(halves(600, 300), 6))
    assert decoded.original_size == (300, 600)
    assert decoded.decoded_size == (150, 300)


def test_pixel_limit_is_checked_from_the_header() -> None:
    with pytest.raises(TooManyPixelsError, match="3000x2000 = 6000000 pixels exceeds"):
        decode(png_header_only(3000, 2000), max_pixels=LIMIT)
    with pytest.raises(TooManyPixelsError, match="pixels"):  # beyond Pillow's own guard too
        decode(png_header_only(40000, 40000), max_pixels=LIMIT)
    with pytest.raises(TooManyPixelsError):
        decode(encode(halves(64, 48), "PNG"), max_pixels=64 * 48 - 1)
    assert decode(encode(halves(64, 48), "PNG"), max_pixels=64 * 48).original_size == (64, 48)


def test_a_side_longer_than_the_limit_is_refused_before_decoding() -> None:
    data = png_header_only(1, imaging.MAX_SIDE + 1)  # 65,536 pixels: far below the pixel limit
    with pytest.raises(TooManyPixelsError, match="a side longer than 65535"):
        imaging.decode_image(data, max_pixels=40_000_000, size=(128, 128))


def test_pillow_decompression_bomb_guard_maps_to_too_many_pixels() -> None:
    previous = Image.MAX_IMAGE_PIXELS
    try:
        imaging.configure_pillow(1000)
        with pytest.raises(TooManyPixelsError):
            decode(png_header_only(100, 100), max_pixels=10**9)  # > 2x Pillow's limit
    finally:
        Image.MAX_IMAGE_PIXELS = previous


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_truncated_images_are_corrupt(fmt: str) -> None:
    data = encode(
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)), fmt
    )
    with pytest.raises(CorruptImageError):
        decode(data[: len(data) // 2])


def test_zero_sized_header_is_corrupt() -> None:
    with pytest.raises((CorruptImageError, NotAnImageError)):
        decode(png_header_only(0, 10))


@pytest.mark.parametrize(
    "data",
    [
        b"hello, world",
        b"<!DOCTYPE html><html><body>not an image</body></html>",
        bytes(range(256)) * 4,
        b'{"json": true}',
    ],
)
def test_non_images_are_rejected(data: bytes) -> None:
    with pytest.raises(NotAnImageError):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>',
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
        b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1",
        b"8BPS\x00\x01" + b"\x00" * 40,
        b"%PDF-1.7\n",
    ],
)
def test_recognised_but_unsupported_formats(data: bytes) -> None:
    with pytest.raises(UnsupportedFormatError):
        decode(data)


def _bmp_and_tiff_files() -> list[object]:
    """Real BMP and TIFF files written by Pillow, in the modes and variants each stores."""
    image = halves(32, 24)
    files = [(f"BMP-{mode}", encode(image.convert(mode), "BMP")) for mode in ("1", "L", "P", "RGB")]
    files += [
        (f"TIFF-{mode}-{compression}", encode(image.convert(mode), "TIFF", compression=compression))
        for mode in ("RGB", "RGBA", "CMYK", "L", "I;16", "F")
        for compression in ("raw", "tiff_lzw")
    ]
    files.append(("TIFF-big-endian", encode(Image.new("I;16B", (8, 8), 300), "TIFF")))
    files.append(("TIFF-jpeg", encode(image, "TIFF", compression="jpeg")))
    return [pytest.param(case, data, id=case) for case, data in files]


@pytest.mark.parametrize(("case", "data"), _bmp_and_tiff_files())
def test_bmp_and_tiff_are_refused_by_name(case: str, data: bytes) -> None:
    # Every plugin registered first: the refusal does not depend on Pillow having left the BMP
    # and TIFF plugins unloaded, only on `formats=ACCEPTED_FORMATS`.
    Image.init()
    name = case.partition("-")[0]
    assert Image.open(io.BytesIO(data)).format == name  # a real file Pillow would decode
    with pytest.raises(UnsupportedFormatError, match=f"^{name} images are not supported$"):
        decode(data)
    with pytest.raises(UnsupportedFormatError, match=f"^{name} images are not supported$"):
        decode(data[: len(data) // 2])  # truncated: still named by its header


@pytest.mark.parametrize(
    "data",
    [
        b"BM" + b"\x00" * 40,  # no DIB header size after the file header
        b"BMW service history, 2019-2024\n" * 4,
        b"BM" + b"\x00" * 12 + b"\x29\x00\x00\x00" + b"\x00" * 40,  # 41: no DIB header
    ],
    ids=["zeros", "text", "odd-header-size"],
)
def test_text_starting_with_bm_is_not_called_a_bmp(data: bytes) -> None:
    with pytest.raises(NotAnImageError, match="JPEG, PNG, WEBP, GIF"):
        decode(data)


def test_other_pillow_formats_are_not_accepted() -> None:
    with pytest.raises(UnsupportedFormatError):
        decode(encode(halves(32, 32), "ICO"))
    with pytest.raises(NotAnImageError):
        decode(encode(halves(32, 32), "PPM"))


def test_empty_bytes() -> None:
    with pytest.raises(EmptyObjectError):
        decode(b"")


def test_mask_is_a_palette_png_of_class_indices() -> None:
    class_map = np.zeros((128, 128), np.uint8)
    class_map[:, 64:] = 1
    class_map[:8] = 2
    data = imaging.encode_mask(class_map, (300, 200))
    mask = decode_mask(data)
    assert mask.format == "PNG" and mask.mode == "P" and mask.size == (300, 200)
    values = np.asarray(mask)
    assert set(np.unique(values)) == {0, 1, 2}
    assert (values[20:, :149] == 0).all() and (values[20:, 151:] == 1).all()
    assert (values[:12] == 2).all()
    palette = mask.getpalette()[:9]
    assert palette == [c for colour in imaging.PALETTE for c in colour]


def test_mask_nearest_resize_never_invents_classes() -> None:
    rng = np.random.default_rng(3)
    class_map = rng.integers(0, 3, (128, 128), dtype=np.uint8)
    for size in [(1, 1), (127, 129), (1000, 37)]:
        values = np.asarray(decode_mask(imaging.encode_mask(class_map, size)))
        assert values.shape == (size[1], size[0])
        assert set(np.unique(values)) <= {0, 1, 2}
    same = np.asarray(decode_mask(imaging.encode_mask(class_map, (128, 128))))
    assert (same == class_map).all()


def test_mask_rejects_non_2d_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        imaging.encode_mask(np.zeros((1, 128, 128), np.uint8), (10, 10))


def test_decoding_never_runs_pillows_full_plugin_scan() -> None:
    # The scan of every Pillow plugin cost an instance's first decode 100-300 ms; the accepted
    # plugins are registered at import instead. A fresh interpreter, since other tests may scan.

    script = """
import io, sys
from PIL import Image
from segmentation import imaging
from segmentation.errors import InputError
webp = io.BytesIO(); Image.new("RGB", (20, 10), 90).save(webp, format="WEBP")
tiff = b"II*\\x00" + bytes(60)  # a TIFF header, written by hand: saving one would load the plugin
for data in (webp.getvalue(), tiff, b"<html>not an image</html>"):
    try:
        imaging.decode_image(data, max_pixels=10_000, size=(128, 128))
    except InputError:
        pass
print(Image._initialized)
"""
    result = _run_in_functions_dir(script)
    assert result.stdout.strip() == "1", "Pillow ran its full plugin scan (Image.init())"


def test_importing_imaging_registers_no_bmp_or_tiff_plugin() -> None:
    # The decoders that are not accepted are not even imported: BMP and TIFF (libtiff) are
    # attack surface. A fresh interpreter, since other tests register every plugin.

    script = """
import sys
from PIL import Image
from segmentation import imaging
print(sorted(Image.OPEN), sorted(Image.ID))
print(sorted(m for m in ("PIL.BmpImagePlugin", "PIL.TiffImagePlugin") if m in sys.modules))
"""
    result = _run_in_functions_dir(script)
    registered, modules = result.stdout.strip().splitlines()
    for name in ("BMP", "DIB", "TIFF"):
        assert f"'{name}'" not in registered, registered
    for name in imaging.ACCEPTED_FORMATS:
        assert f"'{name}'" in registered, registered
    assert modules == "[]"


def _run_in_functions_dir(script: str) -> subprocess.CompletedProcess[str]:
    """`script` in a fresh interpreter started in functions/ (as the deployed function is)."""
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[3] / "functions",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
