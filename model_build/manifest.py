"""manifest.json: the contract between a published model and the Cloud Function.

The schema is functions/segmentation/manifest.schema.json, shipped in the function's deploy unit
and read here as package data of `segmentation`; the constants the function checks come from
segmentation.contract (see docs/architecture.md, "Model manifest"). `validate` runs both: the
schema, then the function's own `parse_manifest`, so no manifest is written that the function
would refuse.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from segmentation.contract import (
    BATCH,
    CLASS_NAMES,
    COLOR,
    INPUT_CHANNELS,
    INPUT_VALUE_RANGE,
    LAYOUT,
    MANIFEST_FILE,
    MODEL_FILE,
    OUTPUT_KIND,
    QUALITY_SIGNALS,
    SCHEMA_FILE,
    SCHEMA_VERSION,
    TEST_TIME_FLIP,
)
from segmentation.errors import ModelContractError
from segmentation.manifest import parse_manifest

from model_build.evaluate import Evaluation, Selection

MODEL_NAME = "unet-mobilenetv2"
GIT_COMMIT_ENV = "MODEL_BUILD_GIT_COMMIT"


class ManifestError(ValueError):
    """A manifest does not follow the schema (or the function's contract checks)."""


def schema_text() -> str:
    """manifest.schema.json as shipped in the function's package."""
    return resources.files("segmentation").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


@cache
def schema() -> dict[str, Any]:
    return json.loads(schema_text())


def validate(manifest: dict[str, Any]) -> None:
    """Raises ManifestError naming the first field that breaks the schema, or the function's
    contract (what the schema cannot say: the output's height and width are the input's)."""
    try:
        jsonschema.validate(manifest, schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(top level)"
        raise ManifestError(f"manifest field {where}: {exc.message}") from exc
    try:
        parse_manifest(manifest)
    except ModelContractError as exc:
        raise ManifestError(f"the function would refuse this manifest: {exc}") from exc


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
            "shape": [BATCH, image_size, image_size, INPUT_CHANNELS],
            "dtype": input_dtype,
            "value_range": list(INPUT_VALUE_RANGE),
            "color": COLOR,
            "layout": LAYOUT,
        },
        "output": {
            "shape": [BATCH, image_size, image_size, len(CLASS_NAMES)],
            "dtype": output_dtype,
            "kind": OUTPUT_KIND,
            "classes": list(CLASS_NAMES),
        },
    }


def _document(
    model_bytes: bytes,
    *,
    name: str,
    version: str,
    quantization: str,
    io: dict[str, Any],
    metrics: dict[str, Any],
    selection: dict[str, Any],
    training: dict[str, Any],
    created: datetime,
    test_time_flip: bool = False,
) -> dict[str, Any]:
    """Every manifest is assembled here and validated before it is returned."""
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "file": MODEL_FILE,
        "sha256": sha256_hex(model_bytes),
        "size_bytes": len(model_bytes),
        **io,
        "quantization": quantization,
        TEST_TIME_FLIP: test_time_flip,
        "metrics": metrics,
        "selection": selection,
        "training": training,
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    validate(manifest)
    return manifest


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
    return _document(
        model_bytes,
        name=MODEL_NAME,
        version=f"{created:%Y%m%d-%H%M%S}-{digest[:8]}",
        quantization=selection.variant,
        io=io_contract(image_size, chosen.output_dtype),
        metrics={
            "data": {**data_description, "split": "test", "examples": evaluation.examples},
            "keras": evaluation.keras,
            "tflite": {
                "miou": chosen.miou,
                "pixel_accuracy": chosen.pixel_accuracy,
                "per_class_iou": chosen.per_class_iou,
                "agreement_with_keras": chosen.agreement_with_keras,
                "latency_ms": chosen.latency_ms,
                # The baseline of the function's per-mask quality signals (optional: older
                # manifests and unmeasured models have none).
                **({QUALITY_SIGNALS: chosen.quality_signals} if chosen.quality_signals else {}),
            },
        },
        selection={
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
        training=training,
        created=created,
        test_time_flip=evaluation.test_time_flip,
    )


def unmeasured_manifest(
    model_bytes: bytes,
    *,
    name: str,
    version: str,
    quantization: str,
    image_size: int,
    output_dtype: str,
    input_dtype: str = "uint8",
    note: str,
    training: Mapping[str, Any] | None = None,
    created: datetime | None = None,
) -> dict[str, Any]:
    """A valid manifest for a model whose quality was never measured: the test suite's tiny
    models, the benchmark's random-weight U-Net. Its metrics cover zero examples (scores 0, IoU
    per class null), it selected nothing, and `note` says why; `training` adds to (or replaces)
    the placeholder provenance."""
    per_class: dict[str, float | None] = dict.fromkeys(CLASS_NAMES)
    scores = {"miou": 0.0, "pixel_accuracy": 0.0, "per_class_iou": per_class}
    return _document(
        model_bytes,
        name=name,
        version=version,
        quantization=quantization,
        io=io_contract(image_size, output_dtype, input_dtype),
        metrics={
            "data": {"dataset": "none", "split": "none", "examples": 0, "note": note},
            "keras": scores,
            "tflite": {**scores, "agreement_with_keras": 0.0, "latency_ms": {}},
        },
        selection={
            "rule": note,
            "tolerance_miou_points": 0.0,
            "threads": 1,
            "within_tolerance": False,
            "candidates": {},
        },
        training={
            "dataset": "none",
            "dataset_version": "none",
            "epochs": 0,
            "tensorflow_version": "",
            "git_commit": "",
            **(training or {}),
        },
        created=created or datetime.now(UTC),
    )


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
