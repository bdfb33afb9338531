"""Uploads files to a bucket, publishes their notifications where GCS cannot, and waits for
the function's output (a mask or an error record for the uploaded generation)."""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segment import naming, notifier

POLL_INTERVAL_S = 0.25


@dataclass(frozen=True)
class Upload:
    path: Path
    bucket: str
    name: str
    generation: int
    blob: Any


@dataclass(frozen=True)
class Output:
    """The function's answer for one upload: kind is "mask" or "error"."""

    upload: Upload
    kind: str
    object_name: str
    data: bytes
    metadata: dict[str, str]

    @property
    def error_reason(self) -> str | None:
        if self.kind != "error":
            return None
        try:
            return json.loads(self.data)["error"]["reason"]
        except (ValueError, KeyError, TypeError):
            return self.metadata.get("error-reason")

    def save(self, out_dir: Path) -> Path:
        """Writes the output under `out_dir` at its bucket path (masks/..., errors/...)."""
        target = out_dir / self.object_name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.data)
        return target


def object_names(paths: Sequence[Path], prefix: str = "") -> list[str]:
    """Object names for `paths` (prefix + file name); refuses two files with the same name."""
    names = [f"{prefix}{path.name}" for path in paths]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"two files would upload to the same object name: {', '.join(duplicates)}")
    return names


def upload_file(storage: Any, bucket: str, path: Path, name: str) -> Upload:
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    blob = storage.bucket(bucket).blob(name)
    blob.upload_from_filename(str(path), content_type=content_type)
    return Upload(path, bucket, name, int(blob.generation), blob)


def notify(publisher: Any, topic: str, upload: Upload) -> str:
    """Publishes the OBJECT_FINALIZE notification GCS would send for `upload`."""
    return notifier.publish_notification(publisher, topic, upload.blob)


def find_output(storage: Any, output_bucket: str, upload: Upload) -> Output | None:
    """The mask or error record made from `upload`'s generation (or a newer one), if any."""
    bucket = storage.bucket(output_bucket)
    for kind, name in (
        ("mask", naming.mask_name(upload.name)),
        ("error", naming.error_name(upload.name)),
    ):
        blob = bucket.get_blob(name)
        if blob is None:
            continue
        metadata = dict(blob.metadata or {})
        try:
            source_generation = int(metadata.get(naming.SOURCE_GENERATION, "0"))
        except ValueError:
            continue
        if source_generation >= upload.generation:
            data = blob.download_as_bytes()
            return Output(upload, kind, name, data, metadata)
    return None


def wait_for_outputs(
    storage: Any,
    output_bucket: str,
    uploads: Sequence[Upload],
    *,
    timeout: float,
    on_output: Callable[[Output], None] | None = None,
) -> dict[str, Output]:
    """Polls until every upload has an output or `timeout` passes; returns those found by name."""
    found: dict[str, Output] = {}
    deadline = time.monotonic() + timeout
    while True:
        for upload in uploads:
            if upload.name in found:
                continue
            output = find_output(storage, output_bucket, upload)
            if output is not None:
                found[upload.name] = output
                if on_output is not None:
                    on_output(output)
        if len(found) == len(uploads) or time.monotonic() >= deadline:
            return found
        time.sleep(POLL_INTERVAL_S)
