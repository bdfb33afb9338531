"""Reads the function's structured log (one JSON summary line per invocation) into a table."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

STAGES = ("check", "download", "model_load", "decode", "infer", "encode", "upload")


def summaries(log_path: Path) -> list[dict[str, Any]]:
    """Every per-invocation summary line (those with an `outcome`), in log order."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for raw in lines:
        text = raw.strip()
        if not text.startswith("{"):
            continue
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if isinstance(record, dict) and "outcome" in record:
            found.append(record)
    return found


def for_object(
    records: Iterable[dict[str, Any]], name: str, generation: int | None = None
) -> list[dict[str, Any]]:
    """The summaries of invocations about object `name` (and `generation` when given)."""
    return [
        record
        for record in records
        if record.get("object") == name
        and (generation is None or record.get("generation") == str(generation))
    ]


def timing_table(rows: Sequence[tuple[str, dict[str, Any] | None]]) -> str:
    """A plain-text table: name, outcome, total ms and per-stage ms (blank: stage not run)."""
    header = ["image", "outcome", "total_ms", *STAGES]
    body = []
    for name, record in rows:
        if record is None:
            body.append([name, "(no log line)", *[""] * (len(header) - 2)])
            continue
        timings = record.get("timings_ms") or {}
        outcome = str(record.get("outcome"))
        if record.get("reason"):
            outcome += f" ({record['reason']})"
        cells = [name, outcome, _ms(timings.get("total"))]
        cells += [_ms(timings.get(stage)) for stage in STAGES]
        body.append(cells)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = []
    for index, row in enumerate([header, *body]):
        cells = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _ms(value: Any) -> str:
    return "" if value is None else f"{float(value):.1f}"
