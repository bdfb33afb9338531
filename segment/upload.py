"""Uploads files to a bucket and publishes their notifications where GCS cannot (emulators).

Waiting for the function's answer is segment.outputs' job (`wait_for_outputs`)."""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segment import clients, notifier


@dataclass(frozen=True)
class Upload:
    path: Path
    bucket: str
    name: str
    generation: int
    blob: Any


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
    blob.upload_from_filename(
        str(path),
        content_type=content_type,
        retry=clients.storage_retry(),
        timeout=clients.STORAGE_TIMEOUT,
    )
    return Upload(path, bucket, name, int(blob.generation), blob)


def notify(publisher: Any, topic: str, upload: Upload) -> str:
    """Publishes the OBJECT_FINALIZE notification GCS would send for `upload`."""
    return notifier.publish_notification(publisher, topic, upload.blob)


def generations(uploads: Sequence[Upload]) -> dict[str, int]:
    """{object name: generation} of `uploads`: what segment.outputs.wait_for_outputs waits for."""
    return {upload.name: upload.generation for upload in uploads}
