"""The storm (issue 5): hundreds of uploads in bursts through the real local stack, with hostile
input, duplicate and stale notifications, re-uploads in flight, a window of storage 503s and the
function killed and restarted mid-run.

The promise checked: every upload ends with exactly one current output for its latest generation
(a mask, or an error record saying why), or a dead-lettered message an operator can replay;
nothing is lost and nothing is written twice.
"""

from __future__ import annotations

import io
import json
import random
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model_build.synthetic import synthetic_example
from segment import clients, function_logs, notifier, resources
from segment.fault_proxy import FaultProxy
from segment.stack import LocalStack, StackOptions

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEED = 20261121
BURSTS = 4
PER_BURST = 80  # 320 uploads in all
CORRUPT_SHARE = 0.10
DUPLICATE_SHARE = 0.05
REUPLOAD_SHARE = 0.05
DELETED = 4
FAULT_RATE = 0.25  # share of the function's storage requests answered 503 in the window
FAULT_WINDOW_S = 4.0
DRAIN_TIMEOUT_S = 75.0
QUIET_S = 3.0
# Backoff 1 s doubling to 8 s: 5 attempts span ~15 s, longer than the 503 window and the restart.
STORM_POLICY = resources.DeliveryPolicy(min_backoff_s=1.0, max_backoff_s=8.0)
FORMATS = (("PNG", "png", "image/png"), ("JPEG", "jpg", "image/jpeg"),
           ("WEBP", "webp", "image/webp"), ("BMP", "bmp", "image/bmp"),
           ("GIF", "gif", "image/gif"))  # fmt: skip


@dataclass
class Upload:
    name: str
    kind: str  # good | bad | deleted
    generations: list[int] = field(default_factory=list)
    duplicate: bool = False
    reupload: bool = False

    @property
    def latest(self) -> int:
        return self.generations[-1]


def good_image(index: int) -> tuple[bytes, str, str]:
    image, _ = synthetic_example(index, seed=SEED, min_side=24, max_side=96)
    fmt, ext, content_type = FORMATS[index % len(FORMATS)]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue(), ext, content_type


def bad_payload(index: int, rng: random.Random) -> tuple[bytes, str]:
    """Hostile input: text, random bytes, a truncated PNG or JPEG (reasons checked loosely)."""
    choice = index % 4
    if choice == 0:
        return b"this is not an image, it is a note\n" * 3, "txt.jpg"
    if choice == 1:
        return bytes(rng.getrandbits(8) for _ in range(600)), "bin.png"
    png, _, _ = good_image(index)
    if choice == 2:
        return png[: len(png) // 3] if png.startswith(b"\x89PNG") else png[:40], "trunc.png"
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()[:200], "trunc.jpg"


class Storm:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        endpoints = stack.endpoints  # direct to the emulator: uploads are never faulted
        self.storage = clients.storage_client(endpoints)
        self.publisher = clients.publisher_client(endpoints)
        self.subscriber = clients.subscriber_client(endpoints)
        self.input = self.storage.bucket(stack.names.input_bucket)
        self.uploads: dict[str, Upload] = {}

    def put(self, name: str, data: bytes, content_type: str) -> Any:
        blob = self.input.blob(name)
        blob.upload_from_string(data, content_type=content_type)
        return blob

    def notify(self, blob: Any) -> None:
        notifier.publish_notification(self.publisher, self.stack.pipeline.topic, blob)

    def one(self, index: int) -> None:
        rng = random.Random(SEED * 1000 + index)
        roll = rng.random()
        if roll < CORRUPT_SHARE:
            data, suffix = bad_payload(index, rng)
            upload = Upload(f"storm/bad-{index:04d}.{suffix}", "bad")
            blob = self.put(upload.name, data, "application/octet-stream")
        else:
            data, ext, content_type = good_image(index)
            upload = Upload(f"storm/img-{index:04d}.{ext}", "good")
            blob = self.put(upload.name, data, content_type)
        upload.generations.append(int(blob.generation))
        self.uploads[upload.name] = upload
        self.notify(blob)
        roll = rng.random()
        if (
            upload.kind == "good" and roll < REUPLOAD_SHARE
        ):  # new content while the first is in flight
            time.sleep(rng.uniform(0.0, 0.3))
            data, _, content_type = good_image(index + 100_000)
            blob = self.put(upload.name, data, content_type)
            upload.generations.append(int(blob.generation))
            upload.reupload = True
            self.notify(blob)
        elif roll < REUPLOAD_SHARE + DUPLICATE_SHARE:  # the same notification delivered twice
            upload.duplicate = True
            self.notify(blob)

    def deleted(self, index: int) -> None:
        data, _, content_type = good_image(index)
        name = f"storm/gone-{index:04d}.png"
        blob = self.put(name, data, content_type)
        blob.reload()
        self.uploads[name] = Upload(name, "deleted", [int(blob.generation)])
        blob.delete()
        self.notify(blob)  # the notification for an object that is already gone

    def burst(self, start: int, count: int) -> None:
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(self.one, range(start, start + count)))

    # --- observation -------------------------------------------------------------------------

    def outputs(self) -> dict[str, Any]:
        bucket = self.stack.names.output_bucket
        return {blob.name: blob for blob in self.storage.list_blobs(bucket)}

    def summaries(self) -> list[dict[str, Any]]:
        return [r for log in self.stack.function_logs for r in function_logs.summaries(log)]

    def missing(self, outputs: dict[str, Any]) -> list[str]:
        lost = []
        for upload in self.uploads.values():
            if upload.kind == "deleted":
                continue
            prefix = "masks/" if upload.kind == "good" else "errors/"
            suffix = ".png" if upload.kind == "good" else ".json"
            blob = outputs.get(f"{prefix}{upload.name}{suffix}")
            meta = (blob.metadata or {}) if blob is not None else {}
            if meta.get("source-generation") != str(upload.latest):
                lost.append(upload.name)
        return lost


@pytest.fixture
def storm_stack(tmp_path: Path, stack_model_dir: Path):
    options = StackOptions(
        log_dir=tmp_path / "logs",
        model_uri=str(stack_model_dir),
        policy=STORM_POLICY,
        function_env={"NUM_THREADS": "1"},
    )
    with LocalStack(options) as stack:
        assert stack.gcs is not None
        with FaultProxy(stack.gcs.url, seed=SEED, enforce_preconditions=True) as proxy:
            stack.restart_function(env={"STORAGE_EMULATOR_HOST": proxy.url})
            yield stack, proxy


def test_storm_loses_nothing_and_writes_nothing_twice(storm_stack, capsys) -> None:
    stack, proxy = storm_stack
    storm = Storm(stack)
    started = time.monotonic()

    storm.burst(0, PER_BURST)
    for index in range(DELETED):
        storm.deleted(index)
    proxy.set_failure_rate(FAULT_RATE)  # a window of storage 503s while burst 2 arrives
    fault_started = time.monotonic()
    storm.burst(PER_BURST, PER_BURST)
    time.sleep(max(0.0, FAULT_WINDOW_S - (time.monotonic() - fault_started)))
    proxy.set_failure_rate(0.0)
    storm.burst(2 * PER_BURST, PER_BURST)
    stack.restart_function(kill=True)  # a crash mid-run, with deliveries in flight
    storm.burst(3 * PER_BURST, PER_BURST)

    # Drain: every expected output there, then nothing new in the log and the DLQ for a while.
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    dead: list[Any] = []
    lost = storm.missing(storm.outputs())
    while lost and time.monotonic() < deadline:
        time.sleep(0.5)
        lost = storm.missing(storm.outputs())
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < QUIET_S and time.monotonic() < deadline + QUIET_S:
        now_seen = len(storm.summaries())
        dead += resources.pull_dead_letters(storm.subscriber, stack.pipeline)
        if now_seen != seen:
            seen, quiet_since = now_seen, time.monotonic()
        time.sleep(0.5)
    dead += resources.pull_dead_letters(storm.subscriber, stack.pipeline)
    outputs = storm.outputs()
    lost = storm.missing(outputs)
    summaries = storm.summaries()
    seconds = time.monotonic() - started

    writes: Counter[tuple[str, str]] = Counter()
    outcomes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for record in summaries:
        key = (str(record.get("object")), str(record.get("generation")))
        outcomes[key].append(str(record.get("outcome")))
        if record.get("outcome") in ("mask_written", "error_recorded"):
            writes[key] += 1
    duplicates = sorted(key for key, count in writes.items() if count > 1)
    masks = sum(1 for name in outputs if name.startswith("masks/"))
    errors = sum(1 for name in outputs if name.startswith("errors/"))
    with capsys.disabled():  # the summary line shows in every run's output, CI's included
        print(
            f"\nstorm: uploads={len(storm.uploads)} masks={masks} errors={errors} "
            f"dead_lettered={len(dead)} lost={len(lost)} duplicates={len(duplicates)} "
            f"seconds={seconds:.1f}"
        )
    detail = {
        "faults_injected": proxy.failed,
        "precondition_412s": proxy.precondition_failures,
        "outcomes": Counter(o for r in outcomes.values() for o in r),
        "dead": [dict(m.attributes) for m in dead][:5],
        "lost": lost[:10],
        "duplicates": [(k, outcomes[k]) for k in duplicates[:5]],
    }
    print("storm detail:", json.dumps(detail, default=str))

    assert proxy.failed > 0, "the 503 window injected no fault"
    assert len(stack.function_logs) == 3  # proxy restart + the crash restart
    assert not lost, f"uploads with no output for their latest generation: {lost[:10]}"
    assert not duplicates, f"written more than once: {[(k, outcomes[k]) for k in duplicates]}"
    assert not dead, f"dead-lettered: {[dict(m.attributes) for m in dead]}"

    expected_outputs = set()
    for upload in storm.uploads.values():
        mask = outputs.get(f"masks/{upload.name}.png")
        error = outputs.get(f"errors/{upload.name}.json")
        latest = str(upload.latest)
        if upload.kind == "good":
            assert error is None, f"{upload.name}: unexpected error record"
            meta = mask.metadata
            assert meta["source-name"] == upload.name
            assert meta["source-generation"] == latest  # no older generation overwrote it
            assert writes[(upload.name, latest)] <= 1
            expected_outputs.add(mask.name)
        elif upload.kind == "bad":
            assert mask is None, f"{upload.name}: a mask for a non-image"
            record = json.loads(error.download_as_bytes())
            assert record["source"]["generation"] == latest
            assert record["error"]["reason"] in {"not_an_image", "corrupt_image"}, record
            expected_outputs.add(error.name)
        else:
            assert mask is None and error is None, f"{upload.name}: output for a deleted object"
            seen_outcomes = set(outcomes[(upload.name, latest)])
            assert "object_gone" in seen_outcomes, (upload.name, seen_outcomes)
            assert not seen_outcomes & {"mask_written", "error_recorded"}
        for older in upload.generations[:-1]:  # an older generation may be written, then replaced
            assert writes[(upload.name, str(older))] <= 1
    assert set(outputs) == expected_outputs  # nothing else written (no stray or older outputs)
    assert len(storm.uploads) >= 300
    assert sum(u.duplicate for u in storm.uploads.values()) >= 5
    assert sum(u.reupload for u in storm.uploads.values()) >= 5
