"""Test images: encoded in memory with Pillow, coloured so the tiny model's mask is predictable.

The tiny model classifies each pixel by its dominant channel: red -> 0 (pet), green -> 1
(background), blue -> 2 (border). `halves()` is red on the left and green on the right.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

RED, GREEN, BLUE = (220, 20, 20), (20, 220, 20), (20, 20, 220)


def halves(width: int = 64, height: int = 48) -> Image.Image:
    """Red left half, green right half (RGB)."""
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = GREEN
    return Image.fromarray(pixels)


def encode(image: Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def halves_png(width: int = 64, height: int = 48) -> bytes:
    return encode(halves(width, height), "PNG")


def decode_mask(data: bytes) -> Image.Image:
    mask = Image.open(io.BytesIO(data))
    mask.load()
    return mask


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` but holds no pixel data (a bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
