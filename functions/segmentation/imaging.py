"""Image decoding, validation and preprocessing, and the mask PNG encoder.

Pure functions over bytes and arrays; nothing here touches storage or the model.

`decode_image` opens the bytes with Pillow restricted to the accepted formats, checks the pixel
count from the header before any pixel is decoded, decodes big JPEGs at reduced size (draft mode),
converts every mode to RGB (alpha composited over white, 16-bit and float scaled to 0..255),
resizes to the model's input size with BILINEAR (the training side resizes with bilinear) and
applies the EXIF orientation. It orients after resizing: transposing the small image gives the same
pixels as `ImageOps.exif_transpose` on the full image followed by the resize, without a full-size
copy. The original oriented size is kept for the mask.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import (
    GifImagePlugin,
    Image,
    JpegImagePlugin,
    PngImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from segmentation.errors import (
    CorruptImageError,
    EmptyObjectError,
    NotAnImageError,
    TooManyPixelsError,
    UnsupportedFormatError,
)

# Pillow plugins tried on open. A multi-picture JPEG (most phone cameras) opens through the JPEG
# plugin and reports format "MPO": a JPEG for every purpose here. Users upload photos from phones
# and the web, which come in these four; every further decoder is attack surface for nothing, so
# BMP and TIFF (libtiff above all) are refused with UnsupportedFormatError like HEIC.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
# Importing exactly these plugins registers them, so `Image.open(formats=...)` never runs Pillow's
# scan of all ~45 plugins (WEBP is not among the few it pre-loads): that scan cost an instance's
# first decode about 100-300 ms. What keeps every other decoder away is `formats=`, not what is
# registered: Pillow itself registers BMP on its first open (`Image.preinit`) and TIFF when it
# parses EXIF or an MPO (TiffImagePlugin holds the IFD parser), and neither is ever tried here.
_ACCEPTED_PLUGINS = (JpegImagePlugin, PngImagePlugin, WebPImagePlugin, GifImagePlugin)
RESAMPLE = Image.Resampling.BILINEAR
EXIF_ORIENTATION = 0x0112
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})

# Mask palette, index = class: 0 pet (orange), 1 background (black), 2 border (white).
PALETTE: tuple[tuple[int, int, int], ...] = ((255, 140, 0), (0, 0, 0), (255, 255, 255))
PNG_COMPRESS_LEVEL = 1  # masks are long runs of 3 values: level 1 is fast and nearly as small

# BMP's DIB header sizes (BITMAPCOREHEADER ... BITMAPV5HEADER), stored at offset 14 after the
# 14-byte file header: "BM" alone starts too much text to name a format by.
_BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)

# Formats we recognise but do not accept, for a precise error reason: the name, then the
# (offset, bytes) that must all match.
_UNSUPPORTED_SIGNATURES: tuple[tuple[str, *tuple[tuple[int, bytes], ...]], ...] = (
    ("HEIC", (4, b"ftypheic")),
    ("HEIC", (4, b"ftypheix")),
    ("HEIC", (4, b"ftyphevc")),
    ("HEIF", (4, b"ftypmif1")),
    ("HEIF", (4, b"ftypmsf1")),
    ("AVIF", (4, b"ftypavif")),
    ("AVIF", (4, b"ftypavis")),
    ("JPEG2000", (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n")),
    ("JPEG2000", (0, b"\xff\x4f\xff\x51")),
    ("JPEG XL", (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n")),
    ("JPEG XL", (0, b"\xff\x0a")),
    ("PSD", (0, b"8BPS")),
    ("ICO", (0, b"\x00\x00\x01\x00")),
    ("QOI", (0, b"qoif")),
    ("PDF", (0, b"%PDF")),
    ("TIFF", (0, b"II*\x00")),
    ("TIFF", (0, b"MM\x00*")),
    ("TIFF", (0, b"II+\x00")),  # BigTIFF
    ("TIFF", (0, b"MM\x00+")),
    *(("BMP", (0, b"BM"), (14, struct.pack("<I", size))) for size in _BMP_HEADER_SIZES),
)


@dataclass(frozen=True)
class DecodedImage:
    """The model input and what the mask needs to know about the original."""

    array: np.ndarray  # (height, width, 3) uint8 RGB at the model's input size, oriented
    original_size: tuple[int, int]  # (width, height) of the full image after orientation
    decoded_size: tuple[int, int]  # (width, height) actually decoded (smaller for JPEG drafts)
    format: str
    mode: str  # the file's pixel mode before conversion
    orientation: int  # EXIF orientation applied (1 = none)


# Longest side accepted, whatever the pixel count: JPEG and GIF cannot go beyond it (WebP stops
# at 16383), and it bounds Pillow's per-row overhead for images like 1x40M.
MAX_SIDE = 65_535


def configure_pillow(max_pixels: int) -> None:
    """Aligns Pillow's own decompression-bomb guard with MAX_IMAGE_PIXELS (process-wide).

    Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that inside `Image.open`; our own
    check rejects everything above the limit anyway, so the warning is silenced.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def decode_image(data: bytes, *, max_pixels: int, size: tuple[int, int]) -> DecodedImage:
    """Validates and preprocesses `data` into an RGB array of `size` (width, height)."""
    if not data:
        raise EmptyObjectError("the object is empty")
    image = _open(data)
    file_mode = image.mode
    width, height = image.size
    if width < 1 or height < 1:
        raise CorruptImageError(f"image declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise TooManyPixelsError(
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}"
        )
    if max(width, height) > MAX_SIDE:
        raise TooManyPixelsError(
            f"{width}x{height}: a side longer than {MAX_SIDE} pixels (Pillow keeps one pointer "
            "per row, so a 1x40M image within the pixel limit would need about 1 GB)"
        )
    _load(image, draft_target=max(size))
    orientation = _orientation(image)  # after load: a PNG may carry eXIf after its pixel data
    swaps = orientation in _SWAPS_AXES
    resize_to = (size[1], size[0]) if swaps else size
    decoded_size = (image.size[1], image.size[0]) if swaps else image.size
    small = _resize(_to_resizable(image), resize_to)
    if orientation in ORIENTATION_TRANSPOSE:
        small = small.transpose(ORIENTATION_TRANSPOSE[orientation])
    return DecodedImage(
        array=_rgb_array(small),
        original_size=(height, width) if swaps else (width, height),
        decoded_size=decoded_size,
        format=str(image.format),
        mode=file_mode,
        orientation=orientation,
    )


def encode_mask(class_map: np.ndarray, size: tuple[int, int]) -> bytes:
    """Encodes a (h, w) class map as a palette PNG of `size` (width, height), NEAREST-resized."""
    if class_map.ndim != 2:
        raise ValueError(f"class map must be 2-D, got shape {class_map.shape}")
    mask = Image.fromarray(np.ascontiguousarray(class_map, dtype=np.uint8))
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    mask.putpalette([channel for colour in PALETTE for channel in colour])
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG", optimize=False, compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except Image.DecompressionBombError as exc:
        raise TooManyPixelsError(str(exc)) from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise CorruptImageError(f"cannot read the image header: {exc}") from None


def _unidentified(data: bytes) -> NotAnImageError | UnsupportedFormatError:
    for name, *parts in _UNSUPPORTED_SIGNATURES:
        if all(data[offset : offset + len(part)] == part for offset, part in parts):
            return UnsupportedFormatError(f"{name} images are not supported")
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in head or (head.startswith(b"<?xml") and b"svg" in head):
        return UnsupportedFormatError("SVG (vector) images are not supported")
    accepted = ", ".join(ACCEPTED_FORMATS)
    return NotAnImageError(f"not an image in an accepted format ({accepted})")


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not make the image unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _load(image: Image.Image, *, draft_target: int) -> None:
    """Decodes the first frame; JPEGs at the smallest DCT scale still >= the model input."""
    try:
        if image.format in ("JPEG", "MPO"):
            image.draft("RGB", (draft_target, draft_target))
        image.load()
    except Image.DecompressionBombError as exc:
        raise TooManyPixelsError(str(exc)) from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError) as exc:
        raise CorruptImageError(f"cannot decode the image: {exc}") from None


def _to_resizable(image: Image.Image) -> Image.Image:
    """Converts to a mode BILINEAR resizes correctly: RGB, RGBa (premultiplied), L, I or F."""
    mode = image.mode
    if mode in ("RGB", "L", "I", "F"):
        return image
    if _has_alpha(image):
        return _convert(image.convert("RGBA") if mode != "RGBA" else image, "RGBa")
    if mode.startswith("I;16"):
        return _convert(image, "I")
    if mode == "1":
        return _convert(image, "L")
    return _convert(image, "RGB")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    )


def _convert(image: Image.Image, mode: str) -> Image.Image:
    try:
        return image.convert(mode)
    except ValueError as exc:
        raise UnsupportedFormatError(f"cannot convert pixel mode {image.mode}: {exc}") from None


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resizes with RESAMPLE, shrinking an axis before growing the other: Pillow's two-pass
    resize runs the horizontal pass first, so growing the width of a tall image in one call
    (1x40M -> 128x128) builds a 128x40M intermediate (about 20 GB). The passes are separable and
    commute, so shrinking first gives the same pixels (up to 8-bit rounding) at a bounded cost."""
    width, height = image.size
    try:
        if (size[0] > width and size[1] < height) or (size[1] > height and size[0] < width):
            image = image.resize((min(width, size[0]), min(height, size[1])), RESAMPLE)
        return image.resize(size, RESAMPLE)
    except (OSError, ValueError) as exc:
        raise CorruptImageError(f"cannot resize the image: {exc}") from None


def _rgb_array(image: Image.Image) -> np.ndarray:
    """(h, w, 3) uint8 from an RGB, RGBa, L, I or F image."""
    if image.mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if image.mode == "RGBa":  # premultiplied over white: c + (255 - a)
        rgba = np.asarray(image, dtype=np.uint16)
        rgb = rgba[..., :3] + (255 - rgba[..., 3:4])
        return np.minimum(rgb, 255).astype(np.uint8)
    if image.mode == "L":
        gray = np.asarray(image, dtype=np.uint8)
    else:
        gray = _scale_to_uint8(np.asarray(image))
    return np.repeat(gray[..., np.newaxis], 3, axis=2)


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Maps 32-bit integer or float samples onto 0..255 by their evident range."""
    finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(finite.min()), float(finite.max())
    if low >= 0.0 and high <= 1.0 and np.issubdtype(values.dtype, np.floating):
        scaled = finite * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = finite
    elif low >= 0.0 and high <= 65535.0:
        scaled = finite / 257.0
    else:
        scaled = (finite - low) * (255.0 / (high - low)) if high > low else finite * 0.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
