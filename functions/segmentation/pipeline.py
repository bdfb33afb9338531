"""Orchestration: one notification in, at most one output object written, one summary log line.

`process_event` is the pure-as-possible core: it takes a parsed event, an `ObjectStore`, a model
(anything with `get() -> SegmentationModel`; a `ServingModels` also picks the stable or canary
model per upload with `select`) and the settings, and returns a `Result`. The mask's metadata and
the summary line name the version and track of the model that made it.
`handle_cloud_event` wraps it for the entry point: parse, process, log exactly one structured
summary line, and decide ack (return) versus redelivery (raise).

Generation rules, per input object name, over its two possible outputs (`masks/...png` and
`errors/...json`, both carrying `source-generation` metadata):
* the newest source generation recorded in either output is the object's processed state;
  an event for that generation is a duplicate, for an older one superseded: nothing is written;
* writes are conditional on the output object's generation (0 when absent), so a concurrent
  writer makes us lose with 412; we re-read and stop if it is at least as new (`write_if_newer`);
* after writing, the other output kind is deleted when it describes an older generation (a valid
  re-upload clears an old error record and vice versa); if it describes a newer one, we deleted
  our own write instead: the newest generation always wins.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from segmentation import imaging, logs, storage
from segmentation.errors import (
    ConfigurationError,
    InputError,
    MalformedEventError,
    ObjectNotFoundError,
    OutputIsInputBucketError,
    PermanentError,
    TransientError,
)
from segmentation.events import StorageObject, UploadEvent, message_id_of, parse_cloud_event
from segmentation.model import SegmentationModel
from segmentation.results import SEVERITY, Outcome, QualitySignals, Result, Timings, Track
from segmentation.settings import Settings
from segmentation.storage import ObjectInfo, ObjectStore

log = logs.get_logger("pipeline")


class ModelSource(Protocol):
    """A loaded `SegmentationModel`, a `LazyModel` or `ServingModels` (which adds `select`)."""

    def get(self) -> SegmentationModel: ...


@dataclass(frozen=True)
class _Outputs:
    bucket: str
    mask: str
    error: str

    @classmethod
    def for_object(cls, bucket: str, source_name: str) -> _Outputs:
        return cls(bucket, storage.mask_name(source_name), storage.error_name(source_name))


@dataclass(frozen=True)
class _Job:
    """Everything one message's processing needs."""

    event: UploadEvent
    obj: StorageObject
    store: ObjectStore
    settings: Settings
    timings: Timings
    outputs: _Outputs


# --- core ------------------------------------------------------------------------------------


def process_event(
    event: UploadEvent,
    *,
    store: ObjectStore,
    model: ModelSource,
    settings: Settings,
    timings: Timings | None = None,
) -> Result:
    """Processes one parsed notification; raises only for non-input failures."""
    obj = event.object
    if not event.is_finalize or obj is None:
        return Result(Outcome.IGNORED, f"event type {event.event_type} is not OBJECT_FINALIZE")
    if obj.is_folder_placeholder:
        return Result(Outcome.IGNORED, "folder placeholder")
    if obj.bucket == settings.output_bucket:
        raise OutputIsInputBucketError(
            f"{obj.uri} is in OUTPUT_BUCKET; refusing to write where uploads trigger us"
        )
    outputs = _Outputs.for_object(settings.output_bucket, obj.name)
    job = _Job(event, obj, store, settings, timings if timings is not None else Timings(), outputs)
    with job.timings.measure("check"):
        mask = store.stat(outputs.bucket, outputs.mask)
        error = store.stat(outputs.bucket, outputs.error)
    settled = _settled(obj, mask, error)
    if settled is not None:
        return settled
    try:
        return _segment(job, model, existing_mask=mask)
    except InputError as exc:
        return _record_error(job, exc, existing_error=error)


def _settled(obj: StorageObject, *existing: ObjectInfo | None) -> Result | None:
    """A Result when an output already records this or a newer generation."""
    found = [info for info in existing if info is not None]
    if not found:
        return None
    newest = max(found, key=lambda info: info.source_generation)
    uri = f"gs://{newest.bucket}/{newest.name}"
    if newest.source_generation == obj.generation:
        return Result(Outcome.DUPLICATE, "this generation was already processed", uri)
    if newest.source_generation > obj.generation:
        return Result(
            Outcome.SUPERSEDED, f"generation {newest.source_generation} is already processed", uri
        )
    return None


def _segment(job: _Job, model_source: ModelSource, *, existing_mask: ObjectInfo | None) -> Result:
    obj, settings, timings = job.obj, job.settings, job.timings
    try:
        with timings.measure("download"):
            data = storage.download_input(
                job.store,
                obj.bucket,
                obj.name,
                generation=obj.generation,
                size=obj.size,
                max_bytes=settings.max_image_bytes,
            )
    except ObjectNotFoundError:
        return Result(Outcome.OBJECT_GONE, f"{obj.uri}#{obj.generation} is gone (deleted/replaced)")
    model, track = _select_model(model_source, obj, timings)
    with timings.measure("decode"):
        decoded = imaging.decode_image(
            data, max_pixels=settings.max_image_pixels, size=model.input_size
        )
    with timings.measure("infer"):
        prediction = model.segment(decoded.array)
    with timings.measure("encode"):
        png = imaging.encode_mask(prediction.classes, decoded.original_size)
    metadata = {
        **_source_metadata(obj),
        storage.META_MODEL_NAME: model.name,
        storage.META_MODEL_VERSION: model.version,
        storage.META_MODEL_TRACK: str(track),
        storage.META_IMAGE_WIDTH: str(decoded.original_size[0]),
        storage.META_IMAGE_HEIGHT: str(decoded.original_size[1]),
        **{
            f"{storage.META_TIMING_PREFIX}{stage}-ms": f"{ms:.1f}"
            for stage, ms in timings.values.items()
        },
        **storage.quality_metadata(prediction.quality),
    }
    return _publish(
        job,
        job.outputs.mask,
        png,
        content_type=storage.MASK_CONTENT_TYPE,
        metadata=metadata,
        existing=existing_mask,
        outcome=Outcome.MASK_WRITTEN,
        model_version=model.version,
        quality=prediction.quality,
        model_track=track,
    )


def _select_model(
    source: ModelSource, obj: StorageObject, timings: Timings
) -> tuple[SegmentationModel, Track]:
    """The model (and its track) for this upload: one choice, used for the whole upload, so the
    mask is named after the model that made it even if a refresh swaps models meanwhile."""
    select = getattr(source, "select", None)
    if select is None:
        return _get_model(source, timings), Track.STABLE
    selection = select(obj.bucket, obj.name, obj.generation, timings=timings)
    return selection.model, selection.track


def _get_model(source: ModelSource, timings: Timings) -> SegmentationModel:
    if getattr(source, "loaded", True):
        return source.get()
    with timings.measure("model_load"):
        return source.get()


def _record_error(job: _Job, exc: InputError, *, existing_error: ObjectInfo | None) -> Result:
    obj = job.obj
    record = {
        "source": {
            "bucket": obj.bucket,
            "name": obj.name,
            "generation": str(obj.generation),
            "uri": obj.uri,
        },
        "error": {"reason": exc.reason, "type": type(exc).__name__, "message": str(exc)},
        "message_id": job.event.message_id,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    body = json.dumps(record, ensure_ascii=False, indent=2).encode()
    result = _publish(
        job,
        job.outputs.error,
        body,
        content_type=storage.ERROR_CONTENT_TYPE,
        metadata={**_source_metadata(obj), storage.META_ERROR_REASON: exc.reason},
        existing=existing_error,
        outcome=Outcome.ERROR_RECORDED,
        model_version=None,
    )
    return Result(result.outcome, str(exc), result.output_uri, exc.reason)


def _source_metadata(obj: StorageObject) -> dict[str, str]:
    return {
        storage.META_SOURCE_BUCKET: obj.bucket,
        storage.META_SOURCE_NAME: obj.name,
        storage.META_SOURCE_GENERATION: str(obj.generation),
    }


def _publish(
    job: _Job,
    name: str,
    data: bytes,
    *,
    content_type: str,
    metadata: dict[str, str],
    existing: ObjectInfo | None,
    outcome: Outcome,
    model_version: str | None,
    quality: QualitySignals | None = None,
    model_track: Track | None = None,
) -> Result:
    """Writes under the generation rules, then reconciles the other output kind."""
    store, bucket, generation = job.store, job.outputs.bucket, job.obj.generation
    uri = f"gs://{bucket}/{name}"
    with job.timings.measure("upload"):
        written = storage.write_if_newer(
            store,
            bucket,
            name,
            data,
            content_type=content_type,
            metadata=metadata,
            source_generation=generation,
            existing=existing,
        )
        if not written.written:
            if written.info.source_generation == generation:
                return Result(Outcome.DUPLICATE, "written concurrently by another delivery", uri)
            return Result(Outcome.SUPERSEDED, "a newer generation was written concurrently", uri)
        other_name = job.outputs.error if name == job.outputs.mask else job.outputs.mask
        other = store.stat(bucket, other_name)
        if other is not None and other.source_generation > generation:
            storage.delete_exact(store, written.info)
            return Result(Outcome.SUPERSEDED, f"gs://{bucket}/{other_name} is newer")
        if other is not None:
            storage.delete_if_older(store, other, generation)
    return Result(
        outcome,
        f"wrote {uri}",
        uri,
        model_version=model_version,
        quality=quality,
        model_track=model_track,
    )


# --- entry-point wrapper ---------------------------------------------------------------------


def handle_cloud_event(
    cloud_event: Any, *, store: ObjectStore, model: ModelSource, settings: Settings
) -> Result:
    """Parses and processes one CloudEvent and logs its summary line.

    Returns (ack) for successes, ignored events and permanent errors; raises (redelivery) for
    transient, configuration and unexpected errors.
    """
    start = time.perf_counter()
    timings = Timings()
    event: UploadEvent | None = None
    try:
        event = parse_cloud_event(cloud_event)
        result = process_event(event, store=store, model=model, settings=settings, timings=timings)
    except PermanentError as exc:
        outcome = Outcome.REJECTED
        if isinstance(exc, MalformedEventError):
            outcome = Outcome.MALFORMED_EVENT
        result = Result(outcome, str(exc), reason=exc.reason)
    except Exception as exc:
        result = _failure(exc)
        _log_summary(result, event, cloud_event, model, timings=timings, start=start, exc=exc)
        raise
    _log_summary(result, event, cloud_event, model, timings=timings, start=start, exc=None)
    return result


def _failure(exc: Exception) -> Result:
    reason = getattr(exc, "reason", type(exc).__name__)
    if isinstance(exc, TransientError):
        return Result(Outcome.TRANSIENT_ERROR, str(exc), reason=reason)
    if isinstance(exc, ConfigurationError):
        return Result(Outcome.CONFIGURATION_ERROR, str(exc), reason=reason)
    return Result(Outcome.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", reason=reason)


def _log_summary(
    result: Result,
    event: UploadEvent | None,
    cloud_event: Any,
    model: ModelSource,
    *,
    timings: Timings,
    start: float,
    exc: Exception | None,
) -> None:
    obj = event.object if event else None
    fields: dict[str, Any] = {
        "outcome": str(result.outcome),
        "reason": result.reason,
        "detail": result.detail,
        "message_id": event.message_id if event else message_id_of(cloud_event),
        "event_type": event.event_type if event else None,
        "bucket": obj.bucket if obj else None,
        "object": obj.name if obj else None,
        "generation": str(obj.generation) if obj else None,
        "output": result.output_uri,
        "model_version": result.model_version or _loaded_version(model),
        "model_track": str(result.model_track) if result.model_track else None,
        "timings_ms": {**timings.rounded(), "total": round((time.perf_counter() - start) * 1e3, 1)},
        "quality": result.quality.rounded() if result.quality else None,
    }
    where = f" {obj.uri}#{obj.generation}" if obj else ""
    level = SEVERITY[result.outcome]
    traceback_of = exc if result.outcome is not Outcome.TRANSIENT_ERROR else None
    logs.log_fields(log, level, f"{result.outcome}{where}", fields, exc_info=traceback_of)


def _loaded_version(model: ModelSource) -> str | None:
    if not getattr(model, "loaded", True):
        return None
    try:
        return model.get().version
    except Exception:
        return None
