"""The function's outputs for one input object: the one record type and the one finder that every
`segment` command uses (status, backfill, dlq, upload --wait, local run).

The function owns what an output is: its names (`masks/<name>.png`, `errors/<name>.json`, with a
safe fallback for odd names, and the conflict name used when another source's output holds that
name) and its metadata keys are imported from `segmentation.storage`, and an output's object is
described by the function's own `ObjectInfo`, whose `source_generation` reads the
`source-generation` metadata. An object whose metadata names another source is never reported
as this source's output.

An output is *current* when its source generation equals the input object's generation, *stale*
when it is older (the object was re-uploaded since), *newer* when it is newer than the generation
we were given (our view of the object is out of date). The function does not redo an object when
an output describes its generation or a newer one: `is_processed`, `current_output`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from google.api_core import exceptions as api_exceptions
from segmentation.storage import (
    META_ERROR_REASON,
    META_SOURCE_NAME,
    ObjectInfo,
    error_conflict_name,
    error_name,
    mask_conflict_name,
    mask_name,
    names_other_source,
    object_info,
)

from segment import clients

MASK = "mask"
ERROR = "error"
# (kind, output name, conflict name), in the finder's order: mask first.
KINDS = ((MASK, mask_name, mask_conflict_name), (ERROR, error_name, error_conflict_name))
POLL_INTERVAL_S = 0.25


@dataclass(frozen=True)
class OutputRecord:
    """One output object: `kind` is MASK or ERROR; `data` is its bytes once `download`ed."""

    kind: str
    info: ObjectInfo
    updated: datetime | None = None
    data: bytes | None = None

    @property
    def bucket(self) -> str:
        return self.info.bucket

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def metadata(self) -> Mapping[str, str]:
        return self.info.metadata

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    @property
    def source_generation(self) -> int | None:
        """The input generation this output was made from; None when absent or unreadable."""
        return self.info.source_generation or None

    @property
    def error_reason(self) -> str | None:
        """An error record's reason: its metadata, else (downloaded) its body."""
        if self.kind != ERROR:
            return None
        reason = self.metadata.get(META_ERROR_REASON)
        if reason or self.data is None:
            return reason or None
        try:
            return str(json.loads(self.data)["error"]["reason"])
        except (ValueError, KeyError, TypeError):
            return None

    def describes(self, generation: int) -> bool:
        """True when made from `generation` or a newer one (the function would not redo it)."""
        source = self.source_generation
        return source is not None and source >= generation

    def freshness(self, generation: int | None) -> str:
        """ "current", "stale", "newer" or "unknown" against the input's `generation`."""
        source = self.source_generation
        if source is None or generation is None:
            return "unknown"
        if source == generation:
            return "current"
        return "stale" if source < generation else "newer"

    def save(self, out_dir: Path) -> Path:
        """Writes the downloaded bytes under `out_dir` at the bucket path (masks/..., errors/...)"""
        if self.data is None:
            raise ValueError(f"{self.uri}: not downloaded")
        target = out_dir / self.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.data)
        return target


def find_outputs(
    storage: Any, output_bucket: str, source_name: str, *, source_bucket: str | None = None
) -> list[OutputRecord]:
    """The mask and the error record for `source_name` that exist (mask first): at the output
    name, or at the conflict name when the output name holds another source's output. With
    `source_bucket`, an output made from the same name in another bucket is another source's."""
    bucket = storage.bucket(output_bucket)
    found = []
    for kind, name_of, conflict_name_of in KINDS:
        for name in (name_of(source_name), conflict_name_of(source_name)):
            blob = bucket.get_blob(
                name, retry=clients.storage_retry(), timeout=clients.STORAGE_TIMEOUT
            )
            if blob is None:
                break  # the function writes the conflict name only when this one is taken
            info = object_info(blob, output_bucket)
            if not _foreign(info, source_bucket, source_name):
                found.append(OutputRecord(kind, info, blob.updated))
                break
    return found


def _foreign(info: ObjectInfo, source_bucket: str | None, source_name: str) -> bool:
    if source_bucket is None:
        other = info.metadata.get(META_SOURCE_NAME)
        return other is not None and other != source_name
    return names_other_source(info, source_bucket, source_name)


def is_processed(outputs: Sequence[OutputRecord], generation: int) -> bool:
    """True when an output describes `generation` or newer (the function would not redo it)."""
    return current_output(outputs, generation) is not None


def current_output(outputs: Sequence[OutputRecord], generation: int) -> OutputRecord | None:
    """The output made from `generation` or newer (the newest such; a mask on a tie)."""
    answers = [output for output in outputs if output.describes(generation)]
    return max(answers, key=lambda o: o.source_generation or 0, default=None)


def download(storage: Any, output: OutputRecord) -> OutputRecord:
    """`output` with its bytes: exactly the object generation that was found."""
    blob = storage.bucket(output.bucket).blob(output.name, generation=output.info.generation)
    data = blob.download_as_bytes(retry=clients.storage_retry(), timeout=clients.STORAGE_TIMEOUT)
    return replace(output, data=data)


def wait_for_outputs(
    storage: Any,
    output_bucket: str,
    generations: Mapping[str, int],
    *,
    timeout: float,
    source_bucket: str | None = None,
    on_output: Callable[[str, OutputRecord], None] | None = None,
    poll_interval: float = POLL_INTERVAL_S,
) -> dict[str, OutputRecord]:
    """Polls until every input name in `generations` has an output for its generation (or a
    newer one), or `timeout` passes; returns those found, downloaded, by input name."""
    found: dict[str, OutputRecord] = {}
    deadline = time.monotonic() + timeout
    while True:
        for source_name, generation in generations.items():
            if source_name in found:
                continue
            found_now = find_outputs(
                storage, output_bucket, source_name, source_bucket=source_bucket
            )
            output = current_output(found_now, generation)
            if output is None:
                continue
            try:
                found[source_name] = download(storage, output)
            except api_exceptions.NotFound:  # replaced by a newer output meanwhile: next poll
                continue
            if on_output is not None:
                on_output(source_name, found[source_name])
        if len(found) == len(generations) or time.monotonic() >= deadline:
            return found
        time.sleep(poll_interval)
