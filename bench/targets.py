"""The performance targets (issue 6), read off one run's results: measured value, met or not.

Reported, never asserted in tests: a shared 2-core machine makes absolute times noise, so every
target is a ratio against a baseline from the same run, or a size. Each target uses the deployed
variant (`litert:<variant>`), the typical image and 1 thread (the deployed instance has 1 vCPU);
the TensorFlow baseline is the faster of its two engines where the target says "the TensorFlow
path", so a target is only met against TensorFlow's best.
"""

from __future__ import annotations

from typing import Any

from bench.cost import HEADROOM
from bench.engines import TF_ENGINES

TARGET_TIER_MIB = 256


def evaluate(results: dict[str, Any], *, variant: str) -> list[dict[str, Any]]:
    engine = f"litert:{variant}"
    return [
        _speedup(results, engine, "keras_predict", 5.0, "pipeline >= 5x Keras predict"),
        _speedup(results, engine, "tf_function", 1.0, "pipeline ahead of tf.function", strict=True),
        _cold_start(results, engine),
        _memory(results, engine),
        _footprint(results),
        _sgemm_share(results, engine),
    ]


def _row(
    target: str, measured: str, met: bool | None, value: float | None, threshold: str
) -> dict[str, Any]:
    return {
        "target": target,
        "threshold": threshold,
        "value": value,
        "measured": measured,
        "met": met,
    }


def _not_measured(target: str, threshold: str, why: str) -> dict[str, Any]:
    return _row(target, f"not measured ({why})", None, None, threshold)


def _speedup(
    results: dict[str, Any],
    engine: str,
    baseline: str,
    at_least: float,
    target: str,
    *,
    strict: bool = False,
) -> dict[str, Any]:
    typical = next(iter(results["latency"]["images"]))
    rows = results["latency"]["ratios"]
    row = next(
        (r for r in rows if (r["engine"], r["image"], r["threads"]) == (engine, typical, 1)), None
    )
    threshold = f"{'>' if strict else '>='} {at_least:g}x ({typical}, 1 thread)"
    value = row and row.get(f"speedup_vs_{baseline}")
    if not value:
        return _not_measured(target, threshold, f"no {baseline} row")
    met = value > at_least if strict else value >= at_least
    return _row(target, f"{value:.2f}x", met, value, threshold)


def fastest_tensorflow_start(cold_start: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The cold start row of the faster TensorFlow engine: "the TensorFlow path" at its best."""
    rows = [c for c in cold_start if c["engine"] in TF_ENGINES]
    return min(rows, key=lambda c: c["first_mask_s"]) if rows else None


def _cold_start(results: dict[str, Any], engine: str) -> dict[str, Any]:
    target, threshold = "cold start <= 1/10 of the TensorFlow path", ">= 10x"
    cold = {c["engine"]: c for c in results["cold_start"]}
    tf = fastest_tensorflow_start(results["cold_start"])
    if engine not in cold or tf is None:
        return _not_measured(target, threshold, "cold start rows missing")
    ours, theirs = cold[engine]["first_mask_s"], tf["first_mask_s"]
    ratio = round(theirs / ours, 2)
    measured = f"{ratio:.1f}x ({ours:.2f} s vs {theirs:.2f} s)"
    return _row(target, measured, ratio >= 10, ratio, threshold)


def _memory(results: dict[str, Any], engine: str) -> dict[str, Any]:
    target = f"peak RSS fits the {TARGET_TIER_MIB} MiB tier"
    threshold = f"peak RSS after a 12 MP image x {HEADROOM:g} <= {TARGET_TIER_MIB} MiB"
    cold = {c["engine"]: c for c in results["cold_start"]}
    if engine not in cold:
        return _not_measured(target, threshold, "no cold start row")
    peak = cold[engine]["peak_rss_after_large_mib"]
    need = round(peak * HEADROOM, 1)
    return _row(
        target,
        f"{peak:.0f} MiB (x{HEADROOM:g} = {need:.0f})",
        need <= TARGET_TIER_MIB,
        peak,
        threshold,
    )


def _footprint(results: dict[str, Any]) -> dict[str, Any]:
    target, threshold = "dependencies <= 1/10 of TensorFlow's", ">= 10x"
    footprint = results["footprint"]
    if "ratio_tensorflow_to_project" not in footprint:
        return _not_measured(target, threshold, footprint.get("reason", "skipped"))
    ratio = footprint["ratio_tensorflow_to_project"]
    ours, theirs = footprint["project"]["installed_mib"], footprint["tensorflow"]["installed_mib"]
    return _row(
        target, f"{ratio:.1f}x ({ours:.0f} vs {theirs:,.0f} MiB)", ratio >= 10, ratio, threshold
    )


def _sgemm_share(results: dict[str, Any], engine: str) -> dict[str, Any]:
    target, threshold = "model GFLOP/s >= 60% of sgemm", ">= 60% (1 thread)"
    rows = results["machine_limit"]["achieved"]
    row = next((r for r in rows if (r["engine"], r["threads"]) == (engine, 1)), None)
    if row is None:
        return _not_measured(target, threshold, "no model-only row")
    share = row["percent_of_sgemm"]
    return _row(
        target,
        f"{share:.0f}% ({row['achieved_gflops']:.0f} GFLOP/s)",
        share >= 60,
        share,
        threshold,
    )
