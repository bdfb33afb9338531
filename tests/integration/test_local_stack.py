"""The local stack end to end on real emulators: notification → Pub/Sub push → function → GCS.

One stack per module (see conftest.py). Notifications are published by segment.notifier, the same
code `segment local run` uses (docs/architecture.md, decision 6).
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from segmentation.storage import error_name, mask_name

from segment import function_logs, notifier, resources
from segment.stack import start_function
from tests.conftest import REPO_ROOT
from tests.integration.conftest import FAST_POLICY, wait_until

pytestmark = pytest.mark.integration

SAMPLES = REPO_ROOT / "samples"
IMAGE_SAMPLES = [
    "pet-01.jpg",
    "pet-02.png",
    "pet-03.webp",
    "pet-04-exif-rotated.jpg",
    "pet-05-large.jpg",
]
CONTENT_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


def _mask_blob(driver, name: str, generation: int):
    """The mask for `name` once it records `generation`."""

    def probe():
        blob = driver.output_bucket.get_blob(mask_name(name))
        if blob is not None and blob.metadata.get("source-generation") == str(generation):
            return blob
        return None

    return wait_until(probe, timeout=60, what=f"mask of {name}#{generation}")


def _summaries_for(driver, name: str, count: int, *, log_path: Path | None = None):
    def probe():
        found = function_logs.for_object(driver.summaries(log_path), name)
        return found if len(found) >= count else None

    return wait_until(probe, timeout=60, what=f"{count} summary line(s) for {name}")


def _summaries_with_id(driver, message_id: str):
    def probe():
        return [s for s in driver.summaries() if s.get("message_id") == message_id]

    return wait_until(probe, timeout=60, what=f"the summary of message {message_id}")


def _upload_and_notify(driver, name: str, path_or_bytes: Path | bytes, content_type: str):
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    blob = driver.upload(name, data, content_type)
    notifier.publish_notification(driver.publisher, driver.stack.pipeline.topic, blob)
    return blob


@pytest.mark.parametrize("sample", IMAGE_SAMPLES)
def test_upload_produces_a_mask_with_size_classes_and_metadata(
    local_stack, sample, stack_model_dir
):
    path = SAMPLES / sample
    name = f"uploads/{sample}"
    blob = _upload_and_notify(local_stack, name, path, CONTENT_TYPES[path.suffix])

    mask_blob = _mask_blob(local_stack, name, blob.generation)
    mask = Image.open(io.BytesIO(mask_blob.download_as_bytes()))
    with Image.open(path) as source:
        expected_size = ImageOps.exif_transpose(source).size
    assert mask.format == "PNG"
    assert mask.mode == "P"
    assert mask.size == expected_size
    assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 1, 2}

    manifest = json.loads((stack_model_dir / "manifest.json").read_text())
    meta = mask_blob.metadata
    assert meta["source-bucket"] == local_stack.stack.names.input_bucket
    assert meta["source-name"] == name
    assert meta["source-generation"] == str(blob.generation)
    assert meta["model-version"] == manifest["version"]
    assert (meta["image-width"], meta["image-height"]) == tuple(map(str, expected_size))
    assert float(meta["timing-infer-ms"]) > 0
    assert mask_blob.content_type == "image/png"

    (summary,) = _summaries_for(local_stack, name, 1)
    assert summary["outcome"] == "mask_written"
    assert summary["generation"] == str(blob.generation)
    assert summary["timings_ms"]["total"] > 0


def test_a_non_image_gets_an_error_record(local_stack):
    name = "uploads/not-an-image.jpg"
    blob = _upload_and_notify(local_stack, name, SAMPLES / "not-an-image.jpg", "image/jpeg")

    def probe():
        return local_stack.output_bucket.get_blob(error_name(name))

    record_blob = wait_until(probe, timeout=60, what="error record")
    record = json.loads(record_blob.download_as_bytes())
    assert record["error"]["reason"] == "not_an_image"
    assert record["source"]["generation"] == str(blob.generation)
    assert local_stack.output_bucket.get_blob(mask_name(name)) is None


def test_duplicate_delivery_writes_once(local_stack):
    name = "dup/pet.png"
    blob = _upload_and_notify(local_stack, name, SAMPLES / "pet-02.png", "image/png")
    first = _mask_blob(local_stack, name, blob.generation)

    # The same notification again (at-least-once delivery), after the first was processed.
    data, attributes = notifier.notification_message(notifier.object_resource(blob))
    notifier.publish(local_stack.publisher, local_stack.stack.pipeline.topic, data, attributes)

    summaries = _summaries_for(local_stack, name, 2)
    assert [s["outcome"] for s in summaries] == ["mask_written", "duplicate"]
    again = local_stack.output_bucket.get_blob(mask_name(name))
    assert again.generation == first.generation  # not rewritten
    assert again.metageneration == first.metageneration


def test_reupload_replaces_the_output(local_stack):
    name = "re/upload.jpg"
    broken = _upload_and_notify(local_stack, name, b"not an image at all", "image/jpeg")
    wait_until(
        lambda: local_stack.output_bucket.get_blob(error_name(name)),
        what="error record of the first generation",
    )

    fixed = _upload_and_notify(local_stack, name, SAMPLES / "pet-01.jpg", "image/jpeg")
    assert fixed.generation > broken.generation
    mask_blob = _mask_blob(local_stack, name, fixed.generation)
    assert mask_blob.metadata["source-generation"] == str(fixed.generation)
    # The fixed re-upload removes the stale error record.
    wait_until(
        lambda: local_stack.output_bucket.get_blob(error_name(name)) is None,
        what="stale error record removed",
    )

    bigger = _upload_and_notify(local_stack, name, SAMPLES / "pet-05-large.jpg", "image/jpeg")
    replaced = _mask_blob(local_stack, name, bigger.generation)
    assert Image.open(io.BytesIO(replaced.download_as_bytes())).size == (1200, 900)
    outcomes = [s["outcome"] for s in _summaries_for(local_stack, name, 3)]
    assert outcomes == ["error_recorded", "mask_written", "mask_written"]


def test_deleting_an_upload_deletes_its_mask(local_stack):
    """OBJECT_DELETE of an upload that is gone removes its mask; the same notification while the
    object is still there (replayed, forged) deletes nothing."""
    name = "deleted/pet.png"
    blob = _upload_and_notify(local_stack, name, SAMPLES / "pet-02.png", "image/png")
    _mask_blob(local_stack, name, blob.generation)
    message_id = notifier.publish_notification(
        local_stack.publisher,
        local_stack.stack.pipeline.topic,
        blob,
        event_type=notifier.OBJECT_DELETE,
    )
    (summary,) = _summaries_with_id(local_stack, message_id)
    assert (summary["outcome"], summary["reason"]) == ("ignored", "still_live")
    assert local_stack.output_bucket.get_blob(mask_name(name)) is not None

    blob.delete()
    message_id = notifier.publish_notification(
        local_stack.publisher,
        local_stack.stack.pipeline.topic,
        blob,
        event_type=notifier.OBJECT_DELETE,
    )
    (summary,) = _summaries_with_id(local_stack, message_id)
    assert summary["outcome"] == "outputs_deleted"
    assert summary["event_type"] == "OBJECT_DELETE"
    assert local_stack.output_bucket.get_blob(mask_name(name)) is None
    assert local_stack.output_bucket.get_blob(error_name(name)) is None


def test_a_notification_without_payload_is_segmented(local_stack):
    """payloadFormat=NONE: the message has attributes only, the size comes from the object's
    metadata. (The emulator's push body still carries `"data": ""`; Pub/Sub itself leaves `data`
    out, which the contract tests cover: functions-framework alone answers that with 400.)"""
    name = "nopayload/pet.png"
    blob = local_stack.upload(name, (SAMPLES / "pet-02.png").read_bytes(), "image/png")
    _data, attributes = notifier.notification_message(notifier.object_resource(blob))
    message_id = notifier.publish(
        local_stack.publisher,
        local_stack.stack.pipeline.topic,
        b"",
        {**attributes, "payloadFormat": "NONE"},
    )
    mask = _mask_blob(local_stack, name, blob.generation)
    expected = Image.open(SAMPLES / "pet-02.png").size
    assert Image.open(io.BytesIO(mask.download_as_bytes())).size == expected
    (summary,) = _summaries_with_id(local_stack, message_id)
    assert summary["outcome"] == "mask_written"


def _redelivery_window() -> float:
    """Long enough for every redelivery FAST_POLICY allows (backoff capped at its maximum)."""
    return FAST_POLICY.max_delivery_attempts * (FAST_POLICY.max_backoff_s + 0.5) + 2


def test_a_malformed_message_is_acked_not_dead_lettered(local_stack):
    topic = local_stack.stack.pipeline.topic
    message_id = notifier.publish(
        local_stack.publisher,
        topic,
        b"this is not base64 JSON",
        {"eventType": "OBJECT_FINALIZE", "bucketId": "local-seg-input", "objectId": "bad"},
    )

    (summary,) = _summaries_with_id(local_stack, message_id)
    assert summary["outcome"] == "malformed_event"
    time.sleep(_redelivery_window())
    assert len(_summaries_with_id(local_stack, message_id)) == 1  # acked: never redelivered
    dead = resources.pull_dead_letters(local_stack.subscriber, local_stack.stack.pipeline)
    assert all(message.attributes.get("objectId") != "bad" for message in dead)


def test_a_poison_message_is_dead_lettered_after_the_configured_attempts(
    local_stack, stack_model_dir, tmp_path
):
    """A function whose model fails its sha256 check raises a configuration error on every
    delivery (HTTP 500): Pub/Sub retries with backoff, then moves the message to the DLQ."""
    corrupt = tmp_path / "corrupt-model"
    shutil.copytree(stack_model_dir, corrupt)
    tflite = corrupt / "model.tflite"
    payload = bytearray(tflite.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    tflite.write_bytes(bytes(payload))

    stack = local_stack.stack
    env = {**stack.function_env(), "MODEL_URI": str(corrupt)}
    broken = start_function("function-poison", tmp_path / "logs", env)
    try:
        pipeline = resources.Pipeline.named(stack.names.project, "poison-uploads")
        resources.create_pipeline(
            local_stack.publisher,
            local_stack.subscriber,
            pipeline,
            function_url=broken.url,
            policy=FAST_POLICY,
        )
        name = "poison/pet.png"
        blob = local_stack.upload(name, (SAMPLES / "pet-02.png").read_bytes())
        notifier.publish_notification(local_stack.publisher, pipeline.topic, blob)

        dead = wait_until(
            lambda: resources.pull_dead_letters(local_stack.subscriber, pipeline),
            timeout=_redelivery_window() + 30,
            what="the message in the dead-letter subscription",
        )
        assert [m.attributes["objectId"] for m in dead] == [name]
        assert dead[0].attributes["objectGeneration"] == str(blob.generation)
        attempts = function_logs.for_object(function_logs.summaries(broken.log_path), name)
        assert len(attempts) == FAST_POLICY.max_delivery_attempts
        assert {a["outcome"] for a in attempts} == {"configuration_error"}
        assert local_stack.output_bucket.get_blob(mask_name(name)) is None
    finally:
        broken.stop()
