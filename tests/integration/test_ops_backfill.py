"""`segment backfill` on the real emulators: publishes only for objects without a current output,
nothing with --dry-run, resumes from its state file, and waits as its rate asks."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator

import pytest
from segmentation.events import PUBSUB_EVENT_TYPE, parse_event
from segmentation.storage import META_SOURCE_GENERATION, error_name, mask_name

from segment import backfill, clients
from segment.cli import main
from segment.emulators import ManagedProcess, pubsub_emulator
from segment.ratelimit import RateLimiter
from tests.fakes.terminal import Terminal

pytestmark = pytest.mark.integration

PROJECT = "ops-project"


@pytest.fixture(scope="module")
def pubsub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    with pubsub_emulator(
        tmp_path_factory.mktemp("pubsub-logs"), tmp_path_factory.mktemp("pubsub-data")
    ) as server:
        yield server


@pytest.fixture
def env(gcs_server, pubsub_server, monkeypatch):
    """Emulator clients, and the variables the `segment` command reads set for them."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_server.host_port)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    for variable in ("SEGMENT_OUTPUT_BUCKET", "SEGMENT_NOTIFY_TOPIC"):
        monkeypatch.delenv(variable, raising=False)
    endpoints = clients.Endpoints.from_env()
    return (
        clients.storage_client(endpoints),
        clients.publisher_client(endpoints),
        clients.subscriber_client(endpoints),
    )


class Scene:
    """Input and output buckets with objects in every state, and a topic with a pull
    subscription that shows what backfill published."""

    def __init__(self, storage, publisher, subscriber) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.storage, self.publisher, self.subscriber = storage, publisher, subscriber
        self.input = storage.create_bucket(f"ops-in-{suffix}")
        self.output = storage.create_bucket(f"ops-out-{suffix}")
        self.topic = f"projects/{PROJECT}/topics/uploads-{suffix}"
        self.subscription = f"projects/{PROJECT}/subscriptions/uploads-{suffix}-pull"
        publisher.create_topic(request={"name": self.topic})
        subscriber.create_subscription(request={"name": self.subscription, "topic": self.topic})
        self.blobs = {}
        for name, data in (
            ("photos/a-current-mask.png", b"png"),
            ("photos/b-stale-mask.png", b"png"),
            ("photos/c-current-error.txt", b"text"),
            ("photos/d-nothing.png", b"png"),
            ("photos/e-empty.png", b""),
            ("photos/folder/", b""),
            ("other/x.png", b"png"),
        ):
            self.blobs[name] = self.upload(name, data)
        self.write_output("mask", "photos/a-current-mask.png")
        self.write_output("mask", "photos/b-stale-mask.png", generation_delta=-1)
        self.write_output("error", "photos/c-current-error.txt")

    def upload(self, name: str, data: bytes):
        blob = self.input.blob(name)
        blob.upload_from_string(data, content_type="image/png")
        return blob

    def write_output(self, kind: str, name: str, *, generation_delta: int = 0) -> None:
        """What the function writes, with the metadata keys of pipeline._source_metadata."""
        source = self.blobs[name]
        metadata = {
            "source-bucket": self.input.name,
            "source-name": name,
            META_SOURCE_GENERATION: str(int(source.generation) + generation_delta),
        }
        if kind == "mask":
            blob = self.output.blob(mask_name(name))
            metadata["model-version"] = "test-model"
        else:
            blob = self.output.blob(error_name(name))
            metadata["error-reason"] = "not_an_image"
        blob.metadata = metadata
        blob.upload_from_string(b"output")

    def published(self) -> list[tuple[dict[str, str], bytes]]:
        """Everything published so far (pulled and acked), in object name order."""
        messages, empty = [], 0
        while empty < 3:
            response = self.subscriber.pull(
                request={
                    "subscription": self.subscription,
                    "max_messages": 100,
                    "return_immediately": True,
                },
                timeout=10,
            )
            received = list(response.received_messages)
            if not received:
                empty += 1
                time.sleep(0.2)
                continue
            empty = 0
            self.subscriber.acknowledge(
                request={
                    "subscription": self.subscription,
                    "ack_ids": [r.ack_id for r in received],
                }
            )
            messages += [(dict(r.message.attributes), bytes(r.message.data)) for r in received]
        return sorted(messages, key=lambda m: m[0]["objectId"])

    def args(self, *extra: str, prefix: str = "photos/") -> list[str]:
        return [
            "backfill",
            f"gs://{self.input.name}/{prefix}",
            "--output-bucket",
            self.output.name,
            "--notify-topic",
            self.topic,
            "--rate",
            "1000/s",
            *extra,
        ]


@pytest.fixture
def scene(env) -> Scene:
    return Scene(*env)


UNPROCESSED = ["photos/b-stale-mask.png", "photos/d-nothing.png", "photos/e-empty.png"]


def test_backfill_publishes_only_objects_without_a_current_output(scene, capsys):
    assert main(scene.args()) == 0

    published = scene.published()
    assert [attributes["objectId"] for attributes, _ in published] == UNPROCESSED
    for attributes, data in published:
        blob = scene.blobs[attributes["objectId"]]
        assert attributes["objectGeneration"] == str(blob.generation)
        assert attributes["bucketId"] == scene.input.name
        # the function parses it like the bucket notification
        event = parse_event(
            {"type": PUBSUB_EVENT_TYPE, "id": "1"},
            {"message": {"attributes": attributes, "data": base64.b64encode(data).decode()}},
        )
        assert event.is_finalize
        assert event.object.name == blob.name
        assert event.object.generation == int(blob.generation)
    out = capsys.readouterr().out
    assert "current mask" in out and "current error record (not_an_image)" in out
    assert "folder placeholder" in out
    assert "other/x.png" not in out
    assert "published 3, skipped 1 folder placeholder, 2 with a current output" in out


def test_backfill_dry_run_publishes_nothing(scene, capsys):
    assert main(scene.args("--dry-run")) == 0

    assert scene.published() == []
    captured = capsys.readouterr()
    assert captured.err == ""  # no progress bar when stderr is not a terminal
    out = captured.out
    for name in UNPROCESSED:
        assert f"would publish gs://{scene.input.name}/{name}#" in out
    assert "would publish 3" in out


def test_backfill_shows_progress_on_a_terminal_stderr(scene, capsys, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)

    assert main(scene.args("--dry-run")) == 0

    assert "backfill:" in terminal.getvalue() and "object" in terminal.getvalue()
    out = capsys.readouterr().out
    assert "would publish 3" in out and "backfill:" not in out


def test_backfill_resumes_after_the_last_published_object(scene, tmp_path, capsys):
    state = tmp_path / "backfill.json"
    # as if a first run crashed right after publishing b
    source = f"gs://{scene.input.name}/photos/"
    backfill.save_state(state, source, "photos/b-stale-mask.png", 1)

    assert main(scene.args("--state", str(state))) == 0
    assert [a["objectId"] for a, _ in scene.published()] == UNPROCESSED[1:]
    recorded = json.loads(state.read_text())
    assert recorded["last_published"] == "photos/e-empty.png"
    assert recorded["published"] == 3
    assert "resuming after photos/b-stale-mask.png" in capsys.readouterr().out

    # a new object after the recorded name is picked up by the next run; nothing else is
    scene.blobs["photos/f-new.png"] = scene.upload("photos/f-new.png", b"png")
    assert main(scene.args("--state", str(state))) == 0
    assert [a["objectId"] for a, _ in scene.published()] == ["photos/f-new.png"]

    # a state file of another source is refused (exit 2, usage error)
    with pytest.raises(SystemExit) as exc:
        main(scene.args("--state", str(state), prefix="other/"))
    assert exc.value.code == 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_backfill_waits_as_the_rate_asks(scene):
    clock = FakeClock()
    limiter = RateLimiter(2.0, clock=clock, sleep=clock.sleep)
    report = backfill.run(
        scene.storage,
        scene.publisher,
        bucket=scene.input.name,
        prefix="photos/",
        output_bucket=scene.output.name,
        topic=scene.topic,
        limiter=limiter,
    )

    assert report.published == 3
    assert len(scene.published()) == 3
    # burst of 1, then one token every 0.5 s: two waits, one second in all (no wall clock)
    assert len(clock.sleeps) == 2
    assert report.waited_s == pytest.approx(1.0)


@pytest.mark.parametrize(
    "extra",
    [
        ["--rate", "fast"],
        ["--notify-topic", "projects/p/subscriptions/not-a-topic"],
        ["--output-bucket", "INPUT"],  # the function refuses events from its output bucket
    ],
)
def test_backfill_refuses_bad_arguments(scene, extra):
    extra = [scene.input.name if arg == "INPUT" else arg for arg in extra]
    with pytest.raises(SystemExit) as exc:
        main([*scene.args(), *extra])
    assert exc.value.code == 2
    assert scene.published() == []
