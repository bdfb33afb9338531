"""Builders for Cloud Storage notifications as Pub/Sub messages and as CloudEvents.

A bucket notification (payload JSON_API_V1) is a Pub/Sub message whose attributes describe the
event and whose data is the object resource as base64 JSON. It reaches the function either as an
Eventarc CloudEvent (`eventarc_event`) or as a raw push body that functions-framework converts
(`push_body`, posted to a URL path naming the topic).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cloudevents.http import CloudEvent

INPUT_BUCKET = "demo-seg-input"
OUTPUT_BUCKET = "demo-seg-output"
PROJECT = "demo-project"
TOPIC = "seg-uploads"
PUBSUB_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
SOURCE = f"//pubsub.googleapis.com/projects/{PROJECT}/topics/{TOPIC}"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/{TOPIC}-push"
PUBLISH_TIME = "2026-11-21T13:20:01.123Z"


def object_resource(
    bucket: str, name: str, generation: int, size: int, content_type: str = "image/png"
) -> dict[str, Any]:
    """The JSON_API_V1 object resource GCS puts in the message data (int64s as strings)."""
    return {
        "kind": "storage#object",
        "id": f"{bucket}/{name}/{generation}",
        "name": name,
        "bucket": bucket,
        "generation": str(generation),
        "metageneration": "1",
        "contentType": content_type,
        "timeCreated": "2026-11-21T13:20:00.456Z",
        "updated": "2026-11-21T13:20:00.456Z",
        "storageClass": "STANDARD",
        "size": str(size),
        "md5Hash": "1B2M2Y8AsgTpgAmY7PhCfg==",
        "crc32c": "AAAAAA==",
        "etag": "CKih16GjycICEAE=",
    }


def message(
    bucket: str,
    name: str,
    generation: int,
    *,
    size: int = 1000,
    event_type: str = "OBJECT_FINALIZE",
    message_id: str = "11029301235345091",
    resource: dict[str, Any] | None = None,
    data: str | None = None,
    attributes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Pub/Sub message as GCS publishes it (override any part to break it)."""
    if data is None:
        body = resource if resource is not None else object_resource(bucket, name, generation, size)
        data = base64.b64encode(json.dumps(body).encode()).decode()
    attrs = {
        "bucketId": bucket,
        "objectId": name,
        "objectGeneration": str(generation),
        "eventTime": "2026-11-21T13:20:00.456789Z",
        "eventType": event_type,
        "notificationConfig": f"projects/_/buckets/{bucket}/notificationConfigs/1",
        "payloadFormat": "JSON_API_V1",
    }
    attrs.update(attributes or {})
    return {
        "attributes": attrs,
        "data": data,
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": PUBLISH_TIME,
        "publish_time": PUBLISH_TIME,
    }


def eventarc_event(pubsub_message: dict[str, Any]) -> CloudEvent:
    """The CloudEvent Eventarc delivers for a Pub/Sub message."""
    attributes = {
        "specversion": "1.0",
        "id": pubsub_message.get("messageId", "1"),
        "source": SOURCE,
        "type": PUBSUB_TYPE,
        "datacontenttype": "application/json",
        "time": PUBLISH_TIME,
    }
    data = {"message": pubsub_message, "subscription": f"projects/{PROJECT}/subscriptions/ea"}
    return CloudEvent(attributes, data)


def push_body(pubsub_message: dict[str, Any]) -> dict[str, Any]:
    """The body a Pub/Sub push subscription POSTs."""
    return {"message": pubsub_message, "subscription": SUBSCRIPTION}


def push_path() -> str:
    """The push endpoint path that makes functions-framework derive the right `source`."""
    return f"/projects/{PROJECT}/topics/{TOPIC}"
