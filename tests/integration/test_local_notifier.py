"""segment.notifier builds the message GCS sends, for a blob uploaded to the GCS emulator."""

from __future__ import annotations

import base64
import json

import pytest
from segmentation.events import PUBSUB_EVENT_TYPE, parse_event

from segment import notifier
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

GOLDEN = REPO_ROOT / "tests" / "fixtures" / "events" / "pubsub_push.json"


def test_the_notification_matches_the_golden_message_and_parses(bucket):
    blob = bucket.blob("uploads/cat photo ü.png")
    blob.upload_from_string(b"\x89PNG not really", content_type="image/png")

    data, attributes = notifier.notification_message(notifier.object_resource(blob))

    golden = json.loads(GOLDEN.read_text())["message"]
    golden_resource = json.loads(base64.b64decode(golden["data"]))
    assert set(attributes) == set(golden["attributes"])
    assert attributes["eventType"] == "OBJECT_FINALIZE"
    assert attributes["payloadFormat"] == "JSON_API_V1"
    assert attributes["bucketId"] == bucket.name
    assert attributes["objectId"] == blob.name
    assert attributes["objectGeneration"] == str(blob.generation)
    assert attributes["notificationConfig"] == (
        f"projects/_/buckets/{bucket.name}/notificationConfigs/1"
    )
    resource = json.loads(data)
    assert set(golden_resource) <= set(resource)
    assert resource["size"] == str(len(b"\x89PNG not really"))
    assert resource["generation"] == str(blob.generation)
    assert resource["timeCreated"].endswith("Z")

    # What the function receives after Pub/Sub push + functions-framework's conversion.
    message = {
        "attributes": attributes,
        "data": base64.b64encode(data).decode(),
        "messageId": "42",
        "publishTime": "2026-11-21T13:20:01.123Z",
    }
    event = parse_event({"type": PUBSUB_EVENT_TYPE, "id": "42"}, {"message": message})
    assert event.is_finalize
    assert event.object.name == blob.name
    assert event.object.generation == blob.generation
    assert event.object.size == len(b"\x89PNG not really")
    assert event.object.content_type == "image/png"


def test_other_event_types_keep_the_resource(bucket):
    blob = bucket.blob("gone.png")
    blob.upload_from_string(b"x")
    data, attributes = notifier.notification_message(
        notifier.object_resource(blob), event_type=notifier.OBJECT_DELETE
    )
    assert attributes["eventType"] == "OBJECT_DELETE"
    assert json.loads(data)["name"] == "gone.png"
