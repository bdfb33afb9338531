"""A model family in a (local emulator) bucket, laid out as model_build publishes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segmentation import contract


def publish_model(bucket: Any, directory: Path) -> str:
    """Uploads `directory` as unet/<version>/ and points unet/latest.json at it; the version."""
    manifest = json.loads((directory / "manifest.json").read_text())
    version = manifest["version"]
    for file in ("model.tflite", "manifest.json"):
        bucket.blob(f"unet/{version}/{file}").upload_from_filename(str(directory / file))
    pointer = contract.latest_pointer(
        version, f"gs://{bucket.name}/unet/{version}", manifest["sha256"]
    )
    bucket.blob("unet/latest.json").upload_from_string(json.dumps(pointer))
    return version
