"""The model manifest (manifest.json, written by model_build) and the contract checks on it.

`parse_manifest` checks the parts of the document the function relies on against the contract
(segmentation.contract, which mirrors manifest.schema.json: identity, input/output, classes);
`check_tensor_contract` compares it with the interpreter's actual tensors. Both raise
`ModelContractError`. Python 3.11-compatible (the tflite-runtime fallback runs there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segmentation.contract import (
    BATCH,
    CLASS_NAMES,
    COLOR,
    INPUT_CHANNELS,
    INPUT_DTYPES,
    INPUT_VALUE_RANGE,
    LAYOUT,
    MODEL_FILE,
    OUTPUT_DTYPES,
    OUTPUT_KIND,
    SAFE_COMPONENT,
    SCHEMA_VERSION,
    SHA256,
    TEST_TIME_FLIP,
)
from segmentation.errors import ModelContractError


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
    test_time_flip: bool = False  # average the logits of the image and of its mirror image

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        return self.input_shape[2], self.input_shape[1]


def parse_manifest(document: Mapping[str, Any]) -> Manifest:
    """Checks a manifest.json document against the contract; raises `ModelContractError`."""
    try:
        manifest = _manifest_fields(document)
        _check_manifest_contract(manifest, document)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelContractError(f"manifest.json is invalid: {exc!r}") from None
    return manifest


def _manifest_fields(doc: Mapping[str, Any]) -> Manifest:
    if doc["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"schema_version {doc['schema_version']!r} is not {SCHEMA_VERSION}")
    size = doc.get("size_bytes")
    flip = doc.get(TEST_TIME_FLIP, False)
    if not isinstance(flip, bool):
        raise ValueError(f"{TEST_TIME_FLIP} {flip!r} is not true or false")
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
        test_time_flip=flip,
    )


def _check_manifest_contract(m: Manifest, doc: Mapping[str, Any]) -> None:
    spec, out = doc["input"], doc["output"]
    problems = []
    if not SAFE_COMPONENT.match(m.version):
        problems.append(f"version {m.version!r} is not a safe path component")
    if m.file != MODEL_FILE:
        problems.append(f"file {m.file!r} is not {MODEL_FILE!r}")
    if not SHA256.match(m.sha256):
        problems.append("sha256 is not 64 hex digits")
    shape = m.input_shape
    if len(shape) != 4 or shape[0] != BATCH or shape[3] != INPUT_CHANNELS or min(shape) < 1:
        problems.append(f"input shape {list(shape)} is not [{BATCH}, H, W, {INPUT_CHANNELS}]")
    if m.input_dtype not in INPUT_DTYPES:
        problems.append(f"input dtype {m.input_dtype!r} is not one of {INPUT_DTYPES}")
    value_range = spec.get("value_range", list(INPUT_VALUE_RANGE))
    if list(value_range) != list(INPUT_VALUE_RANGE):
        problems.append(f"input value_range {value_range} is not {list(INPUT_VALUE_RANGE)}")
    if spec.get("color", COLOR) != COLOR or spec.get("layout", LAYOUT) != LAYOUT:
        problems.append(f"input must be {COLOR}, {LAYOUT}")
    if m.classes != CLASS_NAMES:
        problems.append(f"classes {list(m.classes)} are not {list(CLASS_NAMES)} in that order")
    if m.output_shape != (*m.input_shape[:3], len(CLASS_NAMES)):
        problems.append(
            f"output shape {list(m.output_shape)} is not [{BATCH}, H, W, {len(CLASS_NAMES)}]"
        )
    if m.output_dtype not in OUTPUT_DTYPES:
        problems.append(f"output dtype {m.output_dtype!r} is not one of {OUTPUT_DTYPES}")
    if out.get("kind", OUTPUT_KIND) != OUTPUT_KIND:
        problems.append(f"output kind {out.get('kind')!r} is not {OUTPUT_KIND!r}")
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
