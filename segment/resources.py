"""Creates the local stack's buckets, topics and subscriptions (the Terraform module's twins).

uploads topic ──push subscription (retry policy + dead-letter policy)──▶ function
      └─ after max_delivery_attempts ──▶ dead-letter topic ──pull subscription (keeps them)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.protobuf import duration_pb2


@dataclass(frozen=True)
class DeliveryPolicy:
    """Push delivery: backoff between redeliveries and the attempts before dead-lettering."""

    min_backoff_s: float = 1.0
    max_backoff_s: float = 10.0
    max_delivery_attempts: int = 5  # Pub/Sub's minimum
    ack_deadline_s: int = 60

    def __post_init__(self) -> None:
        if not 5 <= self.max_delivery_attempts <= 100:
            raise ValueError("max_delivery_attempts must be within 5..100 (Pub/Sub's limits)")
        if not 0 <= self.min_backoff_s <= self.max_backoff_s <= 600:
            raise ValueError("need 0 <= min_backoff_s <= max_backoff_s <= 600")


@dataclass(frozen=True)
class Pipeline:
    """Resource paths of one uploads topic wired to one push endpoint."""

    project: str
    topic: str
    push_subscription: str
    dead_letter_topic: str
    dead_letter_subscription: str

    @classmethod
    def named(cls, project: str, topic: str) -> Pipeline:
        return cls(
            project=project,
            topic=f"projects/{project}/topics/{topic}",
            push_subscription=f"projects/{project}/subscriptions/{topic}-push",
            dead_letter_topic=f"projects/{project}/topics/{topic}-dlq",
            dead_letter_subscription=f"projects/{project}/subscriptions/{topic}-dlq-pull",
        )

    @property
    def topic_id(self) -> str:
        return self.topic.rsplit("/", 1)[-1]

    def push_endpoint(self, function_url: str) -> str:
        """The function URL with the topic in the path, so the CloudEvent source is right."""
        return f"{function_url.rstrip('/')}/projects/{self.project}/topics/{self.topic_id}"


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def create_buckets(storage: Any, *names: str) -> None:
    for name in names:
        with contextlib.suppress(api_exceptions.Conflict):
            storage.create_bucket(name)


def create_pipeline(
    publisher: Any,
    subscriber: Any,
    pipeline: Pipeline,
    *,
    function_url: str,
    policy: DeliveryPolicy,
) -> None:
    """Topic, dead-letter topic (+ pull subscription) and the push subscription to the function."""
    for topic in (pipeline.topic, pipeline.dead_letter_topic):
        publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(
        request={"name": pipeline.dead_letter_subscription, "topic": pipeline.dead_letter_topic}
    )
    subscriber.create_subscription(
        request={
            "name": pipeline.push_subscription,
            "topic": pipeline.topic,
            "push_config": {"push_endpoint": pipeline.push_endpoint(function_url)},
            "ack_deadline_seconds": policy.ack_deadline_s,
            "retry_policy": {
                "minimum_backoff": _duration(policy.min_backoff_s),
                "maximum_backoff": _duration(policy.max_backoff_s),
            },
            "dead_letter_policy": {
                "dead_letter_topic": pipeline.dead_letter_topic,
                "max_delivery_attempts": policy.max_delivery_attempts,
            },
        }
    )


def pull_dead_letters(subscriber: Any, pipeline: Pipeline, *, max_messages: int = 50) -> list[Any]:
    """Pulls (and acks) what the dead-letter subscription holds now."""
    response = subscriber.pull(
        request={
            "subscription": pipeline.dead_letter_subscription,
            "max_messages": max_messages,
            "return_immediately": True,
        },
        timeout=10,
    )
    received = list(response.received_messages)
    if received:
        subscriber.acknowledge(
            request={
                "subscription": pipeline.dead_letter_subscription,
                "ack_ids": [item.ack_id for item in received],
            }
        )
    return [item.message for item in received]
