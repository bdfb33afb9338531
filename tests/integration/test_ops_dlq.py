"""`segment dlq list` / `replay` on the real Pub/Sub emulator, with messages the emulator itself
dead-lettered (a pull subscription with a dead-letter policy, nacked until it gives up)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator

import pytest
from segmentation.events import PUBSUB_EVENT_TYPE, parse_event

from segment import clients, dlq, notifier
from segment.cli import main
from segment.emulators import ManagedProcess, pubsub_emulator
from tests.fakes.terminal import Terminal

pytestmark = pytest.mark.integration

PROJECT = "dlq-project"
ATTEMPTS = 5  # Pub/Sub's minimum max_delivery_attempts


@pytest.fixture(scope="module")
def pubsub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    with pubsub_emulator(
        tmp_path_factory.mktemp("pubsub-logs"), tmp_path_factory.mktemp("pubsub-data")
    ) as server:
        yield server


def _pull(subscriber, subscription: str, *, ack: bool) -> list:
    response = subscriber.pull(
        request={"subscription": subscription, "max_messages": 100, "return_immediately": True},
        timeout=10,
    )
    received = list(response.received_messages)
    if received:
        ack_ids = [r.ack_id for r in received]
        if ack:
            subscriber.acknowledge(request={"subscription": subscription, "ack_ids": ack_ids})
        else:
            subscriber.modify_ack_deadline(
                request={
                    "subscription": subscription,
                    "ack_ids": ack_ids,
                    "ack_deadline_seconds": 0,
                }
            )
    return received


class Pipeline:
    """uploads topic ── pull subscription (dead-letter policy) ──▶ dlq topic ── dlq pull sub."""

    def __init__(self, publisher, subscriber) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.publisher, self.subscriber = publisher, subscriber
        self.topic = f"projects/{PROJECT}/topics/uploads-{suffix}"
        self.subscription = f"projects/{PROJECT}/subscriptions/uploads-{suffix}-sub"
        self.dlq_topic = f"projects/{PROJECT}/topics/uploads-{suffix}-dlq"
        self.dlq_subscription = f"projects/{PROJECT}/subscriptions/uploads-{suffix}-dlq-pull"
        for topic in (self.topic, self.dlq_topic):
            publisher.create_topic(request={"name": topic})
        subscriber.create_subscription(
            request={"name": self.dlq_subscription, "topic": self.dlq_topic}
        )
        subscriber.create_subscription(
            request={
                "name": self.subscription,
                "topic": self.topic,
                "dead_letter_policy": {
                    "dead_letter_topic": self.dlq_topic,
                    "max_delivery_attempts": ATTEMPTS,
                },
            }
        )

    def dead_letter(self, names: list[str]) -> dict[str, tuple[bytes, dict[str, str]]]:
        """Publishes a notification per name and nacks it until the emulator dead-letters it;
        returns the messages as published, by object name."""
        sent = {}
        for index, name in enumerate(names):
            resource = {
                "kind": "storage#object",
                "bucket": "in-bucket",
                "name": name,
                "generation": str(1763731200000000 + index),
                "size": "3",
                "updated": "2026-11-21T13:00:00.000Z",
            }
            data, attributes = notifier.notification_message(resource)
            notifier.publish(self.publisher, self.topic, data, attributes)
            sent[name] = (data, attributes)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _pull(self.subscriber, self.subscription, ack=False):
                continue  # nacked: redelivered at once (no retry policy) until the last attempt
            if len(dlq.list_messages(self.subscriber, self.dlq_subscription, 100)) == len(names):
                return sent
            time.sleep(0.1)
        pytest.fail("the emulator did not dead-letter the messages")

    def dead_letter_cli(self, *extra: str) -> list[str]:
        return ["--subscription", self.dlq_subscription, *extra]


@pytest.fixture
def pipeline(pubsub_server, monkeypatch) -> Pipeline:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_server.host_port)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    for variable in ("SEGMENT_DEAD_LETTER_SUBSCRIPTION", "SEGMENT_NOTIFY_TOPIC"):
        monkeypatch.delenv(variable, raising=False)
    endpoints = clients.Endpoints.from_env()
    return Pipeline(clients.publisher_client(endpoints), clients.subscriber_client(endpoints))


NAMES = ["uploads/cat.png", "uploads/dog.jpg"]


def test_dlq_list_shows_messages_without_consuming_them(pipeline, capsys):
    pipeline.dead_letter(NAMES)

    assert main(["dlq", "list", *pipeline.dead_letter_cli()]) == 0
    first = capsys.readouterr().out
    assert main(["dlq", "list", *pipeline.dead_letter_cli()]) == 0
    second = capsys.readouterr().out

    for name in NAMES:
        assert f"gs://in-bucket/{name}" in first
    assert "generation 1763731200000000" in first
    assert f"delivery attempts {ATTEMPTS} (on " in first
    assert "first published " in first and "dead-lettered " in first
    assert "2 message(s)" in first
    assert "not in the message" in first
    assert 'logs: jsonPayload.object="uploads/cat.png" AND jsonPayload.generation="' in first
    assert second == first  # nothing was consumed
    assert len(dlq.list_messages(pipeline.subscriber, pipeline.dlq_subscription, 100)) == 2


def test_dlq_list_json_is_one_document(pipeline, capsys):
    pipeline.dead_letter(NAMES)

    assert main(["dlq", "list", *pipeline.dead_letter_cli("--json")]) == 0

    captured = capsys.readouterr()
    assert captured.err == ""
    document = json.loads(captured.out)  # nothing else on stdout
    assert document["subscription"] == pipeline.dlq_subscription
    assert document["count"] == 2 and document["limit_reached"] is False
    messages = sorted(document["messages"], key=lambda m: m["name"])
    assert [m["object"] for m in messages] == [f"gs://in-bucket/{name}" for name in NAMES]
    first = messages[0]
    assert first["generation"] == "1763731200000000"
    assert first["event_type"] == "OBJECT_FINALIZE"
    assert first["delivery_attempts"].startswith(f"{ATTEMPTS} (on ")
    assert first["first_published"] and first["dead_lettered"] and first["message_id"]
    assert first["log_filter"].startswith('jsonPayload.object="uploads/cat.png" AND ')
    assert first["attributes"]["objectId"] == "uploads/cat.png"
    # consumed nothing
    assert len(dlq.list_messages(pipeline.subscriber, pipeline.dlq_subscription, 100)) == 2


def test_dlq_list_limit_and_a_bare_subscription_name(pipeline, capsys):
    pipeline.dead_letter(NAMES)
    bare = pipeline.dlq_subscription.rsplit("/", 1)[-1]  # as `terraform output` prints it

    assert main(["dlq", "list", "--subscription", bare, "--limit", "1"]) == 0
    assert "1 message(s) (the --limit; there may be more)" in capsys.readouterr().out
    assert len(dlq.list_messages(pipeline.subscriber, pipeline.dlq_subscription, 100)) == 2


def test_dlq_replay_dry_run_does_nothing(pipeline, capsys):
    pipeline.dead_letter(NAMES)

    args = ["dlq", "replay", *pipeline.dead_letter_cli("--topic", pipeline.topic, "--dry-run")]
    assert main(args) == 0

    captured = capsys.readouterr()
    assert "would replay 2 message(s)" in captured.out
    assert captured.err == ""  # no progress bar when stderr is not a terminal
    assert len(dlq.list_messages(pipeline.subscriber, pipeline.dlq_subscription, 100)) == 2
    assert _pull(pipeline.subscriber, pipeline.subscription, ack=True) == []


def test_dlq_replay_moves_the_messages_back_to_the_topic(pipeline, capsys, monkeypatch):
    sent = pipeline.dead_letter(NAMES)
    terminal = Terminal()  # stderr on a terminal: a progress bar there, and only there
    monkeypatch.setattr("sys.stderr", terminal)

    assert main(["dlq", "replay", *pipeline.dead_letter_cli("--topic", pipeline.topic)]) == 0

    assert "replay:" in terminal.getvalue() and "message" in terminal.getvalue()
    out = capsys.readouterr().out
    assert "replay:" not in out
    assert "replayed 2 message(s)" in out
    assert out.count("acked on the DLQ") == 2
    assert dlq.list_messages(pipeline.subscriber, pipeline.dlq_subscription, 100) == []
    replayed = {}
    deadline = time.monotonic() + 10
    while len(replayed) < 2 and time.monotonic() < deadline:
        for item in _pull(pipeline.subscriber, pipeline.subscription, ack=True):
            replayed[item.message.attributes["objectId"]] = item.message
    assert sorted(replayed) == NAMES
    for name, message in replayed.items():
        data, attributes = sent[name]
        # the original notification: same data, same attributes, no CloudPubSubDeadLetter*
        assert bytes(message.data) == data
        assert dict(message.attributes) == attributes
        event = parse_event(
            {"type": PUBSUB_EVENT_TYPE, "id": message.message_id},
            {"message": {"attributes": attributes, "data": base64.b64encode(data).decode()}},
        )
        assert event.object.name == name


class FailingPublisher:
    def publish(self, topic, data, **attributes):
        raise RuntimeError("publish failed")


def test_dlq_replay_acks_nothing_when_the_publish_fails(pipeline):
    pipeline.dead_letter(NAMES)

    with pytest.raises(RuntimeError, match="publish failed"):
        dlq.replay(
            pipeline.subscriber,
            FailingPublisher(),
            subscription=pipeline.dlq_subscription,
            topic=pipeline.topic,
            limit=100,
        )

    # released at once, not left to expire: both still there
    assert len(dlq.list_messages(pipeline.subscriber, pipeline.dlq_subscription, 100)) == 2
