"""Push deliveries that functions-framework refuses, turned into the CloudEvent it would build.

functions-framework 3.10.2 converts a raw Pub/Sub push body into a CloudEvent only when the
message has a `data` field (`event_conversion._is_raw_pubsub_payload`). A message published with
attributes only has none: a bucket notification with `payloadFormat=NONE`, a hand-made message.
The framework answers those with 400, and Pub/Sub would redeliver each one until it is
dead-lettered. The entry point's 400 handler gives the request body here: a push envelope (a
`message` object with a `messageId`) becomes the same CloudEvent a converted body gets (id =
messageId, source from the push URL path), so the pipeline parses it, processes it or logs it as
malformed and acks it; anything else stays a 400.
"""

from __future__ import annotations

import json
import re
from typing import Any

from cloudevents.http import CloudEvent

from segmentation.events import PUBSUB_EVENT_TYPE

PUBSUB_SOURCE = "//pubsub.googleapis.com/"
# The framework's own rule (event_conversion._parse_pubsub_topic): the topic from the URL path.
_TOPIC_PATH = re.compile(r"projects/[^/?]+/topics/[^/?]+")


def cloud_event_from_push(body: bytes, path: str) -> CloudEvent | None:
    """The CloudEvent for a raw Pub/Sub push body, or None when `body` is not one."""
    envelope = _json_object(body)
    message = envelope.get("message") if envelope else None
    if not isinstance(message, dict):
        return None
    message_id = message.get("messageId") or message.get("message_id")
    if not isinstance(message_id, str | int) or isinstance(message_id, bool) or not message_id:
        return None
    topic = _TOPIC_PATH.search(path or "")
    attributes = {
        "id": str(message_id),
        "type": PUBSUB_EVENT_TYPE,
        "source": PUBSUB_SOURCE + (topic.group(0) if topic else ""),
        "specversion": "1.0",
    }
    publish_time = message.get("publishTime") or message.get("publish_time")
    if isinstance(publish_time, str) and publish_time:
        attributes["time"] = publish_time
    data: dict[str, Any] = {"message": message}
    if isinstance(envelope.get("subscription"), str):
        data["subscription"] = envelope["subscription"]
    return CloudEvent(attributes, data)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
