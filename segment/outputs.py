"""The function's outputs for one input object, and whether they describe its current generation.

An output (mask or error record) is *current* when its `source-generation` metadata equals the
input object's generation, *stale* when it is older (the object was re-uploaded since), *newer*
when it is newer than the generation we were given (our view of the object is out of date).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segment import naming

MASK = "mask"
ERROR = "error"
SOURCE_BUCKET = "source-bucket"
SOURCE_NAME = "source-name"
ERROR_REASON = "error-reason"
MODEL_VERSION = "model-version"


@dataclass(frozen=True)
class OutputRecord:
    """One output object: kind is MASK or ERROR."""

    kind: str
    bucket: str
    name: str
    metadata: dict[str, str] = field(default_factory=dict)
    updated: Any = None

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    @property
    def source_generation(self) -> int | None:
        try:
            return int(self.metadata[naming.SOURCE_GENERATION])
        except (KeyError, ValueError):
            return None

    def freshness(self, generation: int | None) -> str:
        """ "current", "stale", "newer" or "unknown" against the input's `generation`."""
        source = self.source_generation
        if source is None or generation is None:
            return "unknown"
        if source == generation:
            return "current"
        return "stale" if source < generation else "newer"


def find_outputs(storage: Any, output_bucket: str, source_name: str) -> list[OutputRecord]:
    """The mask and the error record for `source_name` that exist (mask first)."""
    bucket = storage.bucket(output_bucket)
    found = []
    for kind, name in (
        (MASK, naming.mask_name(source_name)),
        (ERROR, naming.error_name(source_name)),
    ):
        blob = bucket.get_blob(name)
        if blob is not None:
            found.append(
                OutputRecord(kind, output_bucket, name, dict(blob.metadata or {}), blob.updated)
            )
    return found


def is_processed(outputs: list[OutputRecord], generation: int) -> bool:
    """True when an output describes `generation` or newer (the function would not redo it)."""
    return any(
        output.source_generation is not None and output.source_generation >= generation
        for output in outputs
    )
