"""Issue 5's named hostile inputs, each through the whole pipeline (fake store, tiny model):
each ends in a mask of the oriented original size or an error record with a specific reason."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageOps
from segmentation.pipeline import handle_cloud_event
from segmentation.results import Outcome
from segmentation.storage import error_name, mask_name

from tests.fakes import notifications
from tests.fakes.images import GREEN, RED, encode, png_header_only
from tests.fakes.notifications import INPUT_BUCKET, OUTPUT_BUCKET


def _deliver(store, tiny_model, settings, name, data):
    generation = store.put(INPUT_BUCKET, name, data).generation
    message = notifications.message(INPUT_BUCKET, name, generation, size=len(data))
    event = notifications.eventarc_event(message)
    return handle_cloud_event(event, store=store, model=tiny_model, settings=settings)


def _mask(store, name):
    stored = store.get(OUTPUT_BUCKET, mask_name(name))
    assert stored is not None, f"no mask for {name!r}"
    return Image.open(io.BytesIO(stored.data)), stored


def _gradient(size, mode="RGB"):
    width, height = size
    ramp = np.linspace(0, 255, width * height, dtype=np.float64).reshape(height, width)
    rgb = np.stack([ramp, ramp[::-1], np.full_like(ramp, 90)], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb).convert(mode) if mode != "RGB" else Image.fromarray(rgb)


def _sixteen_bit_png():
    data = (np.arange(50 * 30, dtype=np.uint16).reshape(30, 50) * 40).astype(np.uint16)
    return encode(Image.fromarray(data).convert("I;16"), "PNG")


def _animated_gif():
    frames = [_gradient((33, 21)).convert("P"), Image.new("P", (33, 21), 7)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return buffer.getvalue()


MASK_CASES = {
    "one-by-one.png": (encode(_gradient((1, 1)), "PNG"), (1, 1)),
    "one-by-n.png": (encode(_gradient((1, 300)), "PNG"), (1, 300)),
    "n-by-one.webp": (encode(_gradient((300, 1)), "WEBP"), (300, 1)),
    "cmyk.jpg": (encode(_gradient((64, 48), "CMYK"), "JPEG"), (64, 48)),
    "sixteen-bit.png": (_sixteen_bit_png(), (50, 30)),
    "animated.gif": (_animated_gif(), (33, 21)),
}


@pytest.mark.parametrize("name", sorted(MASK_CASES))
def test_unusual_but_valid_images_get_a_mask_of_their_size(store, tiny_model, settings, name):
    data, size = MASK_CASES[name]
    result = _deliver(store, tiny_model, settings, name, data)
    assert result.outcome == Outcome.MASK_WRITTEN, result
    mask, _ = _mask(store, name)
    assert mask.size == size and mask.mode == "P"
    assert set(np.unique(np.asarray(mask))) <= {0, 1, 2}


# EXIF orientation: the stored pixels hold a red strip (the tiny model's class 0, "pet") in the
# top-left corner of a green field (class 1), 30x10 of 60x40: a different place or shape on
# screen for each of the 8 orientations. The mask must follow the strip where a viewer shows it.
STORED_SIZE = (60, 40)  # (width, height) as stored in the file
STRIP = (slice(0, 10), slice(0, 30))  # rows, columns of the red strip in the stored pixels
# What a viewer does to the stored pixels for each EXIF orientation (EXIF 2.3, tag 0x0112),
# written out with numpy, independently of the decoder's table; checked against Pillow's
# ImageOps.exif_transpose below.
DISPLAYED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1, :],  # mirrored top-bottom
    5: lambda a: np.swapaxes(a, 0, 1),  # transposed (mirror + 270 CW)
    6: lambda a: np.rot90(a, k=-1),  # rotated 90 CW
    7: lambda a: np.rot90(a, k=2).swapaxes(0, 1),  # transversed (mirror + 90 CW)
    8: lambda a: np.rot90(a, k=1),  # rotated 90 CCW
}


def _stored_classes() -> np.ndarray:
    classes = np.ones(STORED_SIZE[::-1], np.uint8)  # background
    classes[STRIP] = 0  # pet
    return classes


def _oriented_file(orientation: int, fmt: str) -> bytes:
    colours = np.array([RED, GREEN], np.uint8)[_stored_classes()]
    exif = Image.Exif()
    exif[0x0112] = orientation
    params = {"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}
    return encode(Image.fromarray(colours), fmt, exif=exif.tobytes(), **params)


def _near_a_boundary(classes: np.ndarray, margin: int) -> np.ndarray:
    """Pixels within `margin` (Chebyshev) of a pixel of another class."""
    padded = np.pad(classes, margin, mode="edge")
    height, width = classes.shape
    near = np.zeros(classes.shape, bool)
    for dy in range(2 * margin + 1):
        for dx in range(2 * margin + 1):
            near |= padded[dy : dy + height, dx : dx + width] != classes
    return near


def _pet_centroid(classes: np.ndarray) -> np.ndarray:
    return np.argwhere(classes == 0).mean(axis=0)


def test_the_orientation_cases_put_the_strip_in_eight_different_places():
    shown = {o: DISPLAYED[o](_stored_classes()) for o in DISPLAYED}
    assert len({(m.shape, m.tobytes()) for m in shown.values()}) == 8


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_gives_a_mask_aligned_with_the_oriented_image(
    store, tiny_model, settings, orientation, fmt
):
    name = f"rotated-{orientation}.{fmt.lower()}"
    data = _oriented_file(orientation, fmt)
    expected = DISPLAYED[orientation](_stored_classes())
    interior = ~_near_a_boundary(expected, margin=2)
    # The numpy table agrees with Pillow's reading of the file as a viewer would show it.
    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert reference.shape[:2] == expected.shape
    assert np.array_equal(np.argmax(reference, axis=-1)[interior], expected[interior])

    result = _deliver(store, tiny_model, settings, name, data)
    assert result.outcome == Outcome.MASK_WRITTEN, result
    mask, stored = _mask(store, name)
    classes = np.asarray(mask)
    assert mask.size == (expected.shape[1], expected.shape[0])
    assert stored.info.metadata["image-width"] == str(expected.shape[1])
    # Aligned: every pixel away from the strip's edge has the class shown there; at the edge
    # (the 128x128 model input resampled back) at most a pixel's band differs; the strip's
    # centre is where the viewer shows it.
    assert np.array_equal(classes[interior], expected[interior])
    assert np.count_nonzero(classes != expected) <= np.count_nonzero(
        _near_a_boundary(expected, margin=1)
    )
    assert np.abs(_pet_centroid(classes) - _pet_centroid(expected)).max() <= 1.0


def _truncated_jpeg():
    data = encode(_gradient((200, 150)), "JPEG")
    return data[: len(data) // 2]


ERROR_CASES = {
    "bomb.png": (png_header_only(30000, 30000), "too_many_pixels"),
    "wide-bomb.png": (png_header_only(200_000, 300), "too_many_pixels"),
    "truncated.jpg": (_truncated_jpeg(), "corrupt_image"),
    "page.jpg": (b"<!DOCTYPE html><html><body>not a cat</body></html>", "not_an_image"),
    "drawing.jpg": (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
        None,  # not_an_image or unsupported_format: both name the problem
    ),
}


@pytest.mark.parametrize("name", sorted(ERROR_CASES))
def test_hostile_files_get_an_error_record_with_a_specific_reason(
    store, tiny_model, settings, name
):
    data, reason = ERROR_CASES[name]
    result = _deliver(store, tiny_model, settings, name, data)
    assert result.outcome == Outcome.ERROR_RECORDED
    record = json.loads(store.get(OUTPUT_BUCKET, error_name(name)).data)
    assert record["error"]["reason"] == result.reason
    allowed = {reason} if reason else {"not_an_image", "unsupported_format"}
    assert record["error"]["reason"] in allowed
    assert store.get(OUTPUT_BUCKET, mask_name(name)) is None


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("scan.tif", "TIFF"), ("screenshot.bmp", "BMP"), ("renamed-scan.jpg", "TIFF")],
)
def test_bmp_and_tiff_get_an_error_record_naming_the_format(store, tiny_model, settings, name, fmt):
    # Not accepted any more (decoder attack surface): refused like HEIC, whatever the name says.
    data = encode(_gradient((40, 30)), fmt)
    result = _deliver(store, tiny_model, settings, name, data)
    assert result.outcome == Outcome.ERROR_RECORDED
    assert result.reason == "unsupported_format"
    record = json.loads(store.get(OUTPUT_BUCKET, error_name(name)).data)
    assert record["error"]["reason"] == "unsupported_format"
    assert record["error"]["message"] == f"{fmt} images are not supported"
    assert store.get(OUTPUT_BUCKET, mask_name(name)) is None


@pytest.mark.parametrize(
    "name",
    [
        "fotos/猫 im Garten 🐈.png",
        "with spaces/and  double  spaces.png",
        "../../etc/passwd.png",
        "a/./b/../c.png",
        "deep/" * 250 + "long.png",
    ],
)
def test_hostile_names_keep_output_inside_the_output_prefix(store, tiny_model, settings, name):
    result = _deliver(store, tiny_model, settings, name, encode(_gradient((20, 10)), "PNG"))
    assert result.outcome == Outcome.MASK_WRITTEN
    written = [n for n in store.names(OUTPUT_BUCKET)]
    assert written == [mask_name(name)]
    assert written[0].startswith("masks/") and len(written[0].encode()) <= 1024
    assert not {".", ".."} & set(written[0].split("/"))
    assert store.names(INPUT_BUCKET) == [name]  # nothing written to the input bucket
