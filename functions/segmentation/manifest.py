"""The model manifest (manifest.json, written by model_build) and the contract checks on it.

`parse_manifest` validates the document against schema_version 1 and the function's input/output
contract; `check_tensor_contract` compares it with the interpreter's actual tensors. Both raise
`ModelContractError`. Python 3.11-compatible (the tflite-runtime fallback runs there).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segmentation.errors import ModelContractError

SCHEMA_VERSION = 1
CLASSES = ("pet", "background", "border")
INPUT_DTYPES = ("uint8", "float32")
OUTPUT_DTYPES = ("float32", "float16", "uint8", "int8")
SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Manifest:
    """The parts of manifest.json the function relies on (`raw` keeps the whole document)."""

    name: str
    version: str
    file: str
    sha256: str
    size_bytes: int | None
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    output_dtype: str
    classes: tuple[str, ...]
    quantization: str
    raw: Mapping[str, Any]

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        return self.input_shape[2], self.input_shape[1]


def parse_manifest(document: Mapping[str, Any]) -> Manifest:
    """Validates a manifest.json document against the schema; raises `ModelContractError`."""
    try:
        manifest = _manifest_fields(document)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelContractError(f"manifest.json is invalid: {exc!r}") from None
    _check_manifest_contract(manifest, document)
    return manifest


def _manifest_fields(doc: Mapping[str, Any]) -> Manifest:
    if doc["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"schema_version {doc['schema_version']!r} is not {SCHEMA_VERSION}")
    size = doc.get("size_bytes")
    return Manifest(
        name=str(doc["name"]),
        version=str(doc["version"]),
        file=str(doc["file"]),
        sha256=str(doc["sha256"]).lower(),
        size_bytes=None if size is None else int(size),
        input_shape=tuple(int(v) for v in doc["input"]["shape"]),
        input_dtype=str(doc["input"]["dtype"]),
        output_shape=tuple(int(v) for v in doc["output"]["shape"]),
        output_dtype=str(doc["output"]["dtype"]),
        classes=tuple(str(c) for c in doc["output"]["classes"]),
        quantization=str(doc.get("quantization", "")),
        raw=doc,
    )


def _check_manifest_contract(m: Manifest, doc: Mapping[str, Any]) -> None:
    spec = doc["input"]
    problems = []
    if not SAFE_COMPONENT.match(m.version):
        problems.append(f"version {m.version!r} is not a safe path component")
    if not SAFE_COMPONENT.match(m.file):
        problems.append(f"file {m.file!r} is not a plain file name")
    if not re.fullmatch(r"[0-9a-f]{64}", m.sha256):
        problems.append("sha256 is not 64 hex digits")
    if len(m.input_shape) != 4 or m.input_shape[0] != 1 or m.input_shape[3] != 3:
        problems.append(f"input shape {list(m.input_shape)} is not [1, H, W, 3]")
    if m.input_dtype not in INPUT_DTYPES:
        problems.append(f"input dtype {m.input_dtype!r} is not one of {INPUT_DTYPES}")
    if list(spec.get("value_range", [0, 255])) != [0, 255]:
        problems.append(f"input value_range {spec.get('value_range')} is not [0, 255]")
    if spec.get("color", "RGB") != "RGB" or spec.get("layout", "NHWC") != "NHWC":
        problems.append("input must be RGB, NHWC")
    if m.classes != CLASSES:
        problems.append(f"classes {list(m.classes)} are not {list(CLASSES)} in that order")
    if m.output_shape != (*m.input_shape[:3], len(CLASSES)):
        problems.append(f"output shape {list(m.output_shape)} is not [1, H, W, {len(CLASSES)}]")
    if m.output_dtype not in OUTPUT_DTYPES:
        problems.append(f"output dtype {m.output_dtype!r} is not one of {OUTPUT_DTYPES}")
    if problems:
        raise ModelContractError(f"manifest of {m.name} {m.version}: " + "; ".join(problems))


def check_tensor_contract(
    inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]], manifest: Manifest
) -> None:
    """Compares the interpreter's input/output tensors with the manifest."""
    problems = []
    if len(inputs) != 1:
        problems.append(f"the model has {len(inputs)} inputs, expected 1")
    if len(outputs) != 1:
        problems.append(f"the model has {len(outputs)} outputs, expected 1")
    if not problems:
        problems += _tensor_problems("input", inputs[0], manifest.input_shape, manifest.input_dtype)
        problems += _tensor_problems(
            "output", outputs[0], manifest.output_shape, manifest.output_dtype
        )
    if problems:
        raise ModelContractError(
            f"model {manifest.name} {manifest.version} does not match its manifest: "
            + "; ".join(problems)
        )


def _tensor_problems(
    kind: str, details: Mapping[str, Any], shape: tuple[int, ...], dtype: str
) -> list[str]:
    problems = []
    actual_shape = tuple(int(v) for v in details["shape"])
    if actual_shape != shape:
        problems.append(f"{kind} shape {list(actual_shape)} != manifest {list(shape)}")
    actual_dtype = np.dtype(details["dtype"]).name
    if actual_dtype != dtype:
        problems.append(f"{kind} dtype {actual_dtype} != manifest {dtype}")
    return problems
