"""The dead-letter subscription: look at what it holds, and replay it to the uploads topic.

Listing pulls without acknowledging and then releases every message (ack deadline 0), so a
listing consumes nothing. Replay re-publishes each message's data and attributes (the original
notification: the `CloudPubSubDeadLetter*` attributes that Pub/Sub adds when it dead-letters are
left out) and acknowledges it on the dead-letter subscription only after the publish returned a
message id, so a crash mid-way loses nothing: at worst a message is published twice, which the
function treats as a duplicate delivery.

Why a message was dead-lettered is not in the message: the function's log line for the object
and generation says (see docs/operations.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.api_core import exceptions as api_exceptions

from segment import notifier

DEAD_LETTER_PREFIX = "CloudPubSubDeadLetter"
DELIVERY_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"
SOURCE_SUBSCRIPTION = "CloudPubSubDeadLetterSourceSubscription"
SOURCE_PUBLISH_TIME = "CloudPubSubDeadLetterSourceTopicPublishTime"
LEASE_S = 60  # held while listing / replaying, then released
PULL_BATCH = 50
EMPTY_PULLS = 2  # consecutive empty pulls that mean "nothing more"
WAIT_S = 5.0  # a waiting pull's longest wait
EMPTY_PAUSE_S = 0.3
ACK_CHUNK = 500


@dataclass(frozen=True)
class DeadLetter:
    """One pulled dead-lettered message (held until released or acknowledged)."""

    ack_ids: tuple[str, ...]
    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime | None
    delivery_attempt: int

    @property
    def original_attributes(self) -> dict[str, str]:
        """The attributes the message had before Pub/Sub dead-lettered it."""
        return {k: v for k, v in self.attributes.items() if not k.startswith(DEAD_LETTER_PREFIX)}

    @property
    def bucket(self) -> str | None:
        return self.attributes.get(notifier.ATTR_BUCKET_ID)

    @property
    def object_name(self) -> str | None:
        return self.attributes.get(notifier.ATTR_OBJECT_ID)

    @property
    def object_uri(self) -> str | None:
        bucket, name = self.bucket, self.object_name
        return f"gs://{bucket}/{name}" if bucket and name is not None else None

    @property
    def generation(self) -> str | None:
        return self.attributes.get(notifier.ATTR_OBJECT_GENERATION)

    @property
    def event_type(self) -> str | None:
        return self.attributes.get(notifier.ATTR_EVENT_TYPE)

    @property
    def attempts(self) -> str:
        """Delivery attempts on the source subscription before dead-lettering, if known."""
        count = self.attributes.get(DELIVERY_COUNT)
        if count:
            source = self.attributes.get(SOURCE_SUBSCRIPTION)
            return f"{count} (on {source})" if source else count
        return str(self.delivery_attempt) if self.delivery_attempt else "unknown"


def _pull_once(
    subscriber: Any, subscription: str, max_messages: int, *, wait: bool = False
) -> list[Any]:
    """One pull. `wait=False` answers at once (the emulator's way; deprecated on Pub/Sub, which
    may then answer empty although messages exist); `wait=True` lets the service wait up to
    WAIT_S for messages."""
    try:
        response = subscriber.pull(
            request={
                "subscription": subscription,
                "max_messages": max_messages,
                "return_immediately": not wait,
            },
            timeout=WAIT_S if wait else 30,
        )
    except api_exceptions.DeadlineExceeded:  # waited, nothing came
        return []
    received = list(response.received_messages)
    if received:  # hold them while we keep pulling, so the next pull returns others
        _modify(subscriber, subscription, [item.ack_id for item in received], LEASE_S)
    return received


def pull(subscriber: Any, subscription: str, limit: int) -> list[DeadLetter]:
    """Up to `limit` distinct messages, leased (not acknowledged); release() or acknowledge()."""
    by_id: dict[str, DeadLetter] = {}
    empty = 0
    while len(by_id) < limit and empty < EMPTY_PULLS:
        # when nothing came yet, the last try waits, so that "empty" is not a hasty answer
        wait = not by_id and empty == EMPTY_PULLS - 1
        received = _pull_once(
            subscriber, subscription, min(PULL_BATCH, limit - len(by_id)), wait=wait
        )
        if not received:
            empty += 1
            time.sleep(EMPTY_PAUSE_S)
            continue
        empty = 0
        for item in received:
            known = by_id.get(item.message.message_id)
            # a redelivery of one we already hold: keep its ack id too
            ack_ids = (*known.ack_ids, item.ack_id) if known else (item.ack_id,)
            by_id[item.message.message_id] = _dead_letter(item, ack_ids)
    return list(by_id.values())


def _dead_letter(item: Any, ack_ids: tuple[str, ...]) -> DeadLetter:
    message = item.message
    return DeadLetter(
        ack_ids=ack_ids,
        message_id=message.message_id,
        data=bytes(message.data),
        attributes=dict(message.attributes),
        publish_time=message.publish_time or None,
        delivery_attempt=int(item.delivery_attempt or 0),
    )


def _modify(subscriber: Any, subscription: str, ack_ids: Sequence[str], seconds: int) -> None:
    for start in range(0, len(ack_ids), ACK_CHUNK):
        subscriber.modify_ack_deadline(
            request={
                "subscription": subscription,
                "ack_ids": list(ack_ids[start : start + ACK_CHUNK]),
                "ack_deadline_seconds": seconds,
            }
        )


def release(subscriber: Any, subscription: str, messages: Iterable[DeadLetter]) -> None:
    """Gives the messages back to the subscription at once (ack deadline 0)."""
    ack_ids = [ack_id for message in messages for ack_id in message.ack_ids]
    if ack_ids:
        _modify(subscriber, subscription, ack_ids, 0)


def acknowledge(subscriber: Any, subscription: str, message: DeadLetter) -> None:
    subscriber.acknowledge(request={"subscription": subscription, "ack_ids": list(message.ack_ids)})


def list_messages(subscriber: Any, subscription: str, limit: int) -> list[DeadLetter]:
    """What the subscription holds (up to `limit`), consuming nothing."""
    messages = pull(subscriber, subscription, limit)
    release(subscriber, subscription, messages)
    return messages


def replay(
    subscriber: Any,
    publisher: Any | None,
    *,
    subscription: str,
    topic: str,
    limit: int,
    dry_run: bool = False,
    on_message: Callable[[DeadLetter, str | None], None] | None = None,
) -> int:
    """Re-publishes up to `limit` messages to `topic`, acknowledging each after its publish.

    Returns how many were replayed (or would be, with `dry_run`, which publishes and
    acknowledges nothing). A failed publish releases the rest and raises.
    """
    messages = pull(subscriber, subscription, limit)
    pending = list(messages)
    try:
        for message in messages:
            message_id = None
            if not dry_run:
                message_id = notifier.publish(
                    publisher, topic, message.data, message.original_attributes
                )
                acknowledge(subscriber, subscription, message)
                pending.remove(message)
            if on_message is not None:
                on_message(message, message_id)
    finally:
        release(subscriber, subscription, pending)
    return len(messages)
