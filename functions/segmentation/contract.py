"""The model contract: what model_build publishes and what the function accepts, in one place.

manifest.schema.json beside this module is the contract for manifest.json. model_build validates
every manifest it writes against that file (with jsonschema); the function cannot (jsonschema is
not in the deploy set), so the constants it checks are declared here, once, and
tests/contract/test_model_manifest.py asserts that they are exactly the schema's.

The `latest` pointer (`<family>/latest.json`) is defined here too: `latest_pointer` builds the
document (model_build.publish and `segment models promote/rollback` write it) and
`parse_latest_pointer` reads it (segmentation.model resolves `.../latest` with it; the writers read
the current one before moving it). Its optional `previous` field is the history `segment models
rollback` walks back through: the versions `latest` named before, newest first
(`history_after` computes it for every writer, so a publish keeps it too).

Standard library only, and Python 3.11-compatible (the tflite-runtime fallback runs there).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# --- manifest.json (each value mirrors manifest.schema.json) ---------------------------------

SCHEMA_FILE = "manifest.schema.json"  # beside this module, inside the deploy unit
SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.tflite"
# The output's class axis, in order: class index i of the mask is CLASS_NAMES[i].
CLASS_NAMES = ("pet", "background", "border")
INPUT_DTYPES = ("uint8", "float32")
INPUT_VALUE_RANGE = (0, 255)
INPUT_CHANNELS = 3
BATCH = 1
COLOR = "RGB"
LAYOUT = "NHWC"
OUTPUT_DTYPES = ("float32", "float16", "uint8", "int8")
OUTPUT_KIND = "logits"
# The TFLite variants model_build converts; a manifest's `quantization` names one of them.
VARIANTS = ("float32", "float16", "dynamic_range", "int8")
# Quality signals (segmentation.model.quality_signals): a pixel is low-confidence when its top
# class probability is below this. The manifest's optional `metrics.tflite.quality_signals` is the
# chosen variant's baseline on the test split, measured with the same threshold (and recording it).
LOW_CONFIDENCE_THRESHOLD = 0.5
QUALITY_SIGNALS = "quality_signals"
# Optional boolean: serve with test-time flip averaging. The logits of the image and of its
# mirror image (mirrored back) are averaged before the argmax: two inferences per image, for the
# quality the manifest's metrics state (model_build measures them the same way). Absent: false.
TEST_TIME_FLIP = "test_time_flip"
# A version (and so a path component under the model family): no '/', no leading '.'.
SAFE_COMPONENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
SAFE_COMPONENT = re.compile(SAFE_COMPONENT_PATTERN)
SHA256_PATTERN = r"^[0-9a-f]{64}$"
SHA256 = re.compile(SHA256_PATTERN)

# --- the `latest` pointer --------------------------------------------------------------------

MODEL_FAMILY = "unet"  # a registry holds <base>/unet/<version>/ and <base>/unet/latest.json
LATEST_SEGMENT = "latest"  # MODEL_URI .../<family>/latest follows <family>/latest.json
LATEST_POINTER = "latest.json"
LATEST_FIELDS = ("version", "path", "sha256", "published", "previous")
# sha256, published and previous: always written, optional to read (pointers written before the
# history was kept have no `previous`).
LATEST_REQUIRED = ("version", "path")
LATEST_HISTORY_LIMIT = 10  # the most versions `previous` keeps


class ContractError(ValueError):
    """A document breaks the model contract (each side wraps it in its own error type)."""


@dataclass(frozen=True)
class LatestPointer:
    """latest.json: the version `latest` names, where it is, and the sha256 it pins."""

    version: str
    path: str  # gs://..., an absolute local path, or relative to the pointer's directory
    sha256: str | None
    published: str | None
    previous: tuple[str, ...] = ()  # the versions it named before, newest first


def latest_pointer(
    version: str,
    path: str,
    sha256: str,
    published: datetime | None = None,
    previous: Sequence[str] = (),
) -> dict[str, Any]:
    """The latest.json document naming `version` at `path` (what publish and promote write);
    `previous` is the history (`history_after`), cut to LATEST_HISTORY_LIMIT versions."""
    stamp = (published or datetime.now(UTC)).astimezone(UTC)
    document = {
        "version": version,
        "path": path,
        "sha256": sha256,
        "published": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "previous": list(previous)[:LATEST_HISTORY_LIMIT],
    }
    parse_latest_pointer(document)  # never write one the function would refuse
    return document


def history_after(current: LatestPointer | None, version: str) -> list[str]:
    """The `previous` list of a pointer that moves from `current` to `version`: the version it
    names now, then its own history, without `version` itself (newest first, cut to the limit)."""
    if current is None:
        return []
    earlier = [current.version, *current.previous]
    return [name for name in earlier if name != version][:LATEST_HISTORY_LIMIT]


def parse_latest_pointer(document: Any) -> LatestPointer:
    """Validates a decoded latest.json; raises `ContractError` naming what is wrong."""
    if not isinstance(document, Mapping):
        raise ContractError("the latest pointer is not a JSON object")
    missing = [field for field in LATEST_REQUIRED if field not in document]
    if missing:
        raise ContractError(f"the latest pointer lacks {', '.join(missing)}")
    version, path = document["version"], document["path"]
    sha256, published = document.get("sha256"), document.get("published")
    if not isinstance(version, str) or not SAFE_COMPONENT.match(version):
        raise ContractError(f"version {version!r} is not a safe name")
    if not isinstance(path, str) or not path.strip("/"):
        raise ContractError(f"path {path!r} is not a model directory")
    if sha256 is not None and not (isinstance(sha256, str) and SHA256.match(sha256.lower())):
        raise ContractError(f"sha256 {sha256!r} is not 64 hex digits")
    if published is not None and not isinstance(published, str):
        raise ContractError(f"published {published!r} is not a timestamp string")
    previous = document.get("previous")
    if previous is None:
        previous = []
    if not isinstance(previous, list) or not all(
        isinstance(name, str) and SAFE_COMPONENT.match(name) for name in previous
    ):
        raise ContractError(f"previous {previous!r} is not a list of version names")
    return LatestPointer(
        version=version,
        path=path.rstrip("/"),
        sha256=None if sha256 is None else sha256.lower(),
        published=published,
        previous=tuple(previous),
    )
