"""Publishes the Cloud Storage notification for an upload, exactly as GCS would.

No GCS emulator publishes bucket notifications (docs/architecture.md, decision 6), so the local
stack, `segment upload` on emulators and the tests all publish them through this module after an
upload. The message is what a notification config with `payload_format=JSON_API_V1` sends:

* attributes: eventType, bucketId, objectId, objectGeneration, eventTime, payloadFormat,
  notificationConfig (`projects/_/buckets/B/notificationConfigs/N`);
* data: the object's JSON API resource (int64 fields as strings, RFC 3339 times).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from segmentation.events import OBJECT_FINALIZE, PAYLOAD_JSON  # what the function accepts

OBJECT_DELETE = "OBJECT_DELETE"
OBJECT_ARCHIVE = "OBJECT_ARCHIVE"
OBJECT_METADATA_UPDATE = "OBJECT_METADATA_UPDATE"
# The notification's attributes (GCS's names; segmentation.events reads them as literals).
ATTR_EVENT_TYPE = "eventType"
ATTR_BUCKET_ID = "bucketId"
ATTR_OBJECT_ID = "objectId"
ATTR_OBJECT_GENERATION = "objectGeneration"
NOTIFICATION_CONFIG_ID = "1"
PUBLISH_TIMEOUT_S = 30.0


def rfc3339(moment: datetime | None) -> str | None:
    """GCS's time format: UTC, milliseconds, `Z`."""
    if moment is None:
        return None
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def object_resource(blob: Any) -> dict[str, Any]:
    """The JSON API object resource of a (reloaded or just uploaded) `storage.Blob`."""
    resource: dict[str, Any] = {
        "kind": "storage#object",
        "id": f"{blob.bucket.name}/{blob.name}/{blob.generation}",
        "name": blob.name,
        "bucket": blob.bucket.name,
        "generation": str(blob.generation),
        "metageneration": str(blob.metageneration or 1),
        "contentType": blob.content_type,
        "timeCreated": rfc3339(blob.time_created),
        "updated": rfc3339(blob.updated),
        "storageClass": blob.storage_class,
        "size": None if blob.size is None else str(blob.size),
        "md5Hash": blob.md5_hash,
        "crc32c": blob.crc32c,
        "etag": blob.etag,
        "metadata": dict(blob.metadata) if blob.metadata else None,
    }
    return {key: value for key, value in resource.items() if value is not None}


def notification_attributes(
    resource: Mapping[str, Any],
    *,
    event_type: str = OBJECT_FINALIZE,
    event_time: str | None = None,
    config_id: str = NOTIFICATION_CONFIG_ID,
) -> dict[str, str]:
    """The message attributes GCS sets for an event on the object `resource` describes."""
    bucket = str(resource["bucket"])
    when = event_time or resource.get("updated") or rfc3339(datetime.now(UTC))
    return {
        ATTR_EVENT_TYPE: event_type,
        ATTR_BUCKET_ID: bucket,
        ATTR_OBJECT_ID: str(resource["name"]),
        ATTR_OBJECT_GENERATION: str(resource["generation"]),
        "eventTime": str(when),
        "payloadFormat": PAYLOAD_JSON,
        "notificationConfig": f"projects/_/buckets/{bucket}/notificationConfigs/{config_id}",
    }


def notification_message(
    resource: Mapping[str, Any], *, event_type: str = OBJECT_FINALIZE
) -> tuple[bytes, dict[str, str]]:
    """(data, attributes) of the notification for `resource`."""
    data = json.dumps(dict(resource), separators=(",", ":")).encode()
    return data, notification_attributes(resource, event_type=event_type)


def publish(publisher: Any, topic_path: str, data: bytes, attributes: Mapping[str, str]) -> str:
    """Publishes one message and waits for its id."""
    future = publisher.publish(topic_path, data, **dict(attributes))
    return str(future.result(timeout=PUBLISH_TIMEOUT_S))


def publish_notification(
    publisher: Any, topic_path: str, blob: Any, *, event_type: str = OBJECT_FINALIZE
) -> str:
    """Publishes the notification GCS would send for `blob` (an uploaded `storage.Blob`)."""
    data, attributes = notification_message(object_resource(blob), event_type=event_type)
    return publish(publisher, topic_path, data, attributes)
