"""The storm (issue 5): hundreds of uploads in bursts through the real local stack, with hostile
input, duplicate and stale notifications, re-uploads in flight, a window of storage 503s and the
function killed and restarted mid-run; and (issue 12) uploads crafted so that their output names
would collide with another upload's, uploads deleted or overwritten while in flight (with the
OBJECT_DELETE / OBJECT_ARCHIVE notifications GCS sends), a window where the function's deletes
fail (its clean-up of outputs), and an outage of the model bucket while a new instance starts.

The promise checked: every upload ends with exactly one current output for its latest generation
(a mask, or an error record saying why), or a dead-lettered message an operator can replay;
nothing is lost and nothing is written twice; no upload damages another's output
(`foreign_damage`), and nothing stale stays behind (`stale`: an output of a deleted upload, of an
older generation, or of the other kind than the latest generation's).

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
from segmentation import storage as names

from model_build.synthetic import synthetic_example
from segment import clients, function_logs, notifier, resources
from segment.stack import LocalStack, StackNames, StackOptions
from tests.conftest import SUMMARY_PROPERTY
from tests.fakes.fault_proxy import FaultProxy, ObjectWrite
from tests.fakes.registry import publish_model

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEED = 20261121
BURSTS = 4
PER_BURST = 80  # 320 uploads in all
CORRUPT_SHARE = 0.10
DUPLICATE_SHARE = 0.05
REUPLOAD_SHARE = 0.05
DELETED = 4
GONE_IN_FLIGHT = 8  # uploaded, notified, then deleted (OBJECT_DELETE) while in flight
FLIPPED = 8  # a bad upload replaced by a good one in flight: the error record must go
COLLIDING = 2  # pairs per kind: long names and dot segments, each with a crafted partner
CLEANUP_FAULT_RATE = 0.5  # share of the function's deletes answered 503 in that window
CLEANUP_WINDOW_S = 30.0  # at most, after the last delete/flip, for their clean-up to run
SETTLE_TIMEOUT_S = 10.0
OUTAGE_UPLOADS = 16
MODEL_OUTAGE_S = 6.0  # shorter than the retry budget: 5 deliveries, backoff 1-8 s, ~15 s
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
    kind: str  # good | bad | deleted (before or while in flight)
    generations: list[int] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (width, height) of the latest good image
    duplicate: bool = False
    reupload: bool = False
    in_flight: bool = False  # deleted after its notification was sent

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
    """The output the function writes for the upload's kind (the plain or the fallback name)."""
    if upload.kind == "good":
        return names.mask_name(upload.name)
    return names.error_name(upload.name)


def own_names(source_name: str) -> set[str]:
    """Every name an output of this source may take (plain/fallback, or its conflict name)."""
    return {
        names.mask_name(source_name),
        names.error_name(source_name),
        names.mask_conflict_name(source_name),
        names.error_conflict_name(source_name),
    }


def crafted_pair(index: int, kind: str) -> tuple[str, str]:
    """(victim, attacker): the victim's output takes the fallback form, and the attacker is
    named so that its plain output name would be exactly that fallback name."""
    if kind == "long":
        victim = f"storm/victim-{index:02d}-" + "v" * 1000 + ".png"  # plain mask name > 1024 B
    else:
        victim = f"storm/./victim-{index:02d}.png"  # a "." segment
    fallback = names.mask_name(victim)
    assert names.FALLBACK_TAIL.search(fallback.removesuffix(names.MASK_SUFFIX)), fallback
    return victim, fallback.removeprefix(names.MASK_PREFIX).removesuffix(names.MASK_SUFFIX)


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
            old = blob
            blob = self.put(upload.name, data, content_type)
            upload.generations.append(int(blob.generation))
            upload.size = image_size(data)
            upload.reupload = True
            self.notify(blob)
            self.archive(old, overwritten_by=int(blob.generation))
        elif roll < REUPLOAD_SHARE + DUPLICATE_SHARE:  # the same notification delivered twice
            upload.duplicate = True
            self.notify(blob)

    def gone_in_flight(self, index: int) -> None:
        """Uploaded and notified, then deleted (and that notified) while it is processed."""
        rng = random.Random(SEED * 2000 + index)
        data, _, content_type = good_image(index + 200_000)
        name = f"storm/gone-in-flight-{index:04d}.png"
        blob = self.put(name, data, content_type)
        self.uploads[name] = Upload(name, "deleted", [int(blob.generation)], in_flight=True)
        self.notify(blob)
        self.settle(names.mask_name(name), index, rng)
        blob.delete()
        notifier.publish_notification(
            self.publisher, self.stack.pipeline.topic, blob, event_type=notifier.OBJECT_DELETE
        )

    def flipped(self, index: int) -> None:
        """A bad upload, then good content under the same name while the first is in flight,
        with the OBJECT_ARCHIVE GCS sends for the overwritten generation: the error record of
        the first (if it was written) must go, and the archive must not touch the new mask."""
        rng = random.Random(SEED * 3000 + index)
        name = f"storm/flip-{index:04d}.png"
        data, _ = bad_payload(0, rng)
        first = self.put(name, data, "application/octet-stream")
        upload = Upload(name, "good", [int(first.generation)], reupload=True)
        self.uploads[name] = upload
        self.notify(first)
        self.settle(names.error_name(name), index, rng)
        data, _, content_type = good_image(index + 300_000)
        second = self.put(name, data, content_type)
        upload.generations.append(int(second.generation))
        upload.size = image_size(data)
        self.notify(second)
        self.archive(first, overwritten_by=int(second.generation))

    def settle(self, output: str, index: int, rng: random.Random) -> None:
        """Before the next step: for even `index`, until `output` exists (so the function has
        an output to clean up), else a random moment while the first delivery is in flight."""
        if index % 2:
            time.sleep(rng.uniform(0.0, 0.4))
            return
        bucket = self.storage.bucket(self.stack.names.output_bucket)
        until = time.monotonic() + SETTLE_TIMEOUT_S
        while bucket.get_blob(output) is None and time.monotonic() < until:
            time.sleep(0.2)

    def wait_for_outputs(self, timeout: float) -> None:
        """Until every upload so far has its output (the queue is drained), or `timeout`."""
        until = time.monotonic() + timeout
        while self.missing(self.outputs()) and time.monotonic() < until:
            time.sleep(0.5)

    def wait_for_cleanup(self, timeout: float) -> None:
        """Until no flipped or in-flight-deleted upload has an output it should not have."""
        watched = [u for u in self.uploads.values() if u.in_flight or "/flip-" in u.name]
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            outputs = self.outputs()
            if not any(
                name in outputs
                for u in watched
                for name in (
                    [names.mask_name(u.name), names.error_name(u.name)]
                    if u.kind == "deleted"
                    else [names.error_name(u.name)]
                )
            ):
                return
            time.sleep(0.5)

    def archive(self, blob: Any, *, overwritten_by: int) -> None:
        data, attributes = notifier.notification_message(
            notifier.object_resource(blob), event_type=notifier.OBJECT_ARCHIVE
        )
        attributes["overwrittenByGeneration"] = str(overwritten_by)
        notifier.publish(self.publisher, self.stack.pipeline.topic, data, attributes)

    def victims(self) -> list[tuple[str, str]]:
        """Uploads whose outputs take fallback names (good photos); returns the pairs."""
        pairs = [crafted_pair(i, kind) for kind in ("long", "dot") for i in range(COLLIDING)]
        for index, (victim, _) in enumerate(pairs):
            data, _, content_type = good_image(index + 400_000)
            blob = self.put(victim, data, content_type)
            self.uploads[victim] = Upload(
                victim, "good", [int(blob.generation)], size=image_size(data)
            )
            self.notify(blob)
        return pairs

    def attackers(self, pairs: list[tuple[str, str]]) -> None:
        """Junk under the names crafted to collide with the victims' outputs."""
        for _, attacker in pairs:
            blob = self.put(attacker, b"not an image, aimed at another upload's mask", "text/plain")
            self.uploads[attacker] = Upload(attacker, "bad", [int(blob.generation)])
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
            if upload.kind == "deleted":  # deleted in flight: its mask may be written, then go
                optional |= {(names.mask_name(upload.name), upload.name, str(upload.latest))}
                continue
            output = output_name(upload)
            required.add((output, upload.name, str(upload.latest)))
            # An older generation's output, of either kind (a flipped upload's error record).
            optional |= {
                (name, upload.name, str(g))
                for g in upload.generations[:-1]
                for name in (names.mask_name(upload.name), names.error_name(upload.name))
            }
        return required, optional

    def missing(self, outputs: dict[str, Any]) -> list[str]:
        lost = []
        for upload in self.uploads.values():
            if upload.kind == "deleted":
                continue
            blob = outputs.get(output_name(upload))
            meta = (blob.metadata or {}) if blob is not None else {}
            if meta.get("source-generation") != str(upload.latest):
                lost.append(upload.name)
        return lost

    def read(self, output: str) -> bytes:
        """An output's bytes, fetched by name: a listed blob's mediaLink, as the emulator
        writes it, leaves `/./` in a name unescaped, which the HTTP client then collapses."""
        return self.storage.bucket(self.stack.names.output_bucket).blob(output).download_as_bytes()

    def stale(self, outputs: dict[str, Any]) -> list[str]:
        """Outputs that should not be there: of a deleted upload, of an older generation, or of
        the other kind than the latest generation's (a clean-up that never finished)."""
        current = {
            output_name(u): str(u.latest) for u in self.uploads.values() if u.kind != "deleted"
        }
        return sorted(
            name
            for name, blob in outputs.items()
            if current.get(name) != (blob.metadata or {}).get("source-generation")
        )

    def foreign_damage(self, outputs: dict[str, Any], writes: list[ObjectWrite]) -> list[str]:
        """Outputs written under another source's name, and uploads whose own output names
        another source: what a crafted name could do to its victim."""
        damage = [
            f"write {w.name} for {w.metadata.get('source-name')}"
            for w in writes
            if w.name not in own_names(w.metadata.get("source-name", ""))
        ]
        for upload in self.uploads.values():
            blob = outputs.get(output_name(upload))
            source = (blob.metadata or {}).get("source-name") if blob is not None else None
            if source is not None and source != upload.name:
                damage.append(f"{blob.name} names {source}, not {upload.name}")
        return damage


@pytest.fixture
def storm_stack(tmp_path: Path, stack_model_dir: Path):
    names = StackNames()
    options = StackOptions(
        log_dir=tmp_path / "logs",
        # The model comes from the models bucket (latest.json), so an outage of that bucket
        # while an instance starts is an outage of the model.
        model_uri=f"gs://{names.models_bucket}/unet/latest",
        names=names,
        policy=STORM_POLICY,
        function_env={"NUM_THREADS": "1"},
    )
    with LocalStack(options) as stack:
        assert stack.gcs is not None
        storage = clients.storage_client(stack.endpoints)
        publish_model(storage.bucket(names.models_bucket), stack_model_dir)
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
        mask = outputs.get(names.mask_name(upload.name))
        error = outputs.get(names.error_name(upload.name))
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
            with Image.open(io.BytesIO(storm.read(mask.name))) as png:
                assert png.size == upload.size and png.mode == "P", (upload.name, png.size)
            expected_outputs.add(mask.name)
        elif upload.kind == "bad":
            assert mask is None, f"{upload.name}: a mask for a non-image"
            assert error.metadata["source-bucket"] == input_bucket
            assert error.metadata["source-generation"] == latest
            record = json.loads(storm.read(error.name))
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
            if upload.in_flight:  # its mask was never written, or written and then deleted
                assert seen_outcomes & {"object_gone", "outputs_deleted"}, seen_outcomes
            else:
                assert "object_gone" in seen_outcomes, (upload.name, seen_outcomes)
                assert not any(source == upload.name for _, source, _ in written)
    return expected_outputs


def test_storm_loses_nothing_and_writes_nothing_twice(
    storm_stack, stack_model_dir, record_property
) -> None:
    stack, proxy = storm_stack
    storm = Storm(stack)
    manifest = json.loads((Path(stack_model_dir) / "manifest.json").read_text())
    input_bucket, output_bucket = stack.names.input_bucket, stack.names.output_bucket
    started = time.monotonic()

    storm.burst(0, PER_BURST)
    pairs = storm.victims()  # photos whose masks take fallback names
    for index in range(DELETED):
        storm.deleted(index)
    proxy.set_failure_rate(FAULT_RATE)  # a window of storage 503s while burst 2 arrives
    fault_started = time.monotonic()
    storm.burst(PER_BURST, PER_BURST)
    storm.attackers(pairs)  # junk named to collide with the victims' masks
    time.sleep(max(0.0, FAULT_WINDOW_S - (time.monotonic() - fault_started)))
    proxy.set_failure_rate(0.0)
    # The function's deletes (its clean-up of outputs) fail while uploads are deleted and
    # flipped in flight, and burst 3 arrives; the window stays open until their clean-up ran.
    storm.wait_for_outputs(DRAIN_TIMEOUT_S)  # so the clean-up runs within the window
    proxy.set_failure_rate(CLEANUP_FAULT_RATE, methods=("DELETE",))
    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = [pool.submit(storm.gone_in_flight, i) for i in range(GONE_IN_FLIGHT)]
        jobs += [pool.submit(storm.flipped, i) for i in range(FLIPPED)]
        for job in jobs:
            job.result()
    storm.burst(2 * PER_BURST, PER_BURST)
    storm.wait_for_cleanup(CLEANUP_WINDOW_S)
    proxy.set_failure_rate(0.0)
    stack.restart_function(kill=True)  # a crash mid-run, with deliveries in flight
    storm.burst(3 * PER_BURST, PER_BURST)
    # The model bucket goes down and a new instance starts: its first requests cannot load the
    # model until the outage (shorter than the retry budget) ends. Nothing may be lost.
    storm.wait_for_outputs(DRAIN_TIMEOUT_S)
    before_outage = proxy.failed
    proxy.set_failure_rate(1.0, bucket=stack.names.models_bucket)
    outage_started = time.monotonic()
    stack.restart_function()
    storm.burst(4 * PER_BURST, OUTAGE_UPLOADS)
    time.sleep(max(0.0, MODEL_OUTAGE_S - (time.monotonic() - outage_started)))
    proxy.set_failure_rate(0.0)
    model_faults = proxy.failed - before_outage

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
    stale = storm.stale(outputs)
    damage = storm.foreign_damage(outputs, writes)
    # The summary line shows at the end of every run's output, CI's included (tests/conftest.py).
    record_property(
        SUMMARY_PROPERTY,
        f"storm: uploads={len(storm.uploads)} masks={masks} errors={errors} "
        f"dead_lettered={len(dead)} lost={len(lost)} duplicates={len(duplicates)} "
        f"foreign_damage={len(damage)} stale={len(stale)} "
        f"writes={len(writes)} seconds={seconds:.1f}",
    )
    detail = {
        "stale": stale[:5],
        "foreign_damage": damage[:5],
        "delete_faults": proxy.failed_deletes,
        "model_bucket_faults": model_faults,
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
    assert len(stack.function_logs) == 4  # proxy restart, crash restart, outage restart
    assert model_faults > 0, "the model-bucket outage injected no fault"
    assert proxy.failed_deletes > 0, "the clean-up window injected no fault into a delete"
    assert not lost, f"uploads with no output for their latest generation: {lost[:10]}"
    assert not dead, f"dead-lettered: {[dict(m.attributes) for m in dead]}"
    assert not damage, f"an upload damaged another's output: {damage[:5]}"
    assert not stale, f"stale outputs left behind: {stale[:5]}"

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
        assert write.metadata["source-name"] in storm.uploads
        assert write.name in own_names(write.metadata["source-name"])
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
    victims = [storm.uploads[victim] for victim, _ in pairs]
    assert all(outputs[output_name(v)].metadata["source-name"] == v.name for v in victims)
    assert sum(u.duplicate for u in storm.uploads.values()) >= 5
    assert sum(u.reupload for u in storm.uploads.values()) >= 5
