"""Parsing the Pub/Sub CloudEvent that carries a GCS notification."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import CloudEvent, from_dict
from segmentation.errors import MalformedEventError
from segmentation.events import (
    PUBSUB_EVENT_TYPE,
    StorageObject,
    message_id_of,
    parse_cloud_event,
    parse_event,
)

from tests.fakes import notifications

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "events"
BUCKET, NAME, GENERATION = "demo-seg-input", "uploads/2026/cat photo ü.png", 1763731200123456
CE_ATTRIBUTES = {"type": PUBSUB_EVENT_TYPE, "id": "ce-id-1", "source": notifications.SOURCE}


def _data(message: dict[str, Any]) -> dict[str, Any]:
    return {"message": message}


def test_golden_eventarc_structured_event() -> None:
    document = json.loads((FIXTURES / "eventarc_structured.json").read_text())
    event = parse_cloud_event(from_dict(document))
    assert event.message_id == "11029301235345091"
    assert event.is_finalize
    assert event.source == notifications.SOURCE
    assert event.publish_time == "2026-11-21T13:20:01.123Z"
    assert event.object == StorageObject(BUCKET, NAME, GENERATION, 48213, "image/png")
    assert event.object.uri == f"gs://{BUCKET}/{NAME}"


def test_golden_push_body_as_functions_framework_converts_it() -> None:
    """event_conversion drops `subscription`, adds `@type`, keeps messageId/publishTime."""
    body = json.loads((FIXTURES / "pubsub_push.json").read_text())
    message = body["message"]
    converted = {
        "@type": "type.googleapis.com/google.pubsub.v1.PubsubMessage",
        "data": message["data"],
        "attributes": message["attributes"],
        "messageId": message["messageId"],
        "publishTime": message["publishTime"],
    }
    attributes = {**CE_ATTRIBUTES, "id": message["messageId"]}
    event = parse_cloud_event(CloudEvent(attributes, {"message": converted}))
    assert event.message_id == "11029301235345093"
    assert event.object == StorageObject(BUCKET, NAME, GENERATION, 48213, "image/png")


@pytest.mark.parametrize("event_type", ["OBJECT_METADATA_UPDATE", "SOMETHING_NEW"])
def test_other_event_types_parse_without_an_object(event_type: str) -> None:
    message = notifications.message(BUCKET, NAME, GENERATION, event_type=event_type, data="!!")
    event = parse_event(CE_ATTRIBUTES, _data(message))
    assert event.event_type == event_type
    assert not event.is_finalize and not event.is_deletion
    assert event.object is None


@pytest.mark.parametrize("event_type", ["OBJECT_DELETE", "OBJECT_ARCHIVE"])
def test_deletion_events_carry_the_object_and_the_overwriting_generation(event_type: str) -> None:
    message = notifications.message(BUCKET, NAME, GENERATION, event_type=event_type)
    event = parse_event(CE_ATTRIBUTES, _data(message))
    assert event.is_deletion and not event.is_finalize
    assert event.object == StorageObject(BUCKET, NAME, GENERATION, 1000, "image/png")
    assert event.overwritten_by_generation is None
    message["attributes"]["overwrittenByGeneration"] = str(GENERATION + 5)
    event = parse_event(CE_ATTRIBUTES, _data(message))
    assert event.overwritten_by_generation == GENERATION + 5
    message["attributes"]["overwrittenByGeneration"] = "soon"
    with pytest.raises(MalformedEventError):
        parse_event(CE_ATTRIBUTES, _data(message))


def test_payload_format_none_leaves_size_unknown() -> None:
    message = notifications.message(BUCKET, NAME, GENERATION, attributes={"payloadFormat": "NONE"})
    del message["data"]
    event = parse_event(CE_ATTRIBUTES, _data(message))
    assert event.object == StorageObject(BUCKET, NAME, GENERATION)


def test_message_id_falls_back_to_the_cloudevent_id() -> None:
    message = notifications.message(BUCKET, NAME, GENERATION)
    del message["messageId"], message["message_id"]
    assert parse_event(CE_ATTRIBUTES, _data(message)).message_id == "ce-id-1"


def test_data_given_as_json_bytes() -> None:
    message = notifications.message(BUCKET, NAME, GENERATION, size=7)
    event = parse_event(CE_ATTRIBUTES, json.dumps(_data(message)).encode())
    assert event.object is not None and event.object.size == 7


def test_folder_placeholder_is_recognised() -> None:
    message = notifications.message(BUCKET, "photos/", GENERATION, size=0)
    event = parse_event(CE_ATTRIBUTES, _data(message))
    assert event.object is not None and event.object.is_folder_placeholder


def _b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


MALFORMED: dict[str, tuple[dict[str, Any], Any]] = {
    "wrong CloudEvent type": (
        {**CE_ATTRIBUTES, "type": "google.cloud.storage.object.v1.finalized"},
        None,
    ),
    "data not JSON": (CE_ATTRIBUTES, b"not json"),
    "data is a list": (CE_ATTRIBUTES, [1, 2]),
    "no message": (CE_ATTRIBUTES, {"subscription": "x"}),
    "no attributes": (CE_ATTRIBUTES, {"message": {"data": "e30=", "messageId": "1"}}),
    "no eventType": (CE_ATTRIBUTES, "attributes:eventType"),
    "no bucketId": (CE_ATTRIBUTES, "attributes:bucketId"),
    "no objectId": (CE_ATTRIBUTES, "attributes:objectId"),
    "no objectGeneration": (CE_ATTRIBUTES, "attributes:objectGeneration"),
    "bad generation": (CE_ATTRIBUTES, {"objectGeneration": "12x"}),
    "name not UTF-8": (CE_ATTRIBUTES, {"objectId": "bad\ud800name"}),
    "zero generation": (CE_ATTRIBUTES, {"objectGeneration": "0"}),
    "negative generation": (CE_ATTRIBUTES, {"objectGeneration": "-3"}),
    "unknown payloadFormat": (CE_ATTRIBUTES, {"payloadFormat": "PROTOBUF"}),
    "bad base64": (CE_ATTRIBUTES, "data:%%%not base64%%%"),
    "base64 of non-JSON": (CE_ATTRIBUTES, "data:" + base64.b64encode(b"\x89PNG").decode()),
    "base64 of a JSON list": (CE_ATTRIBUTES, "data:" + _b64([1])),
    "data not a string": (CE_ATTRIBUTES, "data:int"),
    "payload name disagrees": (CE_ATTRIBUTES, "data:" + _b64({"name": "other.png"})),
    "payload generation disagrees": (CE_ATTRIBUTES, "data:" + _b64({"generation": "5"})),
    "payload size not a number": (CE_ATTRIBUTES, "data:" + _b64({"size": "big"})),
}


def _malformed_data(spec: Any) -> Any:
    if not isinstance(spec, str) or ":" not in spec:
        if isinstance(spec, dict) and "message" not in spec and "subscription" not in spec:
            return _data(notifications.message(BUCKET, NAME, GENERATION, attributes=spec))
        return spec
    where, value = spec.split(":", 1)
    message = notifications.message(BUCKET, NAME, GENERATION)
    if where == "attributes":
        del message["attributes"][value]
    else:
        message["data"] = 12345 if value == "int" else value
    return _data(message)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_messages_raise_malformed_event_error(case: str) -> None:
    attributes, spec = MALFORMED[case]
    with pytest.raises(MalformedEventError):
        parse_event(attributes, _malformed_data(spec))


def test_message_id_of_is_best_effort() -> None:
    message = notifications.message(BUCKET, NAME, GENERATION, message_id="m-7", data="%%%")
    assert message_id_of(CloudEvent(CE_ATTRIBUTES, _data(message))) == "m-7"
    assert message_id_of(CloudEvent(CE_ATTRIBUTES, b"garbage")) == "ce-id-1"
    assert message_id_of(object()) is None
