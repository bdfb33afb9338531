"""Orchestration: one notification in, at most one output object written, one summary log line.

`process_event` is the pure-as-possible core: it takes a parsed event, an `ObjectStore`, a model
(anything with `get() -> SegmentationModel`; a `ServingModels` also picks the stable or canary
model per upload with `select`) and the settings, and returns a `Result`. The mask's metadata and
the summary line name the version and track of the model that made it.
`handle_cloud_event` wraps it for the entry point: parse, process, log exactly one structured
summary line, and decide ack (return) versus redelivery (raise). It also starts the request's
`Deadline` (REQUEST_TIMEOUT_SECONDS less a margin, segmentation/deadline.py): `process_event`
binds the store to it (`deadline.bound`) and hands it to the model's `select`, so every storage
call of the request, model loading included, ends by it or is not started
(`RequestDeadlineError`, transient: redelivered).

Generation rules, per input object, over its two possible outputs (`masks/...png` and
`errors/...json`, both carrying `source-bucket`, `source-name` and `source-generation` metadata):
* an output whose metadata names another source is never compared with, overwritten or deleted:
  it is logged as a conflict (`output_conflict`) and this object's output of that kind goes to
  its conflict name (`storage.conflict_name`) instead;
* the newest source generation recorded in either output of this source is the object's
  processed state; an event for that generation is a duplicate, for an older one superseded:
  nothing is written. A duplicate still finishes the job (`_finish`), so a redelivery after a
  fault completes what the first delivery left undone;
* writes are conditional on the output object's generation (0 when absent), so a concurrent
  writer makes us lose with 412; we re-read and stop if it is at least as new (`write_if_newer`);
* after writing (and on a duplicate), the other output kind is deleted when it describes an
  older generation (a valid re-upload clears an old error record and vice versa); if it
  describes a newer one, we deleted our own write instead: the newest generation always wins;
  with DELETE_OUTPUTS_ON_DELETE, an input deleted while it was processed loses the output just
  written (its deletion event may have found nothing to delete).
OBJECT_DELETE / OBJECT_ARCHIVE of a generation that is no longer live remove this source's
outputs made from that generation or an older one (`_remove_outputs`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from segmentation import imaging, logs, storage
from segmentation.deadline import Deadline, bound
from segmentation.errors import (
    ConfigurationError,
    InputError,
    MalformedEventError,
    ObjectNotFoundError,
    OutputConflictError,
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
class _Slot:
    """Where this source's output of one kind lives (its output name, or its conflict name when
    another source's output holds that), and the output found there (None: absent)."""

    name: str
    existing: ObjectInfo | None


@dataclass(frozen=True)
class _Outputs:
    bucket: str
    mask: _Slot
    error: _Slot

    def other(self, name: str) -> _Slot:
        return self.error if name == self.mask.name else self.mask


@dataclass(frozen=True)
class _Job:
    """Everything one message's processing needs."""

    event: UploadEvent
    obj: StorageObject
    store: ObjectStore
    settings: Settings
    timings: Timings
    outputs: _Outputs
    deadline: Deadline | None = None


# --- core ------------------------------------------------------------------------------------


def process_event(
    event: UploadEvent,
    *,
    store: ObjectStore,
    model: ModelSource,
    settings: Settings,
    timings: Timings | None = None,
    deadline: Deadline | None = None,
) -> Result:
    """Processes one parsed notification; raises only for non-input failures. With a
    `deadline`, every storage call (the model's loading included) ends by it."""
    obj = event.object
    skipped = _skipped(event, settings)
    if skipped is not None or obj is None:
        return skipped or Result(Outcome.IGNORED, "no object")
    timings = timings if timings is not None else Timings()
    store = bound(store, deadline)
    if event.is_deletion:
        return _remove_outputs(event, obj, store, settings.output_bucket, timings)
    with timings.measure("check"):
        outputs = _locate(store, settings.output_bucket, obj, log_conflicts=True)
    job = _Job(event, obj, store, settings, timings, outputs, deadline)
    settled = _settled(obj, outputs.mask.existing, outputs.error.existing)
    if settled is not None:
        if settled.outcome is Outcome.DUPLICATE:
            return _finish_duplicate(job, settled)
        return settled
    try:
        return _segment(job, model, existing_mask=outputs.mask.existing)
    except InputError as exc:
        return _record_error(job, exc, existing_error=outputs.error.existing)


def _skipped(event: UploadEvent, settings: Settings) -> Result | None:
    """The Result of an event that is not processed (ignored); raises for the output bucket."""
    obj = event.object
    if obj is None or not (event.is_finalize or event.is_deletion):
        return Result(Outcome.IGNORED, f"event type {event.event_type} is not handled")
    if obj.is_folder_placeholder:
        return Result(Outcome.IGNORED, "folder placeholder")
    if event.is_deletion and not settings.delete_outputs_on_delete:
        return Result(
            Outcome.IGNORED, "DELETE_OUTPUTS_ON_DELETE is off", reason="delete_outputs_off"
        )
    if obj.bucket == settings.output_bucket:
        raise OutputIsInputBucketError(
            f"{obj.uri} is in OUTPUT_BUCKET; refusing to write where uploads trigger us"
        )
    if settings.input_bucket is not None and obj.bucket != settings.input_bucket:
        return Result(
            Outcome.IGNORED,
            f"{obj.uri} is not in INPUT_BUCKET {settings.input_bucket}",
            reason="not_input_bucket",
        )
    return None


def _locate(
    store: ObjectStore, bucket: str, obj: StorageObject, *, log_conflicts: bool
) -> _Outputs:
    mask = _locate_kind(
        store,
        bucket,
        obj,
        storage.mask_name(obj.name),
        storage.mask_conflict_name(obj.name),
        log_conflicts=log_conflicts,
    )
    error = _locate_kind(
        store,
        bucket,
        obj,
        storage.error_name(obj.name),
        storage.error_conflict_name(obj.name),
        log_conflicts=log_conflicts,
    )
    return _Outputs(bucket, mask, error)


def _locate_kind(
    store: ObjectStore,
    bucket: str,
    obj: StorageObject,
    name: str,
    conflict_name: str,
    *,
    log_conflicts: bool,
) -> _Slot:
    """The slot of one output kind: its output name, unless another source's output is there."""
    found = store.stat(bucket, name)
    if found is None or not storage.names_other_source(found, obj.bucket, obj.name):
        return _Slot(name, found)
    alternative = store.stat(bucket, conflict_name)
    taken = alternative is not None and storage.names_other_source(
        alternative, obj.bucket, obj.name
    )
    if log_conflicts:
        _log_conflict(obj, found, conflict_name, alternative if taken else None)
    if not taken:
        return _Slot(conflict_name, alternative)
    if not log_conflicts:  # a deletion: nothing of ours can be there
        return _Slot(conflict_name, None)
    raise OutputConflictError(
        f"gs://{bucket}/{name} and gs://{bucket}/{conflict_name} both belong to other sources"
    )


def _log_conflict(
    obj: StorageObject, found: ObjectInfo, conflict_name: str, taken: ObjectInfo | None
) -> None:
    def held(info: ObjectInfo) -> dict[str, str | None]:
        return {
            "output": f"gs://{info.bucket}/{info.name}",
            "source_bucket": info.metadata.get(storage.META_SOURCE_BUCKET),
            "source_name": info.metadata.get(storage.META_SOURCE_NAME),
            "source_generation": info.metadata.get(storage.META_SOURCE_GENERATION),
        }

    fields: dict[str, Any] = {
        "event": "output_conflict",
        "bucket": obj.bucket,
        "object": obj.name,
        "generation": str(obj.generation),
        "held_by": held(found),
        "output": f"gs://{found.bucket}/{conflict_name}",
        "conflict_held_by": held(taken) if taken is not None else None,
    }
    logs.log_fields(
        log,
        logging.WARNING,
        f"output_conflict gs://{found.bucket}/{found.name} belongs to another source; "
        f"using gs://{found.bucket}/{conflict_name} for {obj.uri}",
        fields,
    )


def _settled(obj: StorageObject, *existing: ObjectInfo | None) -> Result | None:
    """A Result when an output (of this source) already records this or a newer generation."""
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


def _finish_duplicate(job: _Job, duplicate: Result) -> Result:
    """A duplicate delivery finishes what the first one may have left undone (a fault after its
    write): the other output kind of an older generation is deleted, and an input deleted
    meanwhile loses this output."""
    outputs, generation = job.outputs, job.obj.generation
    done = next(
        slot.existing
        for slot in (outputs.mask, outputs.error)
        if slot.existing is not None and slot.existing.source_generation == generation
    )
    with job.timings.measure("upload"):
        finished = _finish(job, done, other=outputs.other(done.name).existing)
    return finished or duplicate


def _finish(job: _Job, written: ObjectInfo, *, other: ObjectInfo | None) -> Result | None:
    """After `written` (this generation's output): reconciles the other output kind (`other`,
    as last read) and, with DELETE_OUTPUTS_ON_DELETE, checks the input is still there.
    Returns a Result when `written` had to go; None when it stands."""
    store, obj = job.store, job.obj
    generation = obj.generation
    if other is not None and not storage.names_other_source(other, obj.bucket, obj.name):
        if other.source_generation > generation:
            storage.delete_exact(store, written)
            return Result(Outcome.SUPERSEDED, f"gs://{other.bucket}/{other.name} is newer")
        storage.delete_if_older(store, other, generation)
    if job.settings.delete_outputs_on_delete:
        live = store.stat(obj.bucket, obj.name)
        if live is None:
            # Deleted while we worked: its OBJECT_DELETE/ARCHIVE may have found nothing yet.
            storage.delete_exact(store, written)
            return Result(
                Outcome.OBJECT_GONE,
                f"{obj.uri} was deleted while it was processed; its output was removed",
            )
    return None


def _remove_outputs(
    event: UploadEvent, obj: StorageObject, store: ObjectStore, bucket: str, timings: Timings
) -> Result:
    """OBJECT_DELETE / OBJECT_ARCHIVE: deletes this source's outputs made from the removed
    generation or an older one. Nothing of a newer generation (an overwrite's, or a re-upload's)
    and nothing of another source is touched, and nothing at all while the notification's
    generation is still the live object (a replayed or forged notification)."""
    with timings.measure("check"):
        live = store.stat(obj.bucket, obj.name)
        if live is not None and live.generation <= obj.generation:
            return Result(
                Outcome.IGNORED,
                f"{obj.uri}#{live.generation} is still live: nothing deleted",
                reason="still_live",
            )
        outputs = _locate(store, bucket, obj, log_conflicts=False)
    deleted = []
    with timings.measure("delete"):
        for slot in (outputs.mask, outputs.error):
            info = slot.existing
            if info is None or not storage.belongs_to(info, obj.bucket, obj.name):
                continue
            if info.source_generation > obj.generation:
                continue  # made from a newer upload (an overwrite): it stays
            if storage.delete_exact(store, info):
                deleted.append(f"gs://{info.bucket}/{info.name}")
    why = (
        f"overwritten by generation {event.overwritten_by_generation}"
        if event.overwritten_by_generation
        else "deleted"
    )
    if not deleted:
        return Result(
            Outcome.IGNORED,
            f"{obj.uri}#{obj.generation} {why}: no output of it to delete",
            reason="no_outputs",
        )
    return Result(
        Outcome.OUTPUTS_DELETED,
        f"{obj.uri}#{obj.generation} {why}: deleted {', '.join(deleted)}",
        deleted[0],
    )


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
    model, track = _select_model(model_source, obj, timings, job.deadline)
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
        job.outputs.mask.name,
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
    source: ModelSource, obj: StorageObject, timings: Timings, deadline: Deadline | None
) -> tuple[SegmentationModel, Track]:
    """The model (and its track) for this upload: one choice, used for the whole upload, so the
    mask is named after the model that made it even if a refresh swaps models meanwhile. A
    `ServingModels` loads within `deadline`; a plain model source loads as it was built to."""
    select = getattr(source, "select", None)
    if select is None:
        return _get_model(source, timings), Track.STABLE
    selection = select(obj.bucket, obj.name, obj.generation, timings=timings, deadline=deadline)
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
        job.outputs.error.name,
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
        other = job.outputs.other(name)
        undone = _finish(job, written.info, other=store.stat(bucket, other.name))
        if undone is not None:
            return undone
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
    cloud_event: Any,
    *,
    store: ObjectStore,
    model: ModelSource,
    settings: Settings,
    clock: Callable[[], float] = time.monotonic,
) -> Result:
    """Parses and processes one CloudEvent and logs its summary line.

    Returns (ack) for successes, ignored events and permanent errors; raises (redelivery) for
    transient, configuration and unexpected errors. Storage calls end by the request's deadline,
    `settings.request_timeout_seconds` less a margin from now on `clock`.
    """
    start = time.perf_counter()
    deadline = Deadline.for_request(settings.request_timeout_seconds, clock=clock)
    timings = Timings()
    event: UploadEvent | None = None
    try:
        event = parse_cloud_event(cloud_event)
        result = process_event(
            event,
            store=store,
            model=model,
            settings=settings,
            timings=timings,
            deadline=deadline,
        )
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
