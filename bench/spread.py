"""Run-to-run spread: every ratio and target value of several results files, min / median / max.

    python -m bench.spread run1.json run2.json run3.json [--json]

One `make bench` run is one sample of a noisy machine; a target is settled when it holds in
every run (the cold start target says so explicitly). This prints, for each figure, how many runs
had it, its minimum, median and maximum, and for each target in how many runs it was met.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def figures(results: dict[str, Any]) -> dict[str, float]:
    """The run's ratios and target values by a stable name (absent sections are skipped)."""
    engine = f"litert:{(results.get('meta') or {}).get('deployed_variant', 'int8')}"
    out: dict[str, float] = {}
    for target in results.get("targets") or []:
        if target.get("value") is not None:
            out[f"target {target.get('key') or target['target']}"] = float(target["value"])
    out.update(_latency(results, engine))
    for row in (results.get("latency") or {}).get("flip") or []:
        where = f"({row['image']}, {_threads(row['threads'])})"
        out[f"flip-averaged / plain pipeline {where}"] = float(row["pipeline_ratio"])
    footprint = results.get("footprint") or {}
    if "ratio_tensorflow_to_project" in footprint:
        out["install size TF / ours (retired target)"] = float(
            footprint["ratio_tensorflow_to_project"]
        )
    for row in (results.get("machine_limit") or {}).get("achieved") or []:
        for key in ("percent_of_int8_limit", "percent_of_sgemm"):
            if row["engine"] == engine and key in row:
                out[f"model {key} ({_threads(row['threads'])})"] = float(row[key])
    out.update(_throughput(results.get("throughput") or {}))
    compute = ((results.get("cost") or {}).get("compute_only") or {}).get("rows") or []
    for row in compute[1:]:
        out[f"compute-only cost {row['engine']} / ours"] = float(row["cost_ratio_vs_project"])
    return out


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def _latency(results: dict[str, Any], engine: str) -> dict[str, float]:
    out = {}
    for row in (results.get("latency") or {}).get("ratios") or []:
        if row["engine"] != engine:
            continue
        for key, value in row.items():
            if key.startswith("speedup_vs_") and value is not None:
                name = f"pipeline {key} ({row['image']}, {_threads(row['threads'])})"
                out[name] = float(value)
    return out


def _throughput(throughput: dict[str, Any]) -> dict[str, float]:
    out = {}
    rows = throughput.get("rows") or []
    base = next((r for r in rows if r["concurrency"] == 1), None)
    for row in rows:
        c = row["concurrency"]
        if base and c != 1:
            out[f"images/s c{c} / c1"] = round(row["images_per_s"] / base["images_per_s"], 3)
            out[f"p95 c{c} / c1"] = round(row["p95_ms"] / base["p95_ms"], 3)
        if "usd_per_million_images" in row:
            out[f"$ per million images, I/O-inclusive, c{c}"] = float(row["usd_per_million_images"])
    return out


def summarise(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per figure seen in any run: n, min, median, max (and met k of n for targets)."""
    per_run = [figures(r) for r in runs]
    names: list[str] = []
    for values in per_run:
        names += [n for n in values if n not in names]
    verdicts: dict[str, list[bool]] = {}
    for results in runs:
        for target in results.get("targets") or []:
            if target.get("met") is not None:
                name = f"target {target.get('key') or target['target']}"
                verdicts.setdefault(name, []).append(bool(target["met"]))
    rows = []
    for name in names:
        values = [v[name] for v in per_run if name in v]
        row: dict[str, Any] = {
            "figure": name,
            "runs": len(values),
            "min": min(values),
            "median": statistics.median(values),
            "max": max(values),
        }
        if name in verdicts:
            row["met"] = f"{sum(verdicts[name])} of {len(verdicts[name])}"
        rows.append(row)
    return rows


def render(rows: Sequence[dict[str, Any]], sources: Sequence[str]) -> str:
    def num(value: float) -> str:
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"

    lines = [
        f"# Spread over {len(sources)} runs: {', '.join(sources)}",
        "",
        "| figure | runs | min | median | max | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['figure']} | {r['runs']} | {num(r['min'])} | {num(r['median'])} | "
            f"{num(r['max'])} | {r.get('met', '')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spread", description=__doc__)
    parser.add_argument("results", nargs="+", type=Path, help="results.json files")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in args.results]
    rows = summarise(runs)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        sources = [
            f"{path.name} ({(run.get('meta') or {}).get('git_commit', '?')})"
            for path, run in zip(args.results, runs, strict=True)
        ]
        print(render(rows, sources))
    return 0


if __name__ == "__main__":
    sys.exit(main())
