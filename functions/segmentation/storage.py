"""The Cloud Storage edge: a small object-store interface, its GCS implementation, output naming
and the generation-guarded reads and writes the pipeline is built on.

Everything above this module sees only `ObjectStore` and the exceptions in `errors`: a 404 is
`ObjectNotFoundError`, a 412 `PreconditionFailedError`, 401/403 `StoragePermissionError`, and
429/5xx/timeouts/connection failures `StorageUnavailableError` (tests/fakes/storage.py mimics it).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import storage as gcs
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.cloud.storage.retry import (
    DEFAULT_RETRY,
    ConditionalRetryPolicy,
    is_generation_specified,
)

from segmentation.deadline import Deadline
from segmentation.errors import (
    EmptyObjectError,
    ImageTooLargeError,
    ObjectNotFoundError,
    OutputBucketMissingError,
    PreconditionFailedError,
    StoragePermissionError,
    StorageUnavailableError,
    WriteConflictError,
)
from segmentation.results import QualitySignals

MASK_PREFIX = "masks/"
ERROR_PREFIX = "errors/"
MASK_SUFFIX = ".png"
ERROR_SUFFIX = ".json"
MASK_CONTENT_TYPE = "image/png"
ERROR_CONTENT_TYPE = "application/json"
MAX_OBJECT_NAME_BYTES = 1024  # Cloud Storage's limit, UTF-8 encoded
HASH_HEX_CHARS = 32  # fallback names: "~" + the first 32 hex digits of sha256(source name)
CONFLICT_HASH_HEX_CHARS = 64  # conflict names: "~" + all 64 hex digits of sha256(source name)
# The tails that mark a derived (not verbatim) output name. A plain name never ends in one: a
# source name that does is given the fallback form itself, so the three namespaces (plain,
# fallback, conflict) are disjoint and `output_name` / `conflict_name` are injective.
FALLBACK_TAIL = re.compile(rf"~[0-9a-f]{{{HASH_HEX_CHARS}}}\Z")
CONFLICT_TAIL = re.compile(rf"~[0-9a-f]{{{CONFLICT_HASH_HEX_CHARS}}}\Z")

# Custom metadata on every output object (values are strings, as GCS stores them).
META_SOURCE_BUCKET = "source-bucket"
META_SOURCE_NAME = "source-name"
META_SOURCE_GENERATION = "source-generation"
META_MODEL_NAME = "model-name"
META_MODEL_VERSION = "model-version"
META_MODEL_TRACK = "model-track"  # "stable" or "canary" (segmentation.results.Track)
META_ERROR_REASON = "error-reason"
META_IMAGE_WIDTH = "image-width"
META_IMAGE_HEIGHT = "image-height"
META_TIMING_PREFIX = "timing-"  # timing-download-ms, timing-decode-ms, ...
# A mask's quality signals (segmentation.results.QualitySignals), 4 decimals each.
META_MEAN_CONFIDENCE = "quality-mean-confidence"
META_LOW_CONFIDENCE_FRACTION = "quality-low-confidence-fraction"
META_CLASS_FRACTION_PREFIX = "quality-fraction-"  # quality-fraction-pet, -background, -border

WRITE_ATTEMPTS = 3
# The HTTP timeout of one attempt (connecting, and each wait for bytes), and how long the library
# keeps retrying one call (its own default, 120 s); a call bound to a request deadline gets less
# of both when less time is left (`call_budget`).
REQUEST_TIMEOUT_S = 60.0
RETRY_TIMEOUT_S: float = DEFAULT_RETRY.timeout or 120.0


@dataclass(frozen=True)
class ObjectInfo:
    """Metadata of one object generation."""

    bucket: str
    name: str
    generation: int
    size: int
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def source_generation(self) -> int:
        """The input generation an output object was made from (0 when absent or unreadable)."""
        try:
            return int(self.metadata.get(META_SOURCE_GENERATION, "0"))
        except ValueError:
            return 0


class ObjectStore(Protocol):
    """The four storage operations the function needs."""

    def stat(self, bucket: str, name: str, *, generation: int | None = None) -> ObjectInfo | None:
        """Metadata of the live object (or of `generation`); None when it does not exist."""

    def read(
        self, bucket: str, name: str, *, generation: int | None = None, limit: int | None = None
    ) -> bytes:
        """The object's bytes, at most `limit` of them (the transfer stops there: a longer object
        is cut, whatever its metadata says); raises `ObjectNotFoundError`."""

    def write(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str],
        if_generation_match: int,
    ) -> ObjectInfo:
        """Creates/replaces the object only if its generation is `if_generation_match` (0: absent);
        raises `PreconditionFailedError` otherwise, `ObjectNotFoundError` if the bucket is
        missing."""

    def delete(self, bucket: str, name: str, *, if_generation_match: int) -> None:
        """Deletes the object only at that generation; raises `ObjectNotFoundError` or
        `PreconditionFailedError`."""


# --- output naming ---------------------------------------------------------------------------


def mask_name(source_name: str) -> str:
    """`masks/<source_name>.png`, or its safe fallback (see `output_name`)."""
    return output_name(MASK_PREFIX, source_name, MASK_SUFFIX)


def error_name(source_name: str) -> str:
    """`errors/<source_name>.json`, or its safe fallback (see `output_name`)."""
    return output_name(ERROR_PREFIX, source_name, ERROR_SUFFIX)


def output_name(prefix: str, source_name: str, suffix: str) -> str:
    """Maps an input object name under `prefix`, keeping the name whenever that is safe.

    The result is `prefix + source_name + suffix` (the plain form) unless the source name has a
    `.` or `..` path segment, the result would exceed 1024 UTF-8 bytes, or the source name itself
    ends like a derived name (`~` and 32 or 64 lowercase hex digits, see `FALLBACK_TAIL`). Then
    it is the fallback form `prefix + escaped + "~" + sha256(source_name)[:32] + suffix`, where
    `escaped` is the source name with `.`/`..` segments written `%2E`/`%2E%2E`, cut (at a
    character boundary) to fit. The object's metadata always holds the full source name.

    Injective: a plain form never ends in a derived tail, every fallback form does (and no
    conflict tail), so no upload can be named so that its output is another upload's output
    (up to a collision of 128 bits of sha256).
    """
    plain = f"{prefix}{source_name}{suffix}"
    if len(plain.encode()) <= MAX_OBJECT_NAME_BYTES and not _needs_fallback(source_name):
        return plain
    digest = hashlib.sha256(source_name.encode()).hexdigest()[:HASH_HEX_CHARS]
    return _derived(prefix, source_name, f"~{digest}{suffix}")


def conflict_name(prefix: str, source_name: str, suffix: str) -> str:
    """Where an output goes when its `output_name` is held by another source's output (one whose
    metadata names another bucket or object; see `names_other_source`): `prefix + escaped + "~"
    + sha256(source_name) (all 64 hex digits) + suffix`. Neither a plain nor a fallback name can
    take this form, so only another conflict name (the same source name in another bucket) can
    ever hold it."""
    digest = hashlib.sha256(source_name.encode()).hexdigest()
    return _derived(prefix, source_name, f"~{digest}{suffix}")


def mask_conflict_name(source_name: str) -> str:
    return conflict_name(MASK_PREFIX, source_name, MASK_SUFFIX)


def error_conflict_name(source_name: str) -> str:
    return conflict_name(ERROR_PREFIX, source_name, ERROR_SUFFIX)


def _needs_fallback(source_name: str) -> bool:
    if any(segment in (".", "..") for segment in source_name.split("/")):
        return True
    return bool(FALLBACK_TAIL.search(source_name) or CONFLICT_TAIL.search(source_name))


def _derived(prefix: str, source_name: str, tail: str) -> str:
    escaped = "/".join(_escape_dot_segment(segment) for segment in source_name.split("/"))
    budget = MAX_OBJECT_NAME_BYTES - len(prefix.encode()) - len(tail.encode())
    return f"{prefix}{_truncate_utf8(escaped, budget)}{tail}"


def _escape_dot_segment(segment: str) -> str:
    return segment.replace(".", "%2E") if segment in (".", "..") else segment


def _truncate_utf8(text: str, max_bytes: int) -> str:
    return text.encode()[:max_bytes].decode("utf-8", errors="ignore")


# --- ownership -------------------------------------------------------------------------------


def names_other_source(info: ObjectInfo, bucket: str, name: str) -> bool:
    """True when the output's metadata names another source than `gs://bucket/name`: such an
    output is never overwritten, deleted or compared with (it is another upload's, left by an
    older naming scheme, or the same name from another input bucket). An object without source
    metadata (made by hand) names no source and counts as replaceable."""
    source_name = info.metadata.get(META_SOURCE_NAME)
    source_bucket = info.metadata.get(META_SOURCE_BUCKET)
    return (source_name is not None and source_name != name) or (
        source_bucket is not None and source_bucket != bucket
    )


def belongs_to(info: ObjectInfo, bucket: str, name: str) -> bool:
    """True when the output's metadata names exactly `gs://bucket/name` (the strict test a
    deletion needs)."""
    return (
        info.metadata.get(META_SOURCE_NAME) == name
        and info.metadata.get(META_SOURCE_BUCKET) == bucket
    )


# --- metadata --------------------------------------------------------------------------------


def quality_metadata(signals: QualitySignals) -> dict[str, str]:
    """A mask's quality signals as custom metadata (string values, as GCS stores them)."""
    return {
        META_MEAN_CONFIDENCE: f"{signals.mean_confidence:.4f}",
        META_LOW_CONFIDENCE_FRACTION: f"{signals.low_confidence_fraction:.4f}",
        **{
            f"{META_CLASS_FRACTION_PREFIX}{name}": f"{fraction:.4f}"
            for name, fraction in signals.class_fractions.items()
        },
    }


# --- generation-guarded operations -----------------------------------------------------------


def download_input(
    store: ObjectStore,
    bucket: str,
    name: str,
    *,
    generation: int,
    size: int | None,
    max_bytes: int,
) -> bytes:
    """Downloads one input generation after checking its size against `max_bytes`.

    The size comes from the notification when it carries one (it is the size of exactly this
    generation), otherwise from the object's metadata. Neither is trusted for the download
    itself: it reads at most `max_bytes + 1` bytes, so an object larger than its stated size is
    `ImageTooLargeError` without being fetched. Raises `EmptyObjectError`, `ImageTooLargeError`
    or `ObjectNotFoundError` (deleted or replaced since the upload).
    """
    if size is None:
        info = store.stat(bucket, name, generation=generation)
        if info is None:
            raise ObjectNotFoundError(f"gs://{bucket}/{name}#{generation} no longer exists")
        size = info.size
    check_size(size, max_bytes)
    data = store.read(bucket, name, generation=generation, limit=max_bytes + 1)
    check_size(len(data), max_bytes)
    return data


def check_size(size: int, max_bytes: int) -> None:
    """Raises `EmptyObjectError` for 0 bytes and `ImageTooLargeError` above `max_bytes`."""
    if size == 0:
        raise EmptyObjectError("the object is empty (0 bytes)")
    if size > max_bytes:
        raise ImageTooLargeError(f"{size} bytes exceeds the limit of {max_bytes} bytes")


@dataclass(frozen=True)
class WriteResult:
    """`info` is what we wrote, or (not `written`) the object with the same or newer source."""

    written: bool
    info: ObjectInfo


def write_if_newer(
    store: ObjectStore,
    bucket: str,
    name: str,
    data: bytes,
    *,
    content_type: str,
    metadata: Mapping[str, str],
    source_generation: int,
    existing: ObjectInfo | None,
) -> WriteResult:
    """Writes unless the object already holds the same or a newer source generation.

    Each attempt is conditional on the generation of the object last seen (`existing`, 0 when
    absent), so a concurrent writer makes us lose with a 412; we then re-read it and either stop
    (it is at least as new) or try again on top of it. An object whose metadata names another
    source than `metadata` does is never replaced: `WriteConflictError` (transient: the
    redelivery finds it and writes under the conflict name).
    """
    bucket_of, name_of = metadata.get(META_SOURCE_BUCKET), metadata.get(META_SOURCE_NAME)
    for _ in range(WRITE_ATTEMPTS):
        if (
            existing is not None
            and bucket_of is not None
            and name_of is not None
            and names_other_source(existing, bucket_of, name_of)
        ):
            raise WriteConflictError(
                f"gs://{bucket}/{name} belongs to gs://{existing.metadata.get(META_SOURCE_BUCKET)}"
                f"/{existing.metadata.get(META_SOURCE_NAME)}; not replacing it"
            )
        if existing is not None and existing.source_generation >= source_generation:
            return WriteResult(written=False, info=existing)
        try:
            info = store.write(
                bucket,
                name,
                data,
                content_type=content_type,
                metadata=metadata,
                if_generation_match=existing.generation if existing else 0,
            )
        except PreconditionFailedError:
            existing = store.stat(bucket, name)
            continue
        except ObjectNotFoundError as exc:  # an upload only 404s when the bucket is missing
            raise OutputBucketMissingError(f"bucket {bucket} does not exist") from exc
        return WriteResult(written=True, info=info)
    raise WriteConflictError(f"gs://{bucket}/{name}: lost {WRITE_ATTEMPTS} write races in a row")


def delete_if_older(store: ObjectStore, info: ObjectInfo, source_generation: int) -> bool:
    """Deletes `info` (at its generation) if it was made from an older source generation."""
    if info.source_generation >= source_generation:
        return False
    return delete_exact(store, info)


def delete_exact(store: ObjectStore, info: ObjectInfo) -> bool:
    """Deletes exactly this object generation; False if it is already gone or was replaced."""
    try:
        store.delete(info.bucket, info.name, if_generation_match=info.generation)
    except (ObjectNotFoundError, PreconditionFailedError):
        return False
    return True


# --- Google Cloud Storage --------------------------------------------------------------------

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    api_exceptions.TooManyRequests,
    api_exceptions.ServerError,
    api_exceptions.RetryError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    auth_exceptions.TransportError,
    ConnectionError,
    TimeoutError,
)


@contextmanager
def mapped_errors(what: str) -> Iterator[None]:
    """Translates google-cloud-storage exceptions into this package's storage exceptions."""
    try:
        yield
    except api_exceptions.NotFound as exc:
        raise ObjectNotFoundError(f"{what}: not found") from exc
    except api_exceptions.PreconditionFailed as exc:
        raise PreconditionFailedError(f"{what}: generation precondition failed") from exc
    except (api_exceptions.Unauthorized, api_exceptions.Forbidden) as exc:
        raise StoragePermissionError(f"{what}: permission denied: {exc}") from exc
    except (*_UNAVAILABLE, DataCorruption, InvalidResponse) as exc:
        raise StorageUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from exc


def call_budget(
    remaining: float,
    *,
    attempt_timeout: float = REQUEST_TIMEOUT_S,
    retry_timeout: float = RETRY_TIMEOUT_S,
) -> tuple[float, float]:
    """(HTTP timeout of each attempt, retry timeout) of one call with `remaining` seconds left.

    Each is at most its default, and together they are at most `remaining`: the library starts
    no attempt after the retry timeout (google.api_core.retry: it gives up when the next backoff
    would end past it), and the last attempt waits at most the attempt timeout. Half of what is
    left goes to each when that is less than the defaults."""
    attempt = min(attempt_timeout, remaining / 2)
    return attempt, min(retry_timeout, remaining - attempt)


class GcsObjectStore:
    """`ObjectStore` over google-cloud-storage. The client is created on first use, so importing
    and constructing this costs nothing (and needs no credentials) until a request is made.

    Without a deadline every call has the library's default retry (120 s) and `timeout` per
    attempt. `within(deadline)` is a view (same client) whose calls end by the deadline: each
    gets `retry=DEFAULT_RETRY.with_timeout(...)` and an HTTP timeout from `call_budget`, and a
    call is not started at all once the deadline has passed (`RequestDeadlineError`)."""

    def __init__(
        self,
        client: Any | None = None,
        *,
        client_factory: Callable[[], Any] | None = None,
        timeout: float = REQUEST_TIMEOUT_S,
        deadline: Deadline | None = None,
    ) -> None:
        self._client = client
        self._client_factory = client_factory or _default_client
        self._timeout = timeout
        self.deadline = deadline

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def within(self, deadline: Deadline) -> GcsObjectStore:
        """This store (its client, created once, shared) with every call bounded by `deadline`."""
        return GcsObjectStore(
            client_factory=lambda: self.client, timeout=self._timeout, deadline=deadline
        )

    def _limits(self, what: str, *, conditional: bool = False) -> dict[str, Any]:
        """The `timeout` (and, under a deadline, `retry`) arguments of one library call; raises
        `RequestDeadlineError` when the deadline has passed. A `conditional` call (an upload)
        keeps the library's rule of retrying only when a generation precondition is given."""
        if self.deadline is None:
            return {"timeout": self._timeout}
        attempt, retry_timeout = call_budget(
            self.deadline.check(what), attempt_timeout=self._timeout
        )
        retry: Any = DEFAULT_RETRY.with_timeout(retry_timeout)
        if conditional:
            retry = ConditionalRetryPolicy(retry, is_generation_specified, ["query_params"])
        return {"timeout": attempt, "retry": retry}

    def stat(self, bucket: str, name: str, *, generation: int | None = None) -> ObjectInfo | None:
        what = f"stat gs://{bucket}/{name}"
        limits = self._limits(what)
        with mapped_errors(what):
            blob = self.client.bucket(bucket).get_blob(name, generation=generation, **limits)
        return None if blob is None else object_info(blob)

    def read(
        self, bucket: str, name: str, *, generation: int | None = None, limit: int | None = None
    ) -> bytes:
        what = f"read gs://{bucket}/{name}"
        limits = self._limits(what)
        with mapped_errors(what):
            blob = self.client.bucket(bucket).blob(name, generation=generation)
            if limit is None:
                return blob.download_as_bytes(**limits)
            # Streamed into a buffer that stops the transfer once `limit` bytes are in: the
            # object's size metadata is never trusted. No Range header, so that the library
            # still verifies the checksum of every object read whole (it skips partial answers).
            buffer = LimitedBuffer(limit)
            with contextlib.suppress(ReadLimitError):
                blob.download_to_file(buffer, **limits)
            return buffer.getvalue()

    def write(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str],
        if_generation_match: int,
    ) -> ObjectInfo:
        what = f"write gs://{bucket}/{name}"
        limits = self._limits(what, conditional=True)
        with mapped_errors(what):
            blob = self.client.bucket(bucket).blob(name)
            blob.metadata = dict(metadata)
            # A precondition makes the upload idempotent, so the library retries it on 429/5xx.
            blob.upload_from_string(
                data,
                content_type=content_type,
                if_generation_match=if_generation_match,
                **limits,
            )
        return object_info(blob)

    def delete(self, bucket: str, name: str, *, if_generation_match: int) -> None:
        what = f"delete gs://{bucket}/{name}"
        limits = self._limits(what)
        with mapped_errors(what):
            self.client.bucket(bucket).blob(name).delete(
                if_generation_match=if_generation_match, **limits
            )


class ReadLimitError(Exception):
    """Raised by `LimitedBuffer` to stop a download (never leaves `GcsObjectStore.read`)."""


class LimitedBuffer:
    """A write-only file object that keeps at most `limit` bytes and then stops the download
    writing into it (raising `ReadLimitError`, which aborts the streamed response)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> int:
        room = self._limit - self._size
        self._parts.append(bytes(data[:room]))
        self._size += min(len(data), room)
        if len(data) > room or self._size >= self._limit:
            raise ReadLimitError
        return len(data)

    def flush(self) -> None:
        pass

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


def _default_client() -> Any:
    return gcs.Client()


def object_info(blob: Any, bucket: str | None = None) -> ObjectInfo:
    """An `ObjectInfo` of a google-cloud-storage Blob (the tools use it too)."""
    return ObjectInfo(
        bucket=bucket if bucket is not None else blob.bucket.name,
        name=blob.name,
        generation=int(blob.generation or 0),
        size=int(blob.size or 0),
        content_type=blob.content_type,
        metadata=dict(blob.metadata or {}),
    )
