"""Publish a model directory as an immutable version, then move the `latest` pointer.

    <base>/unet/<version>/model.tflite
    <base>/unet/<version>/manifest.json
    <base>/unet/<version>/{quality,training-curve,variant-chart}.png   when the model dir has them
    <base>/unet/latest.json      {"version", "path", "sha256", "published", "previous"}
                                 (segmentation.contract; `previous`: the history rollback uses)

A version exists once its manifest.json does. model.tflite is uploaded and read back first; only
when its sha256 checks out is manifest.json written (never over an existing one) and read back,
so a version with a manifest is always complete and verified, and `latest` only ever names one.
The pictures the model directory holds (PICTURES; none is required) are uploaded in between, as
image/png, so they too are there once the manifest is: a version is never changed after it.
quality.png shows dataset photos: the models bucket is private, and `make model` copies only
model.tflite and manifest.json into the repository.

Publishing is safe to retry: a version without a manifest (an upload that failed half-way) is
completed; the same model directory again finds its identical manifest, checks the version and
finishes the pointer move; different content under an existing version is refused.

`latest` only moves forward. Versions start with their creation time (manifest.py), so the pointer
is replaced only by a newer version, with a generation precondition: a concurrent publisher that
moved it in between makes the write fail, and the decision is taken again on what is there now.
The version `latest` named before goes to the front of the pointer's `previous` history, which
`segment models rollback` walks back through (`segment models promote` moves it the same way).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from segmentation.contract import (
    LATEST_POINTER,
    MODEL_FAMILY,
    LatestPointer,
    history_after,
    latest_pointer,
    parse_latest_pointer,
)

from model_build import layout, plots
from model_build import manifest as manifest_lib
from model_build.storage import Location, ObjectExistsError, PreconditionFailedError, open_location

log = logging.getLogger(__name__)

LATEST_ATTEMPTS = 5
VERSION_PATTERN = re.compile(r"\d{8}-\d{6}-[0-9a-f]{8}")  # <created time>-<sha256[:8]>
# Optional pictures uploaded with a version (segment models list shows them).
PICTURES = (layout.QUALITY_SHEET, layout.TRAINING_CURVE, layout.VARIANT_CHART)


class VersionExistsError(FileExistsError):
    """The version is already published with other content; versions are immutable."""


class PublishVerificationError(RuntimeError):
    """What was read back differs from what was uploaded; `latest` was not moved."""


class LatestContentionError(RuntimeError):
    """The `latest` pointer kept changing under concurrent publishers; the version is published."""


@dataclass(frozen=True)
class Published:
    version: str
    uri: str
    sha256: str
    latest_moved: bool  # `latest` names this version after the call
    already_published: bool = False  # a retry found the version complete


def publish(model_dir: Path, base_uri: str, move_latest: bool = True) -> Published:
    """Uploads `model_dir` (model.tflite + manifest.json) under `<base_uri>/unet/<version>/`."""
    model_bytes, manifest = manifest_lib.read_model_dir(model_dir)
    manifest_bytes = (model_dir / manifest_lib.MANIFEST_FILE).read_bytes()
    version = manifest["version"]
    family = open_location(base_uri).child(MODEL_FAMILY)
    target = family.child(version)

    already = _complete_and_identical(target, manifest_bytes)
    if already:  # a retry: check the model the existing version holds
        _verify(target, manifest_lib.MODEL_FILE, model_bytes)
    else:
        leftovers = target.list()
        if leftovers:
            log.warning(
                "completing a partly published version",
                extra={"version": version, "uri": target.uri, "found": leftovers},
            )
        target.write_bytes(manifest_lib.MODEL_FILE, model_bytes)  # replaces a torn upload
        _verify(target, manifest_lib.MODEL_FILE, model_bytes)
        _upload_pictures(model_dir, target)
        try:
            target.write_bytes(manifest_lib.MANIFEST_FILE, manifest_bytes, overwrite=False)
        except ObjectExistsError:  # a concurrent publisher finished this version first
            already = _complete_and_identical(target, manifest_bytes)
    _verify(target, manifest_lib.MANIFEST_FILE, manifest_bytes)
    if manifest_lib.sha256_hex(model_bytes) != manifest["sha256"]:
        raise PublishVerificationError("model does not match its manifest's sha256")
    facts = {"version": version, "uri": target.uri, "already_published": already}
    log.info("published model version", extra=facts)

    moved = move_latest and _move_latest(family, version, target.uri, manifest["sha256"])
    return Published(version, target.uri, manifest["sha256"], moved, already)


def _upload_pictures(model_dir: Path, target: Location) -> list[str]:
    """Uploads the PICTURES `model_dir` has (before the manifest: the version is not yet
    complete, so they may still be written); returns their names."""
    uploaded = [name for name in PICTURES if (model_dir / name).is_file()]
    for name in uploaded:
        target.write_bytes(name, (model_dir / name).read_bytes(), content_type=plots.PNG)
    if uploaded:
        log.info("uploaded pictures", extra={"uri": target.uri, "pictures": uploaded})
    return uploaded


def _complete_and_identical(target: Location, manifest_bytes: bytes) -> bool:
    """True when the version's manifest is there and is ours; raises when it is another's."""
    try:
        existing = target.read_bytes(manifest_lib.MANIFEST_FILE)
    except FileNotFoundError:
        return False
    if existing != manifest_bytes:
        raise VersionExistsError(
            f"{target.uri} already exists with other content; versions are never overwritten"
        )
    return True


def _verify(target: Location, name: str, expected: bytes) -> None:
    actual = manifest_lib.sha256_hex(target.read_bytes(name))
    if actual != manifest_lib.sha256_hex(expected):
        raise PublishVerificationError(
            f"{target.uri}/{name} reads back with sha256 {actual}, expected "
            f"{manifest_lib.sha256_hex(expected)}; 'latest' was not moved"
        )


def _move_latest(family: Location, version: str, uri: str, sha256: str) -> bool:
    """Points `latest` at `version` unless it names a newer one; True when it names `version`."""
    for _ in range(LATEST_ATTEMPTS):
        raw, generation = family.read_with_generation(LATEST_POINTER)
        current = _parse_pointer(raw)
        if current is not None and (current.version, current.sha256) == (version, sha256):
            return True
        current_version = current.version if current is not None else ""
        if _version_order(current_version) > _version_order(version):
            log.warning(
                "latest names a newer version; left alone",
                extra={"version": version, "latest": current_version},
            )
            return False
        pointer = latest_pointer(version, uri, sha256, previous=history_after(current, version))
        data = json.dumps(pointer, indent=2).encode() + b"\n"
        try:
            family.write_if_generation(LATEST_POINTER, data, generation)
        except PreconditionFailedError:
            log.info("latest moved concurrently; deciding again", extra={"version": version})
            continue
        log.info("moved latest pointer", extra={"version": version, "pointer": pointer})
        return True
    raise LatestContentionError(
        f"{family.uri}/{LATEST_POINTER} changed {LATEST_ATTEMPTS} times while moving it to "
        f"{version}; the version is published, run publish again to move the pointer"
    )


def _version_order(version: str) -> str:
    """Versions of manifest.py's form sort by creation time; any other name sorts first."""
    return version if VERSION_PATTERN.fullmatch(version) else ""


def _parse_pointer(raw: bytes | None) -> LatestPointer | None:
    """The current pointer; None when there is none or it is broken (then it is replaced)."""
    if raw is None:
        return None
    try:
        return parse_latest_pointer(json.loads(raw))
    except ValueError as exc:  # not JSON, or a ContractError: not a valid pointer
        log.warning("latest pointer is invalid; replacing it", extra={"problem": str(exc)})
        return None


def read_latest(base_uri: str) -> dict[str, str] | None:
    """The `latest` pointer under `<base_uri>/unet/`, or None before the first publish."""
    family = open_location(base_uri).child(MODEL_FAMILY)
    try:
        return json.loads(family.read_bytes(LATEST_POINTER))
    except FileNotFoundError:
        return None
