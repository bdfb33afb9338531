"""Backfill: publish the upload notification for existing objects the function never processed.

Objects under `gs://BUCKET/PREFIX` are listed in name order; each one without a current output
(a mask or an error record whose `source-generation` is the object's generation, or newer) gets
the same OBJECT_FINALIZE message its bucket notification would have sent (segment.notifier), at
most `rate` per second. Folder placeholders (`name/`) are skipped, as the function ignores them;
zero-byte objects are published (the function records an `empty_object` error for them).

Resumable: with a state file, the name of each published object is recorded after its publish
succeeded, and a re-run starts after that name. The file is JSON:

    {"source": "gs://BUCKET/PREFIX", "last_published": "NAME", "published": N, "updated": "..."}

(`published` counts every run's publishes.) Delete the file to start over.

A crash between a publish and the state write re-publishes at most that one object, which the
function treats as a duplicate delivery.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from segment import clients, notifier, outputs
from segment.ratelimit import RateLimiter

PUBLISH = "publish"
SKIP_CURRENT = "with a current output"
SKIP_FOLDER = "folder placeholder"


class StateError(ValueError):
    """The state file is unreadable or belongs to another source."""


def source_uri(bucket: str, prefix: str) -> str:
    return f"gs://{bucket}/{prefix}"


def load_state(path: Path, source: str) -> tuple[str | None, int]:
    """(last published object name, published so far) recorded in `path` for `source`;
    (None, 0) when there is no state file yet."""
    if not path.exists():
        return None, 0
    try:
        state = json.loads(path.read_text())
        recorded, last = state["source"], state.get("last_published")
        total = int(state.get("published", 0))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateError(f"state file {path}: unreadable ({exc})") from None
    if recorded != source:
        raise StateError(
            f"state file {path} belongs to {recorded}, not {source}: pass another --state "
            "or delete it to start over"
        )
    return last, total


def save_state(path: Path, source: str, last_published: str, published: int) -> None:
    """Writes the state atomically (temporary file + rename), so a crash never leaves half."""
    state = {
        "source": source,
        "last_published": last_published,
        "published": published,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True)
class Decision:
    blob: Any
    action: str  # PUBLISH or a SKIP_* reason
    outputs: tuple[outputs.OutputRecord, ...] = ()


def plan(
    storage: Any, bucket: str, prefix: str, output_bucket: str, *, after: str | None = None
) -> Iterator[Decision]:
    """What to do with each object under the prefix (name order), starting after `after`."""
    listing = storage.list_blobs(
        bucket,
        prefix=prefix or None,
        start_offset=after or None,
        retry=clients.storage_retry(),
        timeout=clients.STORAGE_TIMEOUT,
    )
    for blob in listing:
        if after is not None and blob.name <= after:
            continue  # start_offset is inclusive (and emulators may ignore it)
        if blob.name.endswith("/"):
            yield Decision(blob, SKIP_FOLDER)
            continue
        found = tuple(outputs.find_outputs(storage, output_bucket, blob.name, source_bucket=bucket))
        if outputs.is_processed(found, int(blob.generation)):
            yield Decision(blob, SKIP_CURRENT, found)
        else:
            yield Decision(blob, PUBLISH, found)


@dataclass
class Report:
    examined: int = 0
    published: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    resumed_after: str | None = None
    waited_s: float = 0.0


def run(
    storage: Any,
    publisher: Any | None,
    *,
    bucket: str,
    prefix: str,
    output_bucket: str,
    topic: str,
    limiter: RateLimiter | None = None,
    state_path: Path | None = None,
    dry_run: bool = False,
    on_decision: Callable[[Decision, str | None], None] | None = None,
) -> Report:
    """Publishes a notification per unprocessed object; `on_decision(decision, message_id)`
    reports each object (message_id None when skipped or in a dry run)."""
    if bucket == output_bucket:
        raise ValueError("the input bucket is the output bucket: the function would refuse it")
    source = source_uri(bucket, prefix)
    report = Report()
    previous = 0
    if state_path is not None:
        report.resumed_after, previous = load_state(state_path, source)
    for decision in plan(storage, bucket, prefix, output_bucket, after=report.resumed_after):
        report.examined += 1
        message_id = None
        if decision.action != PUBLISH:
            report.skipped[decision.action] = report.skipped.get(decision.action, 0) + 1
        elif not dry_run:
            if limiter is not None:
                limiter.acquire()
            message_id = notifier.publish_notification(publisher, topic, decision.blob)
            report.published += 1
            if state_path is not None:
                save_state(state_path, source, decision.blob.name, previous + report.published)
        else:
            report.published += 1  # would publish
        if on_decision is not None:
            on_decision(decision, message_id)
    if limiter is not None:
        report.waited_s = limiter.waited_s
    return report
