"""Property-based tests: any message and any bytes end in a result or a typed permanent error.

Never another exception type (which the function would treat as transient and retry forever
until dead-lettering), never a path outside the output prefixes.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from segmentation.errors import InputError, MalformedEventError
from segmentation.events import PUBSUB_EVENT_TYPE, parse_event
from segmentation.imaging import decode_image
from segmentation.storage import MAX_OBJECT_NAME_BYTES, error_name, mask_name

MODEL_SIZE = (128, 128)
MAX_PIXELS = 4_000_000

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


@settings(max_examples=300, deadline=None)
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


@settings(max_examples=200, deadline=None)
@given(attributes=st.dictionaries(st.text(max_size=10), json_values), data=json_values)
def test_any_cloud_event_shape_parses_or_is_malformed(attributes, data):
    with contextlib.suppress(MalformedEventError):
        parse_event(attributes, data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2048))
def test_any_bytes_decode_or_raise_an_input_error(data):
    try:
        decoded = decode_image(data, max_pixels=MAX_PIXELS, size=MODEL_SIZE)
    except InputError:
        return
    assert decoded.array.shape == (128, 128, 3)


def _encoded(fmt: str, size=(40, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 120).save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = {fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(sorted(SEEDS)),
    cut=st.integers(min_value=0, max_value=400),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=6),
)
def test_damaged_images_decode_or_raise_an_input_error(fmt, cut, flips):
    data = bytearray(SEEDS[fmt])
    for position, mask in flips:
        data[position % len(data)] ^= mask
    if cut:
        data = data[: max(1, len(data) - cut)]
    try:
        decoded = decode_image(bytes(data), max_pixels=MAX_PIXELS, size=MODEL_SIZE)
    except InputError:
        return
    assert decoded.array.shape == (128, 128, 3)


@settings(max_examples=500, deadline=None)
@given(name=st.text(min_size=1, max_size=1100))
@pytest.mark.parametrize(("name_of", "prefix"), [(mask_name, "masks/"), (error_name, "errors/")])
def test_output_names_stay_under_their_prefix(name_of, prefix, name):
    output = name_of(name)
    assert output.startswith(prefix)
    assert len(output.encode()) <= MAX_OBJECT_NAME_BYTES
    assert not any(segment in (".", "..") for segment in output[len(prefix) :].split("/"))
