"""Parses the Pub/Sub CloudEvent carrying a Cloud Storage notification.

Two deliveries of the same Pub/Sub message arrive as the same CloudEvent type
(`google.cloud.pubsub.topic.v1.messagePublished`):

* Eventarc (binary or structured CloudEvent):
  data = {"message": {"attributes", "data", "messageId", "publishTime"}, "subscription": ...}
* a push subscription posting the raw Pub/Sub body, which functions-framework 3.10.2 converts
  (event_conversion.marshal_background_event_data): id = messageId, source =
  //pubsub.googleapis.com/projects/P/topics/T taken from the push URL path (empty topic when the
  path does not name one), data = {"message": {"@type", "data", "attributes", "messageId",
  "publishTime"}} without "subscription".

The message attributes come from the bucket notification (eventType, bucketId, objectId,
objectGeneration, payloadFormat, ...); with payloadFormat JSON_API_V1 the data is the object
resource, with NONE there is no data and the size comes from the object's metadata later.
OBJECT_FINALIZE (an upload), OBJECT_DELETE and OBJECT_ARCHIVE (a generation removed, or made
noncurrent in a versioned bucket; `overwrittenByGeneration` is set when an upload replaced it)
carry the object; other event types are parsed no further.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from segmentation.errors import MalformedEventError

PUBSUB_EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
OBJECT_FINALIZE = "OBJECT_FINALIZE"
OBJECT_DELETE = "OBJECT_DELETE"
OBJECT_ARCHIVE = "OBJECT_ARCHIVE"
OBJECT_EVENT_TYPES = (OBJECT_FINALIZE, OBJECT_DELETE, OBJECT_ARCHIVE)
DELETION_EVENT_TYPES = (OBJECT_DELETE, OBJECT_ARCHIVE)
PAYLOAD_JSON = "JSON_API_V1"
PAYLOAD_NONE = "NONE"


@dataclass(frozen=True)
class StorageObject:
    """The uploaded object as the notification describes it (one immutable generation)."""

    bucket: str
    name: str
    generation: int
    size: int | None = None
    content_type: str | None = None

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    @property
    def is_folder_placeholder(self) -> bool:
        return self.name.endswith("/")


@dataclass(frozen=True)
class UploadEvent:
    """One parsed notification. `object` is None only for event types we ignore.

    `overwritten_by_generation` (OBJECT_DELETE / OBJECT_ARCHIVE only): the generation of the
    upload that replaced this one, when an overwrite (not a deletion) removed it."""

    message_id: str
    event_type: str
    object: StorageObject | None
    publish_time: str | None = None
    source: str | None = None
    overwritten_by_generation: int | None = None

    @property
    def is_finalize(self) -> bool:
        return self.event_type == OBJECT_FINALIZE

    @property
    def is_deletion(self) -> bool:
        """OBJECT_DELETE or OBJECT_ARCHIVE: this generation is no longer the live object."""
        return self.event_type in DELETION_EVENT_TYPES


def parse_cloud_event(cloud_event: Any) -> UploadEvent:
    """Parses a `cloudevents` CloudEvent (anything with `__getitem__`/`get` and `.data`)."""
    try:
        attributes = dict(cloud_event.get_attributes())
    except AttributeError:
        attributes = {k: cloud_event.get(k) for k in ("id", "type", "source", "time")}
    return parse_event(attributes, cloud_event.data)


def message_id_of(cloud_event: Any) -> str | None:
    """Best-effort message id for logging an event that failed to parse (else the CE id)."""
    try:
        message = _as_mapping(cloud_event.data).get("message")
        value = message.get("messageId") or message.get("message_id")
    except Exception:
        value = None
    if not value:
        try:
            value = cloud_event.get("id")
        except Exception:
            return None
    return str(value) if value else None


def parse_event(attributes: Mapping[str, Any], data: Any) -> UploadEvent:
    """Parses CloudEvent context attributes and data; raises `MalformedEventError`."""
    event_type = attributes.get("type")
    if event_type != PUBSUB_EVENT_TYPE:
        raise MalformedEventError(f"unexpected CloudEvent type {event_type!r}")
    message = _as_mapping(data).get("message")
    if not isinstance(message, Mapping):
        raise MalformedEventError("CloudEvent data has no Pub/Sub 'message' object")
    message_id = str(
        message.get("messageId") or message.get("message_id") or attributes.get("id") or ""
    )
    notification = message.get("attributes")
    if not isinstance(notification, Mapping):
        raise MalformedEventError("Pub/Sub message has no attributes")
    gcs_event_type = notification.get("eventType")
    if not isinstance(gcs_event_type, str) or not gcs_event_type:
        raise MalformedEventError("notification attribute 'eventType' is missing")
    publish_time = message.get("publishTime") or message.get("publish_time")
    source = attributes.get("source")
    if gcs_event_type not in OBJECT_EVENT_TYPES:
        return UploadEvent(message_id, gcs_event_type, None, publish_time, source)
    storage_object = _storage_object(notification, message.get("data"))
    overwritten_by = None
    if gcs_event_type in DELETION_EVENT_TYPES and notification.get("overwrittenByGeneration"):
        overwritten_by = _parse_int(
            notification["overwrittenByGeneration"], "overwrittenByGeneration"
        )
    return UploadEvent(
        message_id, gcs_event_type, storage_object, publish_time, source, overwritten_by
    )


def _storage_object(notification: Mapping[str, Any], encoded: Any) -> StorageObject:
    bucket = _required_attribute(notification, "bucketId")
    name = _required_attribute(notification, "objectId")
    generation = _parse_int(_required_attribute(notification, "objectGeneration"), "generation")
    if generation < 1:
        raise MalformedEventError(f"object generation {generation} is not positive")
    payload_format = notification.get("payloadFormat", PAYLOAD_JSON)
    if payload_format == PAYLOAD_NONE or (payload_format == PAYLOAD_JSON and not encoded):
        # NONE carries no resource; an empty JSON_API_V1 payload gets the same treatment.
        return StorageObject(bucket, name, generation)
    if payload_format != PAYLOAD_JSON:
        raise MalformedEventError(f"unsupported payloadFormat {payload_format!r}")
    resource = _decode_resource(encoded)
    _check_consistent(resource, bucket=bucket, name=name, generation=generation)
    size = resource.get("size")
    content_type = resource.get("contentType")
    return StorageObject(
        bucket=bucket,
        name=name,
        generation=generation,
        size=None if size is None else _parse_int(size, "size"),
        content_type=content_type if isinstance(content_type, str) else None,
    )


def _decode_resource(encoded: Any) -> Mapping[str, Any]:
    if not isinstance(encoded, str | bytes):
        raise MalformedEventError("Pub/Sub message data is not a base64 string")
    try:
        raw = base64.b64decode(encoded, validate=True)
        resource = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise MalformedEventError(f"Pub/Sub message data is not base64 JSON: {exc}") from None
    if not isinstance(resource, Mapping):
        raise MalformedEventError("notification payload is not a JSON object")
    return resource


def _check_consistent(
    resource: Mapping[str, Any], *, bucket: str, name: str, generation: int
) -> None:
    expected = {"bucket": bucket, "name": name, "generation": str(generation)}
    for key, value in expected.items():
        found = resource.get(key)
        if found is not None and str(found) != value:
            raise MalformedEventError(
                f"payload {key} {found!r} disagrees with the notification's {value!r}"
            )


def _required_attribute(notification: Mapping[str, Any], key: str) -> str:
    value = notification.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedEventError(f"notification attribute {key!r} is missing")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedEventError(f"notification attribute {key!r} is not valid UTF-8") from None
    return value


def _parse_int(value: Any, what: str) -> int:
    try:
        number = int(str(value), 10)
    except ValueError:
        raise MalformedEventError(f"object {what} {value!r} is not an integer") from None
    if number < 0:
        raise MalformedEventError(f"object {what} {value!r} is negative")
    return number


def _as_mapping(data: Any) -> Mapping[str, Any]:
    """CloudEvent data is normally a dict; a non-JSON content type leaves bytes or str."""
    if isinstance(data, Mapping):
        return data
    if isinstance(data, bytes | str) and data:
        try:
            decoded = json.loads(data)
        except ValueError:
            raise MalformedEventError("CloudEvent data is not JSON") from None
        if isinstance(decoded, Mapping):
            return decoded
    raise MalformedEventError("CloudEvent data is not a JSON object")
