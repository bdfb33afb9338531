"""Property-based tests: any message and any bytes end in a result or a typed permanent error.

Never another exception type (which the function would treat as transient and retry forever
until dead-lettering), never a path outside the output prefixes, never a hang or unbounded memory.

Bounds that can fail:
* time: a hypothesis `deadline` per example (generous for a busy 2-core CI machine: the examples
  take milliseconds) and a pytest-timeout per test, which also ends a true hang;
* memory, on the image path (decode -> predict with the tiny model -> encode the mask): the
  growth of the process's peak resident set during one example. tracemalloc cannot do this: it
  sees numpy's buffers but not Pillow's, which are C allocations (a 4000x4000 RGB image shows as
  under 1 KB). So each example resets the kernel's high-water mark (`/proc/self/clear_refs` 5)
  and reads `VmHWM` after. The bound scales with the pixel limit the way the deployment's does:
  1 GiB per instance at MAX_IMAGE_PIXELS=40M is ~26 bytes a pixel; here 24 bytes a pixel plus
  32 MiB for the interpreter and Python, at a 1M-pixel limit (~56 MiB);
* size: every image that decodes is within the pixel limit and its mask is the oriented size
  (the direct check of the bomb guard; the memory bound catches costs the pixel count misses).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import io
import json
import math
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from segmentation.errors import InputError, MalformedEventError, TooManyPixelsError
from segmentation.events import PUBSUB_EVENT_TYPE, parse_event
from segmentation.imaging import ACCEPTED_FORMATS, MAX_SIDE, decode_image, encode_mask
from segmentation.model import SegmentationModel
from segmentation.storage import MAX_OBJECT_NAME_BYTES, error_name, mask_name

from tests.fakes.images import encode

MODEL_SIZE = (128, 128)
MAX_PIXELS = 1_000_000
PARSE_DEADLINE = timedelta(seconds=2)  # examples take microseconds
IMAGE_DEADLINE = timedelta(seconds=5)  # examples take milliseconds to ~0.2 s
MEMORY_BOUND = 32 * 2**20 + 24 * MAX_PIXELS  # bytes of peak RSS growth per example
TEST_TIMEOUT_S = 300  # the whole property; ends a hang the deadline cannot see
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    return int(match[1]) * 1024 if match else 0


def _libc_malloc_trim() -> ctypes._CFuncPtr | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


MALLOC_TRIM = _libc_malloc_trim()


def _reset_peak() -> bool:
    try:
        CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        return False
    return True


class PeakGrowth:
    """Peak resident-set growth of this process over a `with` block, in bytes.

    Counts Pillow's C allocations and numpy's alike. It measures growth over the RSS at the
    start, after glibc's `malloc_trim` has handed freed heap back to the kernel (without it,
    a big image freed earlier leaves heap that later allocations reuse unseen). Without /proc
    (not Linux) it reports 0; without a writable clear_refs it only sees peaks above the
    process's earlier high-water mark.
    """

    bytes = 0

    def __enter__(self) -> PeakGrowth:
        self._proc = STATUS.exists()
        if self._proc:
            if MALLOC_TRIM is not None:
                MALLOC_TRIM(0)
            _reset_peak()
            self._start = _status_bytes("VmRSS")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._proc:
            self.bytes = max(0, _status_bytes("VmHWM") - self._start)


@contextlib.contextmanager
def bounded(limit: int = MEMORY_BOUND) -> Iterator[PeakGrowth]:
    """Asserts the block's peak RSS growth stays within `limit` (also when it raises)."""
    probe = PeakGrowth()
    try:
        with probe:
            yield probe
    finally:
        assert probe.bytes <= limit, f"peak RSS grew {probe.bytes / 2**20:.0f} MiB"


def segment_bytes(data: bytes, model: SegmentationModel, *, max_pixels: int = MAX_PIXELS) -> None:
    """The function's image path on `data`: a mask of the oriented size, or an InputError."""
    with bounded():
        decoded = decode_image(data, max_pixels=max_pixels, size=model.input_size)
        classes = model.predict(decoded.array)
        png = encode_mask(classes, decoded.original_size)
    assert decoded.array.shape == (*MODEL_SIZE[::-1], 3)
    width, height = decoded.original_size
    assert width * height <= max_pixels
    mask = Image.open(io.BytesIO(png))
    assert mask.size == decoded.original_size and mask.mode == "P"
    assert int(np.asarray(mask).max()) <= 2  # class indices only


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
attribute_values = st.one_of(
    st.text(max_size=30), st.integers(), st.none(), st.sampled_from(["OBJECT_FINALIZE", "", "0"])
)
notification_attributes = st.fixed_dictionaries(
    {},
    optional={
        "eventType": st.sampled_from(["OBJECT_FINALIZE", "OBJECT_DELETE", ""]) | attribute_values,
        "bucketId": attribute_values,
        "objectId": attribute_values,
        "objectGeneration": attribute_values | st.integers().map(str),
        "payloadFormat": st.sampled_from(["JSON_API_V1", "NONE", "XML"]) | attribute_values,
    },
)
message_data = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
    json_values.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()),
)


@pytest.mark.timeout(TEST_TIMEOUT_S)
@settings(max_examples=300, deadline=PARSE_DEADLINE)
@given(
    attributes=notification_attributes,
    data=message_data,
    message_extra=st.dictionaries(st.sampled_from(["messageId", "publishTime"]), json_scalars),
)
def test_any_notification_parses_or_is_malformed(attributes, data, message_extra):
    envelope = {"message": {"attributes": attributes, "data": data, **message_extra}}
    try:
        event = parse_event({"type": PUBSUB_EVENT_TYPE, "id": "1"}, envelope)
    except MalformedEventError:
        return
    if event.is_finalize:
        assert event.object is not None and event.object.generation >= 1
        assert event.object.bucket and event.object.name


@pytest.mark.timeout(TEST_TIMEOUT_S)
@settings(max_examples=200, deadline=PARSE_DEADLINE)
@given(attributes=st.dictionaries(st.text(max_size=10), json_values), data=json_values)
def test_any_cloud_event_shape_parses_or_is_malformed(attributes, data):
    with contextlib.suppress(MalformedEventError):
        parse_event(attributes, data)


@pytest.mark.timeout(TEST_TIMEOUT_S)
@settings(max_examples=200, deadline=IMAGE_DEADLINE, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2048))
def test_any_bytes_give_a_mask_or_an_input_error(tiny_model, data):
    with contextlib.suppress(InputError):
        segment_bytes(data, tiny_model)


def _encoded(fmt: str, size=(40, 30), mode="RGB") -> bytes:
    return encode(Image.new(mode, size, 120), fmt)


# The accepted formats only: BMP and TIFF are refused by their signature before any decoder runs
# (test_segmentation_imaging), so damaging them would exercise no decoder.
SEEDS = {fmt: _encoded(fmt) for fmt in ACCEPTED_FORMATS}


@pytest.mark.timeout(TEST_TIMEOUT_S)
@settings(max_examples=250, deadline=IMAGE_DEADLINE, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(sorted(SEEDS)),
    cut=st.integers(min_value=0, max_value=400),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=6),
)
def test_damaged_images_give_a_mask_or_an_input_error(tiny_model, fmt, cut, flips):
    data = bytearray(SEEDS[fmt])
    for position, mask in flips:
        data[position % len(data)] ^= mask
    if cut:
        data = data[: max(1, len(data) - cut)]
    with contextlib.suppress(InputError):
        segment_bytes(bytes(data), tiny_model)


# Valid images of any size around the pixel limit, in every mode the decoder converts. Solid
# colour compresses, so a file of a few KB can declare a million pixels (as a bomb would).
MODES = {  # mode -> accepted formats that store it (I and F came only in TIFF, no longer accepted)
    "RGB": ("PNG", "JPEG", "WEBP"),
    "RGBA": ("PNG", "WEBP"),
    "L": ("PNG", "JPEG", "GIF"),
    "LA": ("PNG",),
    "P": ("PNG", "GIF"),
    "1": ("PNG",),
    "I;16": ("PNG",),
    "CMYK": ("JPEG",),
}
LARGEST_SIDE = {"WEBP": 16_383, "JPEG": 65_500, "GIF": 65_535}  # encoders' limits


@st.composite
def image_files(draw: st.DrawFn) -> bytes:
    mode = draw(st.sampled_from(sorted(MODES)))
    fmt = draw(st.sampled_from(MODES[mode]))
    most = 2 * MAX_PIXELS if fmt not in ("JPEG", "WEBP") else MAX_PIXELS  # slow encoders
    # Half small images, half from half the limit to twice it; any aspect, 1xN and Nx1 included.
    pixels = draw(st.integers(1, 10_000) | st.integers(MAX_PIXELS // 2, most))
    aspect = draw(st.floats(-6.5, 6.5))  # log10(width / height)
    side = LARGEST_SIDE.get(fmt, 2 * MAX_PIXELS)
    width = min(side, max(1, round(math.sqrt(pixels * 10**aspect))))
    height = min(side, max(1, pixels // width))
    colour = draw(st.integers(0, 255))
    bands = Image.getmodebands(mode)
    image = Image.new(mode, (width, height), colour if bands == 1 else (colour,) * bands)
    return _encode(image, fmt)


def _encode(image: Image.Image, fmt: str) -> bytes:
    return encode(image, fmt, **({"compress_level": 1} if fmt == "PNG" else {}))


@pytest.mark.timeout(TEST_TIMEOUT_S)
@settings(
    max_examples=100,
    deadline=IMAGE_DEADLINE,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=image_files())
def test_images_of_any_size_and_mode_stay_within_time_and_memory(tiny_model, data):
    with Image.open(io.BytesIO(data)) as image:
        pixels = image.size[0] * image.size[1]
    event("over the limit" if pixels > MAX_PIXELS else f"{pixels // 100_000 * 100}k+ pixels")
    with contextlib.suppress(InputError):
        segment_bytes(data, tiny_model)


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_a_one_pixel_wide_image_at_the_longest_side_stays_within_time_and_memory(tiny_model):
    """1 x MAX_SIDE RGB: resized straight to the model input, Pillow's horizontal pass comes
    first and builds a 128 x 65535 intermediate (~33 MiB; it was ~500 MiB for 1 x 1M and ~20 GB
    for 1 x 40M before sides were capped). Shrinking the long side first keeps it small."""
    data = _encode(Image.new("RGB", (1, MAX_SIDE), (200, 10, 10)), "PNG")
    started = time.monotonic()
    with bounded(16 * 2**20):
        decoded = decode_image(data, max_pixels=MAX_PIXELS, size=MODEL_SIZE)
        encode_mask(tiny_model.predict(decoded.array), decoded.original_size)
    assert time.monotonic() - started < IMAGE_DEADLINE.total_seconds()
    assert decoded.original_size == (1, MAX_SIDE)


def test_a_side_over_the_limit_is_a_permanent_error_before_decoding():
    data = _encode(Image.new("L", (1, MAX_SIDE + 1), 200), "PNG")
    with bounded(16 * 2**20), pytest.raises(TooManyPixelsError, match="a side longer"):
        decode_image(data, max_pixels=MAX_PIXELS, size=MODEL_SIZE)


def test_the_memory_probe_sees_pillow_allocations():
    with PeakGrowth() as probe:
        image = Image.new("RGB", (4000, 4000), 7)  # 64 MB of C memory, invisible to tracemalloc
    del image
    assert probe.bytes >= 48 * 2**20
    with pytest.raises(AssertionError, match="peak RSS grew"), bounded(16 * 2**20):
        Image.new("RGB", (4000, 4000), 7)


@settings(max_examples=500, deadline=PARSE_DEADLINE)
@given(name=st.text(min_size=1, max_size=1100))
@pytest.mark.parametrize(("name_of", "prefix"), [(mask_name, "masks/"), (error_name, "errors/")])
def test_output_names_stay_under_their_prefix(name_of, prefix, name):
    output = name_of(name)
    assert output.startswith(prefix)
    assert len(output.encode()) <= MAX_OBJECT_NAME_BYTES
    assert not any(segment in (".", "..") for segment in output[len(prefix) :].split("/"))
