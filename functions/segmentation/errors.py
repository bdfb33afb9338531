"""Exception types: what the entry point acks, what it re-raises for redelivery.

* `PermanentError`: retrying cannot help. The message is acked. `InputError` subclasses (the
  uploaded object is not a usable image) also get an error record under `errors/` in the output
  bucket; the others (a malformed message, an event from the output bucket) are only logged.
* `TransientError`: storage 429/5xx, timeouts, lost precondition races, a request out of time
  (`RequestDeadlineError`). Re-raised so Pub/Sub redelivers with backoff and dead-letters after
  the configured attempts.
* `ConfigurationError`: bad settings or a model that fails its checks. Re-raised as well: nothing
  is wrong with the message, so it goes to the dead-letter topic for replay once the deployment is
  fixed instead of being dropped.
* Anything else is a bug or an unforeseen failure and counts as transient (re-raised, logged with
  the traceback).

`ObjectNotFoundError` and `PreconditionFailedError` are what every `ObjectStore` raises for a 404
and a 412; the pipeline turns them into outcomes.
"""

from __future__ import annotations


class SegmentationError(Exception):
    """Base class. `reason` is a stable snake_case code for logs and error records."""

    reason = "segmentation_error"


# --- permanent -------------------------------------------------------------------------------


class PermanentError(SegmentationError):
    """Retrying the same message cannot succeed: ack it."""

    reason = "permanent_error"


class MalformedEventError(PermanentError):
    """The event or Pub/Sub message is not a GCS notification we can parse."""

    reason = "malformed_event"


class OutputIsInputBucketError(PermanentError):
    """The event comes from the output bucket: writing would trigger ourselves."""

    reason = "output_is_input_bucket"


class OutputConflictError(PermanentError):
    """Both the output name and the conflict name of an upload are held by other sources."""

    reason = "output_conflict"


class InputError(PermanentError):
    """The uploaded object cannot be segmented; an error record is written for it."""

    reason = "input_error"


class EmptyObjectError(InputError):
    """A zero-byte object (that is not a folder placeholder)."""

    reason = "empty_object"


class ImageTooLargeError(InputError):
    """The object is larger than MAX_IMAGE_BYTES."""

    reason = "image_too_large"


class TooManyPixelsError(InputError):
    """The image header declares more than MAX_IMAGE_PIXELS pixels (decompression bomb guard)."""

    reason = "too_many_pixels"


class NotAnImageError(InputError):
    """The bytes are not an image Pillow recognises."""

    reason = "not_an_image"


class UnsupportedFormatError(InputError):
    """A recognisable image format we do not accept (e.g. SVG, HEIC, AVIF, TIFF, BMP, ICO)."""

    reason = "unsupported_format"


class CorruptImageError(InputError):
    """A supported format whose data fails to decode (truncated, bad chunks, ...)."""

    reason = "corrupt_image"


# --- transient -------------------------------------------------------------------------------


class TransientError(SegmentationError):
    """May succeed on redelivery: re-raise so Pub/Sub retries with backoff."""

    reason = "transient_error"


class StorageUnavailableError(TransientError):
    """Cloud Storage answered 429/5xx, timed out or the connection failed."""

    reason = "storage_unavailable"


class WriteConflictError(TransientError):
    """Lost the generation-precondition race repeatedly while writing an output object."""

    reason = "write_conflict"


class RequestDeadlineError(TransientError):
    """A storage call was not started: the request's deadline (REQUEST_TIMEOUT_SECONDS less a
    margin, segmentation/deadline.py) has passed, and the ack deadline is near."""

    reason = "request_deadline"


# --- configuration ---------------------------------------------------------------------------


class ConfigurationError(SegmentationError):
    """The deployment is wrong (settings, permissions, model): re-raise, dead-letter, replay."""

    reason = "configuration_error"


class SettingsError(ConfigurationError):
    """An environment variable is missing or invalid; `variable` names it."""

    reason = "invalid_setting"

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class ModelError(ConfigurationError):
    """The model cannot be found, resolved or loaded."""

    reason = "model_error"


class ModelIntegrityError(ModelError):
    """The .tflite file's sha256 or size does not match the manifest (or the latest pointer)."""

    reason = "model_integrity"


class ModelContractError(ModelError):
    """The manifest or the interpreter's tensors do not match the input/output contract."""

    reason = "model_contract"


class OutputBucketMissingError(ConfigurationError):
    """OUTPUT_BUCKET does not exist (an upload answered 404)."""

    reason = "output_bucket_missing"


class StoragePermissionError(ConfigurationError):
    """Cloud Storage answered 401/403: the service account lacks a role."""

    reason = "storage_permission"


# --- storage signals -------------------------------------------------------------------------


class ObjectNotFoundError(SegmentationError):
    """The object (or the requested generation) does not exist: 404."""

    reason = "object_not_found"


class PreconditionFailedError(SegmentationError):
    """A generation precondition did not hold: 412."""

    reason = "precondition_failed"
