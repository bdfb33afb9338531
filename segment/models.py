"""`segment models`: the model registry (list, promote, rollback) and the stable-vs-canary
comparison of the masks' quality signals (compare).

The registry is what `model_build publish` writes under its base, gs://BUCKET[/PREFIX] or a local
directory (`--registry`, default $SEGMENT_MODEL_REGISTRY):

    <base>/unet/<version>/model.tflite, manifest.json   (and quality.png, training-curve.png)
    <base>/unet/latest.json   {"version", "path", "sha256", "published", "previous"}

latest.json is segmentation.contract's pointer. `promote` and `rollback` move it only to a
verified version (its manifest parses with the function's own `parse_manifest` and names that
version; its model.tflite has the manifest's size and sha256), and write it with a generation
precondition on the latest.json they read (ifGenerationMatch, 0 when there is none): when anyone
moved it in between, nothing is written and `LatestMovedError` says so.

The history is the pointer's `previous` field (newest first, at most
contract.LATEST_HISTORY_LIMIT versions), written by every mover through
`contract.history_after`: promote (and publish) put the version they replace in front; rollback
moves `latest` to the first entry and drops it, so successive rollbacks walk further back and a
promote after a rollback starts the history again from there.

Registry I/O goes through `RegistryStore`, the function's ObjectStore methods (stat, read, write
with if_generation_match; segmentation.errors' ObjectNotFoundError / PreconditionFailedError) plus
`list_names`: `GcsRegistryStore` (segment's storage client, bounded retries) or
`LocalRegistryStore` (a directory; the precondition is checked and the file replaced under a
lock). Tests use tests.fakes.storage's store, which enforces preconditions as Cloud Storage does.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from google.api_core import exceptions as api_exceptions
from segmentation import storage as function_storage
from segmentation.contract import (
    CLASS_NAMES,
    LATEST_POINTER,
    LATEST_SEGMENT,
    MANIFEST_FILE,
    MODEL_FAMILY,
    SAFE_COMPONENT,
    TEST_TIME_FLIP,
    LatestPointer,
    history_after,
    latest_pointer,
    parse_latest_pointer,
)
from segmentation.errors import (
    ModelContractError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from segmentation.manifest import parse_manifest
from segmentation.model import write_atomically
from segmentation.results import Track
from segmentation.storage import ObjectInfo, object_info

from model_build import layout  # TF-free: the run directory's file names
from segment import clients

# Pictures model_build leaves beside a version's manifest, when they were uploaded with it.
PICTURES = {"quality": layout.QUALITY_SHEET, "training_curve": layout.TRAINING_CURVE}
POINTER_CONTENT_TYPE = "application/json"
READ_ATTEMPTS = 3


class RegistryError(Exception):
    """An expected failure of a registry command: one line on stderr, exit 1."""


class VerificationError(RegistryError):
    """The version is not a complete, intact published version; `latest` was not moved."""


class LatestMovedError(RegistryError):
    """latest.json changed between our read and our conditional write; nothing was written."""


# --- stores ----------------------------------------------------------------------------------


class RegistryStore(Protocol):
    """segmentation.storage.ObjectStore's stat/read/write, plus listing."""

    def stat(
        self, bucket: str, name: str, *, generation: int | None = None
    ) -> ObjectInfo | None: ...

    def read(self, bucket: str, name: str, *, generation: int | None = None) -> bytes: ...

    def write(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str],
        if_generation_match: int,
    ) -> ObjectInfo: ...

    def list_names(self, bucket: str, prefix: str) -> list[str]:
        """Every object name starting with `prefix`, sorted."""
        ...


class GcsRegistryStore:
    """A RegistryStore over a google-cloud-storage client, every call with segment's bounded
    retry and timeout (network failures stay the library's, so segment.cli prints one line)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def stat(self, bucket: str, name: str, *, generation: int | None = None) -> ObjectInfo | None:
        blob = self.client.bucket(bucket).get_blob(
            name,
            generation=generation,
            retry=clients.storage_retry(),
            timeout=clients.STORAGE_TIMEOUT,
        )
        return None if blob is None else object_info(blob, bucket)

    def read(self, bucket: str, name: str, *, generation: int | None = None) -> bytes:
        blob = self.client.bucket(bucket).blob(name, generation=generation)
        try:
            return blob.download_as_bytes(
                retry=clients.storage_retry(), timeout=clients.STORAGE_TIMEOUT
            )
        except api_exceptions.NotFound as exc:
            raise ObjectNotFoundError(f"gs://{bucket}/{name}: not found") from exc

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
        blob = self.client.bucket(bucket).blob(name)
        blob.metadata = dict(metadata) or None
        try:  # conditional, hence idempotent: retrying a 429/5xx is safe
            blob.upload_from_string(
                data,
                content_type=content_type,
                if_generation_match=if_generation_match,
                retry=clients.storage_retry(),
                timeout=clients.STORAGE_TIMEOUT,
            )
        except api_exceptions.PreconditionFailed as exc:
            raise PreconditionFailedError(
                f"gs://{bucket}/{name} is no longer at generation {if_generation_match}"
            ) from exc
        except api_exceptions.NotFound as exc:
            raise RegistryError(f"bucket {bucket} does not exist") from exc
        return object_info(blob, bucket)

    def list_names(self, bucket: str, prefix: str) -> list[str]:
        blobs = self.client.list_blobs(
            bucket, prefix=prefix, retry=clients.storage_retry(), timeout=clients.STORAGE_TIMEOUT
        )
        return sorted(blob.name for blob in blobs)


class LocalRegistryStore:
    """A local directory as a single-bucket RegistryStore (the bucket argument is ignored).

    A file's generation is a positive number derived from its inode, mtime and size (a replaced
    file is a new inode); a conditional write checks it and replaces the file atomically while
    holding an exclusive lock on the directory, so two local promotes cannot both win."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"object name {name!r} escapes {self.root}")
        return path

    def stat(self, bucket: str, name: str, *, generation: int | None = None) -> ObjectInfo | None:
        try:
            status = self._path(name).stat()
        except FileNotFoundError:
            return None
        info = ObjectInfo(bucket, name, _file_generation(status), status.st_size)
        return None if generation is not None and info.generation != generation else info

    def read(self, bucket: str, name: str, *, generation: int | None = None) -> bytes:
        path = self._path(name)
        try:
            with path.open("rb") as handle:  # writers replace files, never rewrite them
                current = _file_generation(os.fstat(handle.fileno()))
                if generation is not None and current != generation:
                    raise ObjectNotFoundError(f"{path}: generation {generation} is gone")
                return handle.read()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFoundError(f"{path}: not found") from None

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
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            fcntl.flock(directory, fcntl.LOCK_EX)  # check and replace as one step
            current = self.stat(bucket, name)
            found = current.generation if current is not None else 0
            if found != if_generation_match:
                raise PreconditionFailedError(
                    f"{path} is at generation {found}, expected {if_generation_match}"
                )
            write_atomically(path, data)
        finally:
            os.close(directory)  # releases the lock
        written = self.stat(bucket, name)
        assert written is not None
        return written

    def list_names(self, bucket: str, prefix: str) -> list[str]:
        if not self.root.is_dir():
            return []
        names = (
            path.relative_to(self.root).as_posix()
            for path in self.root.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )
        return sorted(name for name in names if name.startswith(prefix))


def _file_generation(status: os.stat_result) -> int:
    token = f"{status.st_ino}-{status.st_mtime_ns}-{status.st_size}".encode()
    return int(hashlib.sha256(token).hexdigest()[:15], 16) or 1


# --- the registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Registry:
    """The model family directory (`<base>/unet`) in a store."""

    base: str  # as given: gs://BUCKET[/PREFIX] or a directory
    store: RegistryStore
    bucket: str  # "" for a local directory
    family_key: str  # the family directory's name in the store: [PREFIX/]unet
    family_uri: str  # gs://BUCKET/[PREFIX/]unet, or the family directory's absolute path

    def key(self, *parts: str) -> str:
        return "/".join([self.family_key, *parts])

    def uri(self, *parts: str) -> str:
        return "/".join([self.family_uri, *parts])

    @property
    def pointer_uri(self) -> str:
        return self.uri(LATEST_POINTER)


def open_registry(base: str, *, gcs_client: Callable[[], Any]) -> Registry:
    """The registry under `base`: gs://BUCKET[/PREFIX] (a client from `gcs_client`) or a local
    directory, which must exist."""
    if base.startswith("gs://"):
        bucket, _, prefix = base[len("gs://") :].partition("/")
        if not bucket:
            raise RegistryError(f"--registry {base!r} names no bucket (gs://BUCKET[/PREFIX])")
        prefix = prefix.strip("/")
        family_key = f"{prefix}/{MODEL_FAMILY}" if prefix else MODEL_FAMILY
        store = GcsRegistryStore(gcs_client())
        return Registry(base, store, bucket, family_key, f"gs://{bucket}/{family_key}")
    if "://" in base:
        raise RegistryError(
            f"--registry must be gs://BUCKET[/PREFIX] or a directory (got {base!r})"
        )
    root = Path(base).expanduser().resolve()
    if not root.is_dir():
        raise RegistryError(f"registry directory {root} does not exist")
    return Registry(base, LocalRegistryStore(root), "", MODEL_FAMILY, str(root / MODEL_FAMILY))


def store_registry(store: RegistryStore, bucket: str, prefix: str = "") -> Registry:
    """A registry in any RegistryStore's bucket (tests: the precondition-enforcing fake)."""
    prefix = prefix.strip("/")
    family_key = f"{prefix}/{MODEL_FAMILY}" if prefix else MODEL_FAMILY
    base = f"gs://{bucket}/{prefix}".rstrip("/")
    return Registry(base, store, bucket, family_key, f"gs://{bucket}/{family_key}")


@dataclass(frozen=True)
class PointerState:
    """latest.json as read: the pointer (None when absent or invalid), the generation it was read
    at (0: absent; the precondition of the next write) and, when invalid, why."""

    pointer: LatestPointer | None
    generation: int
    problem: str | None = None


def read_pointer(registry: Registry) -> PointerState:
    """latest.json and the generation of exactly the content read."""
    name = registry.key(LATEST_POINTER)
    for _ in range(READ_ATTEMPTS):
        info = registry.store.stat(registry.bucket, name)
        if info is None:
            return PointerState(None, 0)
        try:
            raw = registry.store.read(registry.bucket, name, generation=info.generation)
        except ObjectNotFoundError:
            continue  # replaced between the stat and the read: read again
        try:
            return PointerState(parse_latest_pointer(json.loads(raw)), info.generation)
        except ValueError as exc:  # not JSON, or a ContractError
            return PointerState(None, info.generation, str(exc))
    raise LatestMovedError(f"{registry.pointer_uri} kept changing while it was read; try again")


# --- list ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionEntry:
    """One version directory: its manifest's facts, or why it has none."""

    version: str
    uri: str
    files: tuple[str, ...]
    manifest: Mapping[str, Any] | None = None
    problem: str | None = None  # incomplete, or an invalid manifest
    pictures: Mapping[str, str] = field(default_factory=dict)  # kind -> URI

    def _tflite_metric(self, name: str) -> float | None:
        try:
            value = self.manifest["metrics"]["tflite"][name]  # type: ignore[index]
        except (KeyError, TypeError):
            return None
        return float(value) if isinstance(value, int | float) else None

    @property
    def miou(self) -> float | None:
        return self._tflite_metric("miou")

    @property
    def pixel_accuracy(self) -> float | None:
        return self._tflite_metric("pixel_accuracy")

    @property
    def quantization(self) -> str | None:
        return self.manifest.get("quantization") if self.manifest else None

    @property
    def test_time_flip(self) -> bool:
        """Served flip-averaged (two inferences per image; its metrics were measured so)."""
        return bool(self.manifest and self.manifest.get(TEST_TIME_FLIP))

    @property
    def created(self) -> str | None:
        return self.manifest.get("created") if self.manifest else None

    @property
    def baseline_mean_confidence(self) -> float | None:
        try:
            baseline = self.manifest["metrics"]["tflite"]["quality_signals"]  # type: ignore[index]
            return float(baseline["mean_confidence"])
        except (KeyError, TypeError, ValueError):
            return None


def list_versions(registry: Registry) -> list[VersionEntry]:
    """Every version directory under the family, oldest first (versions start with their
    creation time). Manifests are parsed (as the function would); model files are not read."""
    prefix = registry.key("")
    files: dict[str, list[str]] = {}
    for name in registry.store.list_names(registry.bucket, prefix):
        version, sep, rest = name[len(prefix) :].partition("/")
        if sep and rest and SAFE_COMPONENT.match(version):
            files.setdefault(version, []).append(rest)
    return [
        _entry(registry, version, tuple(sorted(names))) for version, names in sorted(files.items())
    ]


def _entry(registry: Registry, version: str, names: tuple[str, ...]) -> VersionEntry:
    uri = registry.uri(version)
    pictures = {
        kind: registry.uri(version, file) for kind, file in PICTURES.items() if file in names
    }
    if MANIFEST_FILE not in names:
        problem = f"incomplete: no {MANIFEST_FILE} (a publish that did not finish)"
        return VersionEntry(version, uri, names, problem=problem, pictures=pictures)
    try:
        document = json.loads(
            registry.store.read(registry.bucket, registry.key(version, MANIFEST_FILE))
        )
        manifest = parse_manifest(document)
    except (ValueError, ObjectNotFoundError, ModelContractError) as exc:
        return VersionEntry(
            version, uri, names, problem=f"invalid manifest: {exc}", pictures=pictures
        )
    problem = None
    if manifest.version != version:
        problem = f"its manifest names version {manifest.version}"
    return VersionEntry(version, uri, names, document, problem, pictures)


# --- promote and rollback --------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedVersion:
    version: str
    uri: str
    sha256: str
    size_bytes: int


def verify_version(registry: Registry, version: str) -> VerifiedVersion:
    """Checks that `version` is complete and intact; raises VerificationError naming why not."""
    if version == LATEST_SEGMENT or not SAFE_COMPONENT.match(version):
        raise VerificationError(f"{version!r} is not a version name (see `segment models list`)")
    where = registry.uri(version)
    try:
        raw = registry.store.read(registry.bucket, registry.key(version, MANIFEST_FILE))
    except ObjectNotFoundError:
        raise VerificationError(
            f"{where}/{MANIFEST_FILE} does not exist: {version} is not a published version "
            "(see `segment models list`)"
        ) from None
    try:
        manifest = parse_manifest(json.loads(raw))
    except (ValueError, ModelContractError) as exc:
        raise VerificationError(f"{where}/{MANIFEST_FILE}: {exc}") from None
    if manifest.version != version:
        raise VerificationError(f"{where}/{MANIFEST_FILE} names version {manifest.version}")
    try:
        data = registry.store.read(registry.bucket, registry.key(version, manifest.file))
    except ObjectNotFoundError:
        raise VerificationError(f"{where}/{manifest.file} does not exist") from None
    if manifest.size_bytes is not None and len(data) != manifest.size_bytes:
        raise VerificationError(
            f"{where}/{manifest.file} has {len(data)} bytes, its manifest says "
            f"{manifest.size_bytes}"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.sha256:
        raise VerificationError(
            f"{where}/{manifest.file} has sha256 {digest}, its manifest says {manifest.sha256}"
        )
    return VerifiedVersion(version, where, manifest.sha256, len(data))


@dataclass(frozen=True)
class Move:
    """What promote or rollback did to latest.json."""

    action: str  # "promote" or "rollback"
    pointer_uri: str
    from_version: str | None
    to_version: str
    moved: bool  # False: latest named that version already
    pointer: Mapping[str, Any]  # latest.json now


def promote(registry: Registry, version: str, *, now: datetime | None = None) -> Move:
    """Points latest.json at `version` (verified) and puts the version it named in front of the
    history. An invalid latest.json is replaced (without history)."""
    state = read_pointer(registry)
    target = verify_version(registry, version)
    current = state.pointer
    if current is not None and current.version == version and current.sha256 == target.sha256:
        return Move("promote", registry.pointer_uri, version, version, False, _pointer_doc(current))
    history = history_after(current, version)
    return _move(registry, state, target, history, "promote", now)


def rollback(registry: Registry, *, now: datetime | None = None) -> Move:
    """Points latest.json at the first version of its history (verified), which leaves it."""
    state = read_pointer(registry)
    current = state.pointer
    if current is None:
        why = f"is invalid ({state.problem})" if state.problem else "does not exist"
        raise RegistryError(f"{registry.pointer_uri} {why}: nothing to roll back")
    if not current.previous:
        raise RegistryError(
            f"{registry.pointer_uri} (latest {current.version}) records no previous version (it "
            "was written before the history was kept, or rolled back as far as it goes): "
            "`segment models promote VERSION` moves it to any listed version"
        )
    target = verify_version(registry, current.previous[0])
    return _move(registry, state, target, list(current.previous[1:]), "rollback", now)


def _move(
    registry: Registry,
    state: PointerState,
    target: VerifiedVersion,
    history: Sequence[str],
    action: str,
    now: datetime | None,
) -> Move:
    document = latest_pointer(target.version, target.uri, target.sha256, now, previous=history)
    data = json.dumps(document, indent=2).encode() + b"\n"
    try:
        registry.store.write(
            registry.bucket,
            registry.key(LATEST_POINTER),
            data,
            content_type=POINTER_CONTENT_TYPE,
            metadata={},
            if_generation_match=state.generation,
        )
    except PreconditionFailedError:
        raise LatestMovedError(
            f"{registry.pointer_uri} changed while the {action} was deciding (another promote, "
            "rollback or publish moved it): nothing was written; check `segment models list` "
            "and run it again"
        ) from None
    previous = state.pointer.version if state.pointer else None
    return Move(action, registry.pointer_uri, previous, target.version, True, document)


def _pointer_doc(pointer: LatestPointer) -> dict[str, Any]:
    return {
        "version": pointer.version,
        "path": pointer.path,
        "sha256": pointer.sha256,
        "published": pointer.published,
        "previous": list(pointer.previous),
    }


# --- compare ---------------------------------------------------------------------------------

SIGNALS = ("mean_confidence", "low_confidence_share")


@dataclass
class TrackSummary:
    """The masks of one track: how many, by which versions, and the means of their signals
    (each mask weighs the same: the signals are shares of the model's fixed-size output)."""

    track: str
    count: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    _sums: dict[str, list[float]] = field(default_factory=dict)

    def add(self, version: str, signals: Mapping[str, float]) -> None:
        self.count += 1
        self.versions[version] += 1
        for key, value in signals.items():
            self._sums.setdefault(key, []).append(value)

    def mean(self, key: str) -> float | None:
        values = self._sums.get(key)
        return math.fsum(values) / len(values) if values else None

    @property
    def mean_confidence(self) -> float | None:
        return self.mean("mean_confidence")

    @property
    def low_confidence_share(self) -> float | None:
        return self.mean("low_confidence_share")

    @property
    def class_shares(self) -> dict[str, float | None]:
        return {name: self.mean(f"class:{name}") for name in CLASS_NAMES}

    def as_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "versions": dict(sorted(self.versions.items())),
            "mean_confidence": _round(self.mean_confidence),
            "low_confidence_share": _round(self.low_confidence_share),
            "class_shares": {name: _round(v) for name, v in self.class_shares.items()},
        }


@dataclass
class Comparison:
    stable: TrackSummary = field(default_factory=lambda: TrackSummary(str(Track.STABLE)))
    canary: TrackSummary = field(default_factory=lambda: TrackSummary(str(Track.CANARY)))
    untracked: int = 0  # masks without model-track (made before tracks existed)
    without_signals: int = 0  # tracked masks whose quality metadata is missing or unreadable

    def difference(self) -> dict[str, Any] | None:
        """canary minus stable, for each signal (None until both tracks have masks)."""
        if not (self.stable.count and self.canary.count):
            return None
        return {
            "mean_confidence": _delta(self.canary.mean_confidence, self.stable.mean_confidence),
            "low_confidence_share": _delta(
                self.canary.low_confidence_share, self.stable.low_confidence_share
            ),
            "class_shares": {
                name: _delta(self.canary.class_shares[name], self.stable.class_shares[name])
                for name in CLASS_NAMES
            },
        }


def mask_signals(metadata: Mapping[str, str]) -> dict[str, float] | None:
    """A mask's quality signals from its metadata (segmentation.storage's keys); None when one is
    missing or not a number."""
    keys = {
        "mean_confidence": function_storage.META_MEAN_CONFIDENCE,
        "low_confidence_share": function_storage.META_LOW_CONFIDENCE_FRACTION,
        **{
            f"class:{name}": f"{function_storage.META_CLASS_FRACTION_PREFIX}{name}"
            for name in CLASS_NAMES
        },
    }
    try:
        values = {signal: float(metadata[key]) for signal, key in keys.items()}
    except (KeyError, ValueError):
        return None
    return values if all(math.isfinite(v) for v in values.values()) else None


def summarise(metadatas: Iterable[Mapping[str, str]]) -> Comparison:
    """Groups masks' metadata by `model-track` and averages their quality signals."""
    comparison = Comparison()
    tracks = {str(Track.STABLE): comparison.stable, str(Track.CANARY): comparison.canary}
    for metadata in metadatas:
        summary = tracks.get(metadata.get(function_storage.META_MODEL_TRACK, ""))
        if summary is None:
            comparison.untracked += 1
            continue
        signals = mask_signals(metadata)
        if signals is None:
            comparison.without_signals += 1
            continue
        summary.add(metadata.get(function_storage.META_MODEL_VERSION, "?"), signals)
    return comparison


def mask_metadata(
    storage: Any, output_bucket: str, *, prefix: str = "", since: datetime | None = None
) -> Iterable[Mapping[str, str]]:
    """The metadata of every mask in the output bucket (inputs under `prefix`, written at or
    after `since`), one listing: object listings carry custom metadata."""
    blobs = storage.list_blobs(
        output_bucket,
        prefix=f"{function_storage.MASK_PREFIX}{prefix}",
        retry=clients.storage_retry(),
        timeout=clients.STORAGE_TIMEOUT,
    )
    for blob in blobs:
        if since is not None and blob.updated is not None and blob.updated < since:
            continue
        yield dict(blob.metadata or {})


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


# --- rendering -------------------------------------------------------------------------------


def list_json(registry: Registry, state: PointerState, entries: Sequence[VersionEntry]) -> dict:
    pointer = state.pointer
    history = list(pointer.previous) if pointer else []
    return {
        "registry": registry.base,
        "family": registry.family_uri,
        "latest": _pointer_doc(pointer) if pointer else None,
        "latest_problem": state.problem,
        "versions": [
            {
                "version": entry.version,
                "uri": entry.uri,
                "latest": pointer is not None and entry.version == pointer.version,
                "history_index": history.index(entry.version) if entry.version in history else None,
                "complete": entry.manifest is not None,
                "problem": entry.problem,
                "quantization": entry.quantization,
                "test_time_flip": entry.test_time_flip,
                "created": entry.created,
                "miou": entry.miou,
                "pixel_accuracy": entry.pixel_accuracy,
                "baseline_mean_confidence": entry.baseline_mean_confidence,
                "pictures": dict(entry.pictures),
            }
            for entry in entries
        ],
    }


def list_text(registry: Registry, state: PointerState, entries: Sequence[VersionEntry]) -> str:
    pointer = state.pointer
    history = list(pointer.previous) if pointer else []
    lines = [f"model versions in {registry.family_uri}"]
    if pointer is not None:
        back = f"; rollback goes to {history[0]}" if history else "; no history to roll back to"
        lines.append(f"latest: {pointer.version} (published {pointer.published or '?'}{back})")
    elif state.problem:
        lines.append(f"latest: {registry.pointer_uri} is invalid: {state.problem}")
    else:
        lines.append(f"latest: none ({registry.pointer_uri} does not exist)")
    if not entries:
        lines.append("no versions")
        return "\n".join(lines)
    width = max(len(entry.version) for entry in entries)
    lines.append(
        f"  {'VERSION':<{width}}  {'QUANTIZATION':<13} {'mIoU':>6} {'PIX ACC':>7}  CREATED"
    )
    for entry in entries:
        mark = "*" if pointer is not None and entry.version == pointer.version else " "
        notes = []
        if mark == "*":
            notes.append("latest")
        if entry.test_time_flip:
            notes.append("flip-averaged")
        if entry.version in history:
            notes.append(f"previous {history.index(entry.version) + 1}")
        if entry.problem:
            notes.append(entry.problem)
        lines.append(
            f"{mark} {entry.version:<{width}}  {entry.quantization or '-':<13} "
            f"{_number(entry.miou):>6} {_number(entry.pixel_accuracy):>7}  "
            f"{entry.created or '-'}{'  ' + '; '.join(notes) if notes else ''}"
        )
        for kind, uri in entry.pictures.items():
            lines.append(f"  {'':<{width}}  {kind.replace('_', ' ')}: {uri}")
    return "\n".join(lines)


def compare_json(comparison: Comparison, **context: Any) -> dict[str, Any]:
    return {
        **context,
        "untracked": comparison.untracked,
        "without_signals": comparison.without_signals,
        "tracks": {
            summary.track: summary.as_json() for summary in (comparison.stable, comparison.canary)
        },
        "canary_minus_stable": comparison.difference(),
    }


def compare_text(comparison: Comparison, where: str) -> str:
    stable, canary = comparison.stable, comparison.canary
    difference = comparison.difference() or {}
    lines = [
        f"masks in {where}: {stable.count} stable, {canary.count} canary"
        + (f", {comparison.untracked} without a track" if comparison.untracked else "")
        + (
            f", {comparison.without_signals} without quality signals"
            if comparison.without_signals
            else ""
        ),
        f"{'':<22} {'stable':>10} {'canary':>10} {'canary-stable':>14}",
    ]

    def row(label: str, a: float | None, b: float | None, delta: float | None) -> None:
        signed = "" if delta is None else f"{delta:+.4f}"
        lines.append(f"{label:<22} {_number(a):>10} {_number(b):>10} {signed:>14}")

    lines.append(f"{'masks':<22} {stable.count:>10} {canary.count:>10}")
    row(
        "mean confidence",
        stable.mean_confidence,
        canary.mean_confidence,
        difference.get("mean_confidence"),
    )
    row(
        "low-confidence share",
        stable.low_confidence_share,
        canary.low_confidence_share,
        difference.get("low_confidence_share"),
    )
    shares = difference.get("class_shares", {})
    for name in CLASS_NAMES:
        row(f"{name} share", stable.class_shares[name], canary.class_shares[name], shares.get(name))
    for summary in (stable, canary):
        versions = ", ".join(f"{v} ({n})" for v, n in sorted(summary.versions.items())) or "-"
        lines.append(f"{summary.track} versions: {versions}")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
