"""The storm (issue 5): hundreds of uploads in bursts through the real local stack, with hostile
input, duplicate and stale notifications, re-uploads in flight, a window of storage 503s and the
function killed and restarted mid-run.

The promise checked: every upload ends with exactly one current output for its latest generation
(a mask, or an error record saying why), or a dead-lettered message an operator can replay;
nothing is lost and nothing is written twice.

Writes are counted at the storage layer: the function reaches the GCS emulator only through the
fault proxy, which records every object write the emulator accepted (with the output's metadata,
which names the source object and generation). A write made just before the SIGKILL, whose log
line never got out, is counted all the same. The function's own log lines are a cross-check: every
write it logged must be one the proxy saw.
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
from segment.stack import LocalStack, StackOptions
from tests.fakes.fault_proxy import FaultProxy, ObjectWrite

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
           ("WEBP", "webp", "image/webp"), ("GIF", "gif", "image/gif"))  # fmt: skip
# Real images in formats the function refuses by name (decoder attack surface): error records.
REFUSED = {"tif": "TIFF", "bmp": "BMP"}


@dataclass
class Upload:
    name: str
    kind: str  # good | bad | deleted
    generations: list[int] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (width, height) of the latest good image
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


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def bad_payload(index: int, rng: random.Random) -> tuple[bytes, str]:
    """Hostile input: text, random bytes, a truncated PNG or JPEG (reasons checked loosely), or
    a real TIFF or BMP (unsupported_format)."""
    choice = index % 6
    if choice >= 4:
        ext = sorted(REFUSED)[choice - 4]
        image, _ = synthetic_example(index, seed=SEED, min_side=24, max_side=96)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=REFUSED[ext])
        return buffer.getvalue(), ext
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


WriteKey = tuple[str, str, str]  # (output object name, source name, source generation)


def output_name(upload: Upload) -> str:
    if upload.kind == "good":
        return f"masks/{upload.name}.png"
    return f"errors/{upload.name}.json"


def write_key(write: ObjectWrite) -> WriteKey:
    meta = write.metadata
    return write.name, meta.get("source-name", "?"), meta.get("source-generation", "?")


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
            upload = Upload(f"storm/img-{index:04d}.{ext}", "good", size=image_size(data))
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
            upload.size = image_size(data)
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

    def expected_writes(self) -> tuple[set[WriteKey], set[WriteKey]]:
        """(required, optional) output writes, each (output name, source name, generation).

        Required: the mask of every good upload's latest generation, the error record of every
        bad one. Optional: the mask of a re-uploaded name's older generation. That delivery
        writes its mask only if it downloaded the older content before the re-upload replaced
        it and wrote before the newer mask existed; otherwise it ends `object_gone` or
        `superseded` and writes nothing. Both are correct, and timing decides which happens, so
        that write is allowed (at most once), not required.
        """
        required: set[WriteKey] = set()
        optional: set[WriteKey] = set()
        for upload in self.uploads.values():
            if upload.kind == "deleted":
                continue
            output = output_name(upload)
            required.add((output, upload.name, str(upload.latest)))
            optional |= {(output, upload.name, str(g)) for g in upload.generations[:-1]}
        return required, optional

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


def check_outputs(
    storm: Storm,
    outputs: dict[str, Any],
    outcomes: dict[tuple[str, str], list[str]],
    written: Counter[WriteKey],
    manifest: dict[str, Any],
) -> set[str]:
    """Checks each upload's current output and its metadata; returns the outputs expected."""
    input_bucket = storm.stack.names.input_bucket
    expected_outputs: set[str] = set()
    for upload in storm.uploads.values():
        mask = outputs.get(f"masks/{upload.name}.png")
        error = outputs.get(f"errors/{upload.name}.json")
        latest = str(upload.latest)
        if upload.kind == "good":
            assert error is None, f"{upload.name}: unexpected error record"
            meta = mask.metadata
            assert meta["source-bucket"] == input_bucket
            assert meta["source-name"] == upload.name
            assert meta["source-generation"] == latest  # no older generation overwrote it
            assert meta["model-name"] == manifest["name"]
            assert meta["model-version"] == manifest["version"]
            size = (int(meta["image-width"]), int(meta["image-height"]))
            assert size == upload.size, (upload.name, size, upload.size)
            with Image.open(io.BytesIO(mask.download_as_bytes())) as png:
                assert png.size == upload.size and png.mode == "P", (upload.name, png.size)
            expected_outputs.add(mask.name)
        elif upload.kind == "bad":
            assert mask is None, f"{upload.name}: a mask for a non-image"
            assert error.metadata["source-bucket"] == input_bucket
            assert error.metadata["source-generation"] == latest
            record = json.loads(error.download_as_bytes())
            assert record["source"]["bucket"] == input_bucket
            assert record["source"]["generation"] == latest
            if upload.name.rsplit(".", 1)[-1] in REFUSED:
                assert record["error"]["reason"] == "unsupported_format", record
            else:
                assert record["error"]["reason"] in {"not_an_image", "corrupt_image"}, record
            expected_outputs.add(error.name)
        else:
            assert mask is None and error is None, f"{upload.name}: output for a deleted object"
            seen_outcomes = set(outcomes[(upload.name, latest)])
            assert "object_gone" in seen_outcomes, (upload.name, seen_outcomes)
            assert not any(source == upload.name for _, source, _ in written)
    return expected_outputs


def test_storm_loses_nothing_and_writes_nothing_twice(storm_stack, stack_model_dir, capsys) -> None:
    stack, proxy = storm_stack
    storm = Storm(stack)
    manifest = json.loads((Path(stack_model_dir) / "manifest.json").read_text())
    input_bucket, output_bucket = stack.names.input_bucket, stack.names.output_bucket
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

    # Drain: every expected output there, then no new log line, storage write or dead letter
    # for a while.
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    dead: list[Any] = []
    lost = storm.missing(storm.outputs())
    while lost and time.monotonic() < deadline:
        time.sleep(0.5)
        lost = storm.missing(storm.outputs())
    seen, quiet_since = (-1, -1), time.monotonic()
    while time.monotonic() - quiet_since < QUIET_S and time.monotonic() < deadline + QUIET_S:
        now_seen = (len(storm.summaries()), len(proxy.writes))
        dead += resources.pull_dead_letters(storm.subscriber, stack.pipeline)
        if now_seen != seen:
            seen, quiet_since = now_seen, time.monotonic()
        time.sleep(0.5)
    dead += resources.pull_dead_letters(storm.subscriber, stack.pipeline)
    outputs = storm.outputs()
    lost = storm.missing(outputs)
    summaries = storm.summaries()
    all_writes = proxy.writes
    seconds = time.monotonic() - started

    # Writes at the storage layer (the proxy), keyed by (output, source name, source generation).
    writes = [w for w in all_writes if w.bucket == output_bucket]
    written: Counter[WriteKey] = Counter(write_key(w) for w in writes)
    duplicates = sorted(key for key, count in written.items() if count > 1)
    required, optional = storm.expected_writes()
    # The function's own log lines, the cross-check.
    logged: Counter[tuple[str, str]] = Counter()
    outcomes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for record in summaries:
        key = (str(record.get("object")), str(record.get("generation")))
        outcomes[key].append(str(record.get("outcome")))
        if record.get("outcome") in ("mask_written", "error_recorded"):
            logged[key] += 1
    stored = Counter((source, generation) for _, source, generation in written.elements())
    unlogged = sorted(set(stored) - set(logged))  # e.g. a write the SIGKILL cut off from its log

    masks = sum(1 for name in outputs if name.startswith("masks/"))
    errors = sum(1 for name in outputs if name.startswith("errors/"))
    mask_writes = sum(1 for w in writes if w.name.startswith("masks/"))
    with capsys.disabled():  # the summary line shows in every run's output, CI's included
        print(
            f"\nstorm: uploads={len(storm.uploads)} masks={masks} errors={errors} "
            f"dead_lettered={len(dead)} lost={len(lost)} duplicates={len(duplicates)} "
            f"writes={len(writes)} seconds={seconds:.1f}"
        )
    detail = {
        "faults_injected": proxy.failed,
        "precondition_412s": proxy.precondition_failures,
        "mask_writes": mask_writes,
        "older_generation_writes": len(set(written) & optional),
        "writes_without_log_line": unlogged[:5],
        "outcomes": Counter(o for r in outcomes.values() for o in r),
        "dead": [dict(m.attributes) for m in dead][:5],
        "lost": lost[:10],
        "duplicates": [(k, written[k]) for k in duplicates[:5]],
    }
    print("storm detail:", json.dumps(detail, default=str))

    assert proxy.failed > 0, "the 503 window injected no fault"
    assert len(stack.function_logs) == 3  # proxy restart + the crash restart
    assert not lost, f"uploads with no output for their latest generation: {lost[:10]}"
    assert not dead, f"dead-lettered: {[dict(m.attributes) for m in dead]}"

    # Storage layer: the function wrote only to the output bucket, always under a generation
    # precondition, never the same (output, source generation) twice, every required output
    # once and nothing it should not have written.
    assert writes, "the proxy saw no write"
    assert [w for w in all_writes if w.bucket != output_bucket] == []  # never to the input bucket
    assert all(w.if_generation_match is not None for w in writes)
    assert not duplicates, f"written more than once: {[(k, written[k]) for k in duplicates]}"
    assert required <= set(written), f"never written: {sorted(required - set(written))[:5]}"
    assert set(written) <= required | optional, sorted(set(written) - required - optional)[:5]
    # Hence: the writes equal the distinct masks and error records written, which are the
    # required ones plus those older generations of re-uploads that won their race.
    assert len(writes) == len(required) + len(set(written) & optional)
    good = sum(u.kind == "good" for u in storm.uploads.values())
    assert good <= mask_writes <= good + len(optional)
    for write in writes:  # every write names its source and, for a mask, the model
        assert write.name == output_name(storm.uploads[write.metadata["source-name"]])
        assert write.metadata["source-bucket"] == input_bucket
        if write.name.startswith("masks/"):
            assert write.metadata["model-version"] == manifest["version"]
    history: dict[str, list[int]] = defaultdict(list)  # source generations per output, in order
    for write in writes:
        history[write.name].append(int(write.metadata["source-generation"]))
    older_after_newer = {n: h for n, h in history.items() if h != sorted(set(h))}
    assert not older_after_newer, f"an older generation overwrote a newer: {older_after_newer}"
    # Log cross-check: each write the function logged is one the storage layer saw, once.
    assert set(logged) <= set(stored), sorted(set(logged) - set(stored))[:5]
    assert all(count == 1 for count in logged.values()), logged.most_common(3)

    expected_outputs = check_outputs(storm, outputs, outcomes, written, manifest)
    assert set(outputs) == expected_outputs  # nothing else written (no stray or older outputs)
    assert len(storm.uploads) >= 300
    assert sum(u.duplicate for u in storm.uploads.values()) >= 5
    assert sum(u.reupload for u in storm.uploads.values()) >= 5
