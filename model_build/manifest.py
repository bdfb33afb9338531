"""manifest.json: the contract between a published model and the Cloud Function.

The schema lives in manifest.schema.json beside this file (see docs/architecture.md,
"Model manifest").
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from model_build.evaluate import Evaluation, Selection
from model_build.model import CLASS_NAMES

SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")
MODEL_NAME = "unet-mobilenetv2"
MODEL_FILE = "model.tflite"
MANIFEST_FILE = "manifest.json"
GIT_COMMIT_ENV = "MODEL_BUILD_GIT_COMMIT"


class ManifestError(ValueError):
    """A manifest does not follow manifest.schema.json."""


@cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def validate(manifest: dict[str, Any]) -> None:
    """Raises ManifestError naming the first field that breaks the schema."""
    try:
        jsonschema.validate(manifest, schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(top level)"
        raise ManifestError(f"manifest field {where}: {exc.message}") from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_commit(cwd: Path | None = None) -> str:
    """The source commit: $MODEL_BUILD_GIT_COMMIT, else `git rev-parse HEAD`, else 'unknown'.

    The GPU VM runs the source from an unpacked archive (no .git), so the deployment passes the
    commit in the environment; a checkout asks git.
    """
    from_env = os.environ.get(GIT_COMMIT_ENV, "").strip()
    if from_env:
        return from_env
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def io_contract(image_size: int, output_dtype: str, input_dtype: str = "uint8") -> dict[str, Any]:
    """The manifest's `input` and `output` sections: what the function feeds and reads."""
    return {
        "input": {
            "shape": [1, image_size, image_size, 3],
            "dtype": input_dtype,
            "value_range": [0, 255],
            "color": "RGB",
            "layout": "NHWC",
        },
        "output": {
            "shape": [1, image_size, image_size, len(CLASS_NAMES)],
            "dtype": output_dtype,
            "kind": "logits",
            "classes": list(CLASS_NAMES),
        },
    }


def build_manifest(
    model_bytes: bytes,
    evaluation: Evaluation,
    selection: Selection,
    tolerance_points: float,
    threads: int,
    training: dict[str, Any],
    data_description: dict[str, Any],
    image_size: int,
    created: datetime | None = None,
) -> dict[str, Any]:
    """The manifest of the selected variant, with its measured quality and provenance."""
    created = created or datetime.now(UTC)
    digest = sha256_hex(model_bytes)
    chosen = evaluation.variants[selection.variant]
    manifest = {
        "schema_version": 1,
        "name": MODEL_NAME,
        "version": f"{created:%Y%m%d-%H%M%S}-{digest[:8]}",
        "file": MODEL_FILE,
        "sha256": digest,
        "size_bytes": len(model_bytes),
        **io_contract(image_size, chosen.output_dtype),
        "quantization": selection.variant,
        "metrics": {
            "data": {**data_description, "split": "test", "examples": evaluation.examples},
            "keras": evaluation.keras,
            "tflite": {
                "miou": chosen.miou,
                "pixel_accuracy": chosen.pixel_accuracy,
                "per_class_iou": chosen.per_class_iou,
                "agreement_with_keras": chosen.agreement_with_keras,
                "latency_ms": chosen.latency_ms,
            },
        },
        "selection": {
            "rule": selection.reason,
            "tolerance_miou_points": tolerance_points,
            "threads": threads,
            "within_tolerance": selection.within_tolerance,
            "candidates": {
                name: {
                    "size_bytes": r.size_bytes,
                    "miou": r.miou,
                    "agreement_with_keras": r.agreement_with_keras,
                    "latency_ms": r.latency_ms,
                }
                for name, r in evaluation.variants.items()
            },
        },
        "training": training,
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    validate(manifest)
    return manifest


def write_model_dir(model_bytes: bytes, manifest: dict[str, Any], out_dir: Path) -> Path:
    """Writes model.tflite + manifest.json into `out_dir` (replacing an earlier evaluation)."""
    validate(manifest)
    if sha256_hex(model_bytes) != manifest["sha256"]:
        raise ManifestError("model bytes do not match the manifest's sha256")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MODEL_FILE).write_bytes(model_bytes)
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out_dir


def read_model_dir(model_dir: Path) -> tuple[bytes, dict[str, Any]]:
    """Reads and checks a model directory: schema valid and sha256 matching."""
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    validate(manifest)
    model_bytes = (model_dir / MODEL_FILE).read_bytes()
    if sha256_hex(model_bytes) != manifest["sha256"]:
        raise ManifestError(f"{model_dir / MODEL_FILE} does not match the manifest's sha256")
    return model_bytes, manifest
