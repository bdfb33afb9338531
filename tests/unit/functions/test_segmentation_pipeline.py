"""The pipeline against the in-memory store and the tiny model: every documented outcome, the
generation rules, and the one structured summary line per invocation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image
from segmentation import storage
from segmentation.errors import (
    ModelIntegrityError,
    ObjectNotFoundError,
    OutputBucketMissingError,
    PreconditionFailedError,
    StoragePermissionError,
    StorageUnavailableError,
    TransientError,
)
from segmentation.model import LazyModel, SegmentationModel
from segmentation.pipeline import handle_cloud_event, process_event
from segmentation.results import Outcome, Result
from segmentation.settings import Settings

from tests.fakes import notifications
from tests.fakes.images import decode_mask, encode, halves, halves_png, png_header_only
from tests.fakes.notifications import INPUT_BUCKET, OUTPUT_BUCKET
from tests.fakes.storage import FakeObjectStore

NAME = "uploads/cat.png"
MASK = f"masks/{NAME}.png"
ERROR = f"errors/{NAME}.json"


class Harness:
    """Uploads objects to the fake input bucket and delivers their notifications."""

    def __init__(self, store: FakeObjectStore, model: Any, settings: Settings, capsys: Any) -> None:
        self.store, self.model, self.settings, self.capsys = store, model, settings, capsys

    def upload(self, data: bytes, name: str = NAME, bucket: str = INPUT_BUCKET) -> int:
        return self.store.put(bucket, name, data).generation

    def deliver(self, name: str = NAME, generation: int | None = None, **kwargs: Any) -> Result:
        stored = self.store.get(kwargs.pop("bucket", INPUT_BUCKET), name)
        if generation is None:
            generation = stored.info.generation if stored else 1
        kwargs.setdefault("size", stored.info.size if stored else 0)
        bucket = kwargs.pop("notify_bucket", INPUT_BUCKET)
        message = notifications.message(bucket, name, generation, **kwargs)
        return self.handle(notifications.eventarc_event(message))

    def handle(self, event: Any) -> Result:
        return handle_cloud_event(event, store=self.store, model=self.model, settings=self.settings)

    def summaries(self) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.capsys.readouterr().out.splitlines() if line]
        return [line for line in lines if "outcome" in line]

    def output(self, name: str) -> Any:
        return self.store.get(OUTPUT_BUCKET, name)


@pytest.fixture
def h(
    store: FakeObjectStore, tiny_model: SegmentationModel, settings: Settings, capsys: Any
) -> Harness:
    return Harness(store, tiny_model, settings, capsys)


def _mask_array(h: Harness, name: str = MASK) -> np.ndarray:
    return np.asarray(decode_mask(h.output(name).data))


# --- success and idempotency -----------------------------------------------------------------


def test_mask_is_written_with_metadata_and_one_summary_line(h: Harness) -> None:
    generation = h.upload(halves_png(64, 48))
    result = h.deliver(message_id="msg-1")
    assert result.outcome is Outcome.MASK_WRITTEN
    assert result.output_uri == f"gs://{OUTPUT_BUCKET}/{MASK}"
    stored = h.output(MASK)
    assert stored.info.content_type == "image/png"
    mask = decode_mask(stored.data)
    assert mask.mode == "P" and mask.size == (64, 48)
    values = np.asarray(mask)
    assert (values[:, :31] == 0).all() and (values[:, 33:] == 1).all()
    meta = stored.info.metadata
    assert meta["source-bucket"] == INPUT_BUCKET and meta["source-name"] == NAME
    assert meta["source-generation"] == str(generation)
    assert meta["model-version"] == h.model.version and meta["model-name"] == h.model.name
    assert meta["image-width"] == "64" and meta["image-height"] == "48"
    assert {"timing-download-ms", "timing-decode-ms", "timing-infer-ms", "timing-encode-ms"} <= set(
        meta
    )
    [summary] = h.summaries()
    assert summary["severity"] == "INFO"
    assert summary["outcome"] == "mask_written" and summary["message_id"] == "msg-1"
    assert summary["bucket"] == INPUT_BUCKET and summary["object"] == NAME
    assert summary["generation"] == str(generation)
    assert summary["model_version"] == h.model.version
    assert summary["output"] == result.output_uri
    timings = summary["timings_ms"]
    assert {"download", "decode", "infer", "encode", "upload", "total"} <= set(timings)
    assert timings["total"] >= timings["infer"]


def test_duplicate_delivery_writes_nothing(h: Harness) -> None:
    h.upload(halves_png())
    assert h.deliver().outcome is Outcome.MASK_WRITTEN
    writes = list(h.store.mutations)
    result = h.deliver()
    assert result.outcome is Outcome.DUPLICATE
    assert h.store.mutations == writes
    assert not [entry for entry in h.store.log[len(writes) :] if entry[0] == "read"]


def test_reupload_replaces_and_the_old_event_never_overwrites(h: Harness) -> None:
    first = h.upload(halves_png(64, 48))
    assert h.deliver().outcome is Outcome.MASK_WRITTEN
    second = h.upload(encode(Image.new("RGB", (30, 20), (20, 20, 220)), "PNG"))
    assert h.deliver().outcome is Outcome.MASK_WRITTEN
    assert h.output(MASK).info.metadata["source-generation"] == str(second)
    assert (_mask_array(h) == 2).all()
    writes = list(h.store.mutations)
    late = h.deliver(generation=first, size=100)
    assert late.outcome is Outcome.SUPERSEDED
    assert h.store.mutations == writes


def test_old_event_after_the_object_was_replaced_is_gone(h: Harness) -> None:
    first = h.upload(halves_png())
    h.upload(halves_png(10, 10))
    result = h.deliver(generation=first, size=100)
    assert result.outcome is Outcome.OBJECT_GONE
    assert h.store.mutations == []


def test_concurrent_duplicate_loses_the_precondition_and_acks(h: Harness) -> None:
    generation = h.upload(halves_png())
    meta = {"source-generation": str(generation)}
    h.store.before_write = lambda bucket, name: h.store.put(bucket, name, b"x", metadata=meta)
    result = h.deliver()
    assert result.outcome is Outcome.DUPLICATE
    assert h.output(MASK).data == b"x"


def test_concurrent_newer_generation_is_kept(h: Harness) -> None:
    generation = h.upload(halves_png())
    meta = {"source-generation": str(generation + 10)}
    h.store.before_write = lambda bucket, name: h.store.put(bucket, name, b"newer", metadata=meta)
    assert h.deliver().outcome is Outcome.SUPERSEDED
    assert h.output(MASK).data == b"newer"


def test_foreign_object_at_the_mask_name_is_replaced(h: Harness) -> None:
    h.store.put(OUTPUT_BUCKET, MASK, b"hand-made, no metadata")
    h.upload(halves_png())
    assert h.deliver().outcome is Outcome.MASK_WRITTEN


# --- events that are acked without work ------------------------------------------------------


@pytest.mark.parametrize("event_type", ["OBJECT_METADATA_UPDATE", "SOMETHING_NEW"])
def test_other_event_types_are_ignored(h: Harness, event_type: str) -> None:
    h.upload(halves_png())
    result = h.deliver(event_type=event_type)
    assert result.outcome is Outcome.IGNORED
    assert h.store.log == []
    [summary] = h.summaries()
    assert summary["severity"] == "INFO" and summary["event_type"] == event_type


def test_folder_placeholder_is_ignored(h: Harness) -> None:
    h.upload(b"", name="photos/")
    assert h.deliver(name="photos/").outcome is Outcome.IGNORED
    assert h.store.log == []


def test_object_deleted_before_we_read_it(h: Harness) -> None:
    result = h.deliver(name="deleted.png", generation=123, size=50)
    assert result.outcome is Outcome.OBJECT_GONE
    assert h.store.mutations == []
    assert h.summaries()[0]["severity"] == "INFO"


def test_payload_format_none_reads_the_size_from_metadata(h: Harness) -> None:
    h.upload(halves_png())
    message = notifications.message(
        INPUT_BUCKET, NAME, h.store.get(INPUT_BUCKET, NAME).info.generation
    )
    message["attributes"]["payloadFormat"] = "NONE"
    del message["data"]
    assert h.handle(notifications.eventarc_event(message)).outcome is Outcome.MASK_WRITTEN


def test_ignored_events_do_not_load_the_model(h: Harness) -> None:
    lazy = LazyModel(lambda: pytest.fail("model loaded"))
    h.model = lazy
    h.deliver(event_type="OBJECT_DELETE")
    h.deliver(name="dir/")
    assert not lazy.loaded


@pytest.mark.parametrize(
    "breakage",
    [
        lambda m: m.update(data="%%%not-base64%%%"),
        lambda m: m.update(data="bm90IGpzb24="),  # base64 of "not json"
        lambda m: m.pop("attributes"),
        lambda m: m["attributes"].pop("bucketId"),
        lambda m: m["attributes"].update(objectGeneration="abc"),
    ],
)
def test_malformed_message_is_logged_and_acked(
    h: Harness, breakage: Callable[[dict[str, Any]], Any]
) -> None:
    message = notifications.message(INPUT_BUCKET, NAME, 5, message_id="bad-1")
    breakage(message)
    result = h.handle(notifications.eventarc_event(message))
    assert result.outcome is Outcome.MALFORMED_EVENT
    assert h.store.log == []
    [summary] = h.summaries()
    assert summary["severity"] == "ERROR"
    assert summary["message_id"] == "bad-1"
    assert summary["reason"] == "malformed_event"


def test_event_from_the_output_bucket_is_rejected_without_writing(h: Harness) -> None:
    h.upload(halves_png(), name=NAME, bucket=OUTPUT_BUCKET)
    result = h.deliver(bucket=OUTPUT_BUCKET, notify_bucket=OUTPUT_BUCKET)
    assert result.outcome is Outcome.REJECTED
    assert result.reason == "output_is_input_bucket"
    assert h.store.mutations == []
    assert h.summaries()[0]["severity"] == "ERROR"


# --- permanent input errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_object"),
        (b"x" * 1_000_001, "image_too_large"),
        (b"<html><body>hi</body></html>", "not_an_image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "unsupported_format"),
        (halves_png()[:60], "corrupt_image"),
        (png_header_only(5000, 5000), "too_many_pixels"),
    ],
)
def test_permanent_input_errors_write_an_error_record(h: Harness, data: bytes, reason: str) -> None:
    generation = h.upload(data)
    result = h.deliver(message_id="m-9")
    assert result.outcome is Outcome.ERROR_RECORDED
    assert result.reason == reason
    assert result.output_uri == f"gs://{OUTPUT_BUCKET}/{ERROR}"
    record_object = h.output(ERROR)
    assert record_object.info.content_type == "application/json"
    assert record_object.info.metadata["error-reason"] == reason
    assert record_object.info.metadata["source-generation"] == str(generation)
    record = json.loads(record_object.data)
    assert record["error"]["reason"] == reason
    assert record["source"] == {
        "bucket": INPUT_BUCKET,
        "name": NAME,
        "generation": str(generation),
        "uri": f"gs://{INPUT_BUCKET}/{NAME}",
    }
    assert record["message_id"] == "m-9"
    assert h.output(MASK) is None
    [summary] = h.summaries()
    assert summary["severity"] == "WARNING" and summary["reason"] == reason


def test_too_large_is_decided_before_downloading(h: Harness) -> None:
    h.upload(b"x" * 1_000_001)
    h.deliver()
    assert not [entry for entry in h.store.log if entry[0] == "read"]


def test_error_record_follows_the_generation_rules(h: Harness) -> None:
    h.upload(b"not an image")
    assert h.deliver().outcome is Outcome.ERROR_RECORDED
    writes = list(h.store.mutations)
    assert h.deliver().outcome is Outcome.DUPLICATE
    assert h.store.mutations == writes


def test_fixed_reupload_replaces_the_error_record_with_a_mask(h: Harness) -> None:
    h.upload(b"not an image")
    h.deliver()
    h.upload(halves_png())
    assert h.deliver().outcome is Outcome.MASK_WRITTEN
    assert h.output(ERROR) is None and h.output(MASK) is not None


def test_broken_reupload_replaces_the_mask_with_an_error_record(h: Harness) -> None:
    h.upload(halves_png())
    h.deliver()
    first_mask = h.output(MASK).info
    h.upload(b"not an image")
    assert h.deliver().outcome is Outcome.ERROR_RECORDED
    assert h.output(MASK) is None and h.output(ERROR) is not None
    assert _replay(h, first_mask).outcome is Outcome.SUPERSEDED


def _replay(h: Harness, mask_info: Any) -> Result:
    """Replays the first upload's event after the second was processed."""
    generation = int(mask_info.metadata["source-generation"])
    return h.deliver(generation=generation, size=100)


def test_newer_counterpart_written_concurrently_wins(h: Harness) -> None:
    generation = h.upload(halves_png())

    def newer_error_record(bucket: str, name: str) -> None:
        meta = {"source-generation": str(generation + 1)}
        h.store.put(bucket, ERROR, b"{}", metadata=meta)

    h.store.before_write = newer_error_record
    assert h.deliver().outcome is Outcome.SUPERSEDED
    assert h.output(MASK) is None and h.output(ERROR) is not None


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../etc/passwd.png", "a/./b/../c.png", "ünï cödé/猫 photo.png", "x" * 1020]
)
def test_awkward_names_stay_under_masks(h: Harness, name: str) -> None:
    h.upload(halves_png(), name=name)
    result = h.deliver(name=name)
    assert result.outcome is Outcome.MASK_WRITTEN
    [written] = h.store.names(OUTPUT_BUCKET)
    assert written == storage.mask_name(name) and written.startswith("masks/")
    assert len(written.encode()) <= 1024
    assert h.output(written).info.metadata["source-name"] == name


# --- failures that must be redelivered -------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "exc"),
    [
        ("read", StorageUnavailableError("503 from GCS")),
        ("stat", StorageUnavailableError("429 from GCS")),
        ("write", StorageUnavailableError("timeout")),
    ],
)
def test_transient_storage_errors_are_raised(h: Harness, operation: str, exc: Exception) -> None:
    h.upload(halves_png())
    h.store.fail_next(operation, exc)
    with pytest.raises(StorageUnavailableError):
        h.deliver()
    [summary] = h.summaries()
    assert summary["severity"] == "WARNING"
    assert summary["outcome"] == "transient_error" and summary["reason"] == "storage_unavailable"
    assert "stack_trace" not in summary
    assert h.deliver().outcome is Outcome.MASK_WRITTEN  # the redelivery succeeds


def test_lost_write_races_are_transient(h: Harness) -> None:
    h.upload(halves_png())
    h.store.fail_next("write", PreconditionFailedError("412"), times=5)
    with pytest.raises(TransientError):
        h.deliver()
    assert h.summaries()[0]["reason"] == "write_conflict"


def test_configuration_errors_are_raised_with_a_traceback(h: Harness) -> None:
    h.model = LazyModel(lambda: (_ for _ in ()).throw(ModelIntegrityError("sha256 mismatch")))
    h.upload(halves_png())
    with pytest.raises(ModelIntegrityError):
        h.deliver()
    [summary] = h.summaries()
    assert summary["severity"] == "ERROR" and summary["outcome"] == "configuration_error"
    assert "ModelIntegrityError" in summary["stack_trace"]
    assert h.store.mutations == []


def test_permission_errors_are_configuration_errors(h: Harness) -> None:
    h.upload(halves_png())
    h.store.fail_next("write", StoragePermissionError("403"))
    with pytest.raises(StoragePermissionError):
        h.deliver()
    assert h.summaries()[0]["outcome"] == "configuration_error"


def test_missing_output_bucket_is_a_configuration_error_not_object_gone(h: Harness) -> None:
    h.upload(halves_png())
    h.store.fail_next("write", ObjectNotFoundError("404: bucket"))
    with pytest.raises(OutputBucketMissingError):
        h.deliver()
    [summary] = h.summaries()
    assert summary["outcome"] == "configuration_error"
    assert summary["reason"] == "output_bucket_missing"


def test_unexpected_exceptions_are_raised_and_logged_with_the_traceback(h: Harness) -> None:
    h.upload(halves_png())
    h.store.fail_next("read", RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        h.deliver()
    [summary] = h.summaries()
    assert summary["severity"] == "ERROR" and summary["outcome"] == "internal_error"
    assert "RuntimeError: boom" in summary["stack_trace"]


def test_model_load_is_timed_on_the_first_message(
    h: Harness, tiny_model: SegmentationModel
) -> None:
    h.model = LazyModel(lambda: tiny_model)
    h.upload(halves_png())
    h.deliver()
    h.upload(halves_png(10, 10), name="second.png")
    h.deliver(name="second.png")
    first, second = h.summaries()
    assert "model_load" in first["timings_ms"] and "model_load" not in second["timings_ms"]


def test_process_event_is_usable_without_the_wrapper(
    store: FakeObjectStore, tiny_model: SegmentationModel, settings: Settings
) -> None:
    from segmentation.events import StorageObject, UploadEvent

    info = store.put(INPUT_BUCKET, "a.jpg", encode(halves(), "JPEG"))
    event = UploadEvent(
        "id", "OBJECT_FINALIZE", StorageObject(INPUT_BUCKET, "a.jpg", info.generation, info.size)
    )
    result = process_event(event, store=store, model=tiny_model, settings=settings)
    assert result.outcome is Outcome.MASK_WRITTEN and result.model_version == tiny_model.version
