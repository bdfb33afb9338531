"""Publish a model directory as an immutable version, then move the `latest` pointer.

    <base>/unet/<version>/model.tflite
    <base>/unet/<version>/manifest.json
    <base>/unet/latest.json      {"version", "path", "sha256", "published"}

A version is never overwritten. Both objects are read back and their sha256 checked before the
pointer moves, so `latest` only ever names a complete, verified version.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_build import manifest as manifest_lib
from model_build.storage import Location, ObjectExistsError, open_location

log = logging.getLogger(__name__)

MODEL_FAMILY = "unet"
LATEST_POINTER = "latest.json"


class VersionExistsError(FileExistsError):
    """The version is already published; versions are immutable."""


class PublishVerificationError(RuntimeError):
    """What was read back differs from what was uploaded; `latest` was not moved."""


@dataclass(frozen=True)
class Published:
    version: str
    uri: str
    sha256: str
    latest_moved: bool


def publish(model_dir: Path, base_uri: str, move_latest: bool = True) -> Published:
    """Uploads `model_dir` (model.tflite + manifest.json) under `<base_uri>/unet/<version>/`."""
    model_bytes, manifest = manifest_lib.read_model_dir(model_dir)
    version = manifest["version"]
    family = open_location(base_uri).child(MODEL_FAMILY)
    target = family.child(version)
    if target.list():
        raise VersionExistsError(f"{target.uri} already exists; versions are never overwritten")

    manifest_bytes = (model_dir / manifest_lib.MANIFEST_FILE).read_bytes()
    try:
        target.write_bytes(manifest_lib.MODEL_FILE, model_bytes, overwrite=False)
        target.write_bytes(manifest_lib.MANIFEST_FILE, manifest_bytes, overwrite=False)
    except ObjectExistsError as exc:  # a concurrent publisher of the same version won
        raise VersionExistsError(str(exc)) from exc
    _verify(target, model_bytes, manifest_bytes, manifest)
    log.info("published model version", extra={"version": version, "uri": target.uri})

    if move_latest:
        pointer = latest_pointer(version, target.uri, manifest["sha256"])
        family.write_bytes(LATEST_POINTER, json.dumps(pointer, indent=2).encode() + b"\n")
        log.info("moved latest pointer", extra={"version": version, "pointer": pointer})
    return Published(version, target.uri, manifest["sha256"], move_latest)


def _verify(
    target: Location, model_bytes: bytes, manifest_bytes: bytes, manifest: dict[str, Any]
) -> None:
    for name, expected in (
        (manifest_lib.MODEL_FILE, model_bytes),
        (manifest_lib.MANIFEST_FILE, manifest_bytes),
    ):
        actual = manifest_lib.sha256_hex(target.read_bytes(name))
        if actual != manifest_lib.sha256_hex(expected):
            raise PublishVerificationError(
                f"{target.uri}/{name} reads back with sha256 {actual}, expected "
                f"{manifest_lib.sha256_hex(expected)}; 'latest' was not moved"
            )
    if manifest_lib.sha256_hex(model_bytes) != manifest["sha256"]:
        raise PublishVerificationError("model does not match its manifest's sha256")


def latest_pointer(version: str, uri: str, sha256: str) -> dict[str, str]:
    return {
        "version": version,
        "path": uri,
        "sha256": sha256,
        "published": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def read_latest(base_uri: str) -> dict[str, str] | None:
    """The `latest` pointer under `<base_uri>/unet/`, or None before the first publish."""
    family = open_location(base_uri).child(MODEL_FAMILY)
    try:
        return json.loads(family.read_bytes(LATEST_POINTER))
    except FileNotFoundError:
        return None
