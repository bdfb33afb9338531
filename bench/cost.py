"""Cost per image from the measured figures and Cloud Run's list prices.

Cloud Functions 2nd gen are billed as Cloud Run services with request-based billing (CPU allocated
only while a request is processed): vCPU-seconds and GiB-seconds of the *configured* instance
size for as long as requests run, plus a per-request fee.

Prices: Tier 1 regions (e.g. us-central1), request-based billing, after the free tier, from
https://cloud.google.com/run/pricing ("Pricing for services with CPU only allocated during request
processing", Tier 1: $0.00002400 / vCPU-second, $0.00000250 / GiB-second, $0.40 / million
requests). Read from a stored copy of that page on 2026-11-21 (the copy is not dated itself;
these Tier 1 figures are the long-standing list prices, also quoted by third-party calculators).
Check the page before budgeting: prices, tiers and free allowances change. Free tier, network
egress, Cloud Storage operations, Pub/Sub and Eventarc are left out (the same for both paths).

Two bases, both at the configured tier (`variables.tf`: function_memory, function_cpu):

* I/O-inclusive (the headline): the instance's busy time per image from the throughput section
  (bench/throughput.py: wall time with at least one request in flight / images, with the
  download, the upload and every other storage call at an injected in-region latency), at each
  concurrency. Request-based billing charges exactly that busy time, whatever the concurrency.
* Compute only: the warm pipeline latency (decode -> infer -> encode) of the typical image at 1
  thread, for our path (plain and flip-averaged) and both TensorFlow engines; no storage I/O,
  which adds the same absolute time to every path and so shrinks the ratio, not the difference.
  Cloud Run rounds billable instance time up to 100 ms; a busy instance's requests share that
  rounding, an isolated request does not, so a worst-case column bills each request alone,
  rounded up. A cold start is costed separately, per instance start.
"""

from __future__ import annotations

import math
import re
from typing import Any

from segmentation.memory import load_budget
from segmentation.settings import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS

from bench.engines import flip_engine, plain_engine
from bench.models import REPO_ROOT

PRICES = {
    "source": "https://cloud.google.com/run/pricing (Tier 1, request-based billing)",
    "as_of": "2026-11-21 (stored copy of the page; verify before budgeting)",
    "usd_per_vcpu_second": 0.000024,
    "usd_per_gib_second": 0.0000025,
    "usd_per_million_requests": 0.40,
}
# Memory settings a 2nd gen function can take (GiB); the smallest that fits is suggested. Below
# 1 GiB the default CPU is a fraction of a vCPU (128 MiB .083, 256 MiB .167, 512 MiB .333), so a
# smaller tier also needs `function_cpu` set explicitly to keep the measured 1-vCPU latency.
MEMORY_TIERS_GIB = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
BILLING_GRANULARITY_S = 0.1  # "rounded up to the nearest 100 millisecond" (same page)
HEADROOM = 1.25  # peak RSS x this must fit the memory limit
DEFAULT_MEMORY_GIB = 1.0
DEFAULT_VCPU = 1.0
DEFAULT_CONCURRENCY = 1


def configured_tier() -> dict[str, Any]:
    """function_memory / function_cpu / function_concurrency defaults from the root
    variables.tf."""
    memory, cpu, concurrency = DEFAULT_MEMORY_GIB, DEFAULT_VCPU, DEFAULT_CONCURRENCY
    source = "built-in default"
    path = REPO_ROOT / "variables.tf"
    try:
        text = path.read_text()
        mem = _default_of(text, "function_memory")
        vcpu = _default_of(text, "function_cpu")
        requests = _default_of(text, "function_concurrency")
        if mem:
            memory = _gib(mem)
        if vcpu:
            cpu = float(vcpu)
        if requests:
            concurrency = int(requests)
        source = "variables.tf (function_memory, function_cpu, function_concurrency defaults)"
    except (OSError, ValueError):
        pass
    return {"memory_gib": memory, "vcpu": cpu, "concurrency": concurrency, "source": source}


def _default_of(text: str, variable: str) -> str | None:
    block = re.search(r'variable\s+"' + variable + r'"\s*\{(.*?)\n\}', text, re.S)
    if not block:
        return None
    match = re.search(r'default\s*=\s*"?([^"\n]+)"?', block.group(1))
    return match.group(1).strip() if match else None


def _gib(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)\s*(Gi|G|Mi|M)?", value.strip())
    if not match:
        raise ValueError(value)
    number, unit = float(match.group(1)), match.group(2) or "Mi"
    return number if unit in ("Gi", "G") else number / 1024


def dollars_per_million(seconds: float, vcpu: float, memory_gib: float) -> float:
    per_image = (
        seconds * vcpu * PRICES["usd_per_vcpu_second"]
        + seconds * memory_gib * PRICES["usd_per_gib_second"]
    )
    return per_image * 1e6 + PRICES["usd_per_million_requests"]


def busy_time_cost(busy_seconds_per_image: float, tier: dict[str, Any]) -> dict[str, float]:
    """Request-based billing of an instance busy `busy_seconds_per_image` per image."""
    seconds = busy_seconds_per_image
    return {
        "cpu_seconds_per_image": round(seconds * tier["vcpu"], 4),
        "gib_seconds_per_image": round(seconds * tier["memory_gib"], 4),
        "usd_per_million_images": round(
            dollars_per_million(seconds, tier["vcpu"], tier["memory_gib"]), 2
        ),
    }


# Cloud Run's minimum vCPUs for a memory limit above each size (GiB).
# https://cloud.google.com/run/docs/configuring/services/memory-limits
MIN_VCPU_ABOVE_GIB = ((4.0, 2.0), (8.0, 4.0), (16.0, 6.0), (24.0, 8.0))


def budget_tier(concurrency: int, vcpu: float) -> dict[str, Any]:
    """The smallest memory tier the function's memory budget (segmentation/memory.py) allows at
    `concurrency` with the default image limits, and the vCPUs Cloud Run requires with it."""
    needed_mib = load_budget().required_mib(
        concurrency=concurrency,
        max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
        max_image_bytes=DEFAULT_MAX_IMAGE_BYTES,
    )
    memory = next((t for t in MEMORY_TIERS_GIB if t * 1024 >= needed_mib), MEMORY_TIERS_GIB[-1])
    floor = max((cpus for above, cpus in MIN_VCPU_ABOVE_GIB if memory > above), default=0.0)
    return {"memory_gib": memory, "vcpu": max(vcpu, floor), "budget_mib": needed_mib}


def add_throughput_cost(throughput: dict[str, Any], tier: dict[str, Any] | None = None) -> None:
    """Adds to each throughput row `usd_per_million_images` (busy time at the configured tier)
    and the same at the tier the memory budget needs for that concurrency (`budget_tier`)."""
    tier = tier or configured_tier()
    for row in throughput.get("rows", []):
        busy = row["busy_seconds_per_image"]
        row["usd_per_million_images"] = busy_time_cost(busy, tier)["usd_per_million_images"]
        needed = budget_tier(row["concurrency"], tier["vcpu"])
        row["budget_memory_gib"] = needed["memory_gib"]
        row["budget_vcpu"] = needed["vcpu"]
        row["usd_per_million_images_at_budget_tier"] = busy_time_cost(busy, needed)[
            "usd_per_million_images"
        ]


def io_inclusive(throughput: dict[str, Any], tier: dict[str, Any]) -> dict[str, Any]:
    """The headline cost: each concurrency level's busy time per image at the configured tier."""
    if throughput.get("status") != "measured" or not throughput.get("rows"):
        return {"status": "not measured", "reason": throughput.get("reason", "no throughput rows")}
    rows = [
        {
            "concurrency": r["concurrency"],
            "busy_seconds_per_image": r["busy_seconds_per_image"],
            **busy_time_cost(r["busy_seconds_per_image"], tier),
        }
        for r in throughput["rows"]
    ]
    configured = next((r for r in rows if r["concurrency"] == tier["concurrency"]), None)
    return {
        "status": "measured",
        "engine": throughput.get("engine"),
        "storage_latency_ms": throughput["storage_latency_ms"],
        "configured_concurrency": tier["concurrency"],
        "usd_per_million_images_at_configured": (
            configured["usd_per_million_images"] if configured else None
        ),
        "rows": rows,
    }


def smallest_tier(peak_rss_mib: float) -> float:
    need = peak_rss_mib * HEADROOM / 1024
    return next((t for t in MEMORY_TIERS_GIB if t >= need), MEMORY_TIERS_GIB[-1])


def cost_model(results: dict[str, Any], *, variant: str) -> dict[str, Any]:
    tier = configured_tier()
    latency = results["latency"]
    typical = next(iter(latency["images"]))
    pipeline = {(r["engine"], r["image"], r["threads"]): r["total_ms"] for r in latency["pipeline"]}
    cold = {c["engine"]: c for c in results["cold_start"]}
    worker_peak = latency["worker_peak_rss_mib"]
    rows = []
    flip = flip_engine(variant)
    measured_flip = [flip] if (flip, typical, 1) in pipeline else []  # older results: none
    for engine in (f"litert:{variant}", *measured_flip, "keras_predict", "tf_function"):
        family = "litert" if engine.startswith("litert:") else "tensorflow"
        seconds = pipeline[(engine, typical, 1)] / 1e3
        # Flip averaging loads the same model: its cold start is the plain variant's.
        start = cold.get(plain_engine(engine)) or cold.get(
            "tf_function" if family == "tensorflow" else ""
        )
        # One instance's working set: its cold start plus a large upload. The latency worker
        # (all variants or both TF engines in one process) is the fallback without a cold start.
        peak = start["peak_rss_after_large_mib"] if start else worker_peak.get(family, 0.0)
        fits = smallest_tier(peak)
        rows.append(
            {
                "engine": engine,
                "billed_seconds_per_image": round(seconds, 4),
                "cpu_seconds_per_image": round(seconds * tier["vcpu"], 4),
                "gib_seconds_per_image": round(seconds * tier["memory_gib"], 4),
                "usd_per_million_images": round(
                    dollars_per_million(seconds, tier["vcpu"], tier["memory_gib"]), 2
                ),
                # Worst case: every request billed alone, rounded up to 100 ms.
                "usd_per_million_images_rounded_100ms": round(
                    dollars_per_million(
                        math.ceil(seconds / BILLING_GRANULARITY_S) * BILLING_GRANULARITY_S,
                        tier["vcpu"],
                        tier["memory_gib"],
                    ),
                    2,
                ),
                "peak_rss_mib": round(peak, 1),
                "smallest_memory_gib": fits,
                "usd_per_million_images_at_smallest": round(
                    dollars_per_million(seconds, tier["vcpu"], fits), 2
                ),
                "cold_start_s": start["first_mask_s"] if start else None,
                "usd_per_million_cold_starts": (
                    round(
                        dollars_per_million(start["first_mask_s"], tier["vcpu"], tier["memory_gib"])
                        - PRICES["usd_per_million_requests"],
                        2,
                    )
                    if start
                    else None
                ),
            }
        )
    base = rows[0]["usd_per_million_images"]
    for row in rows:
        row["cost_ratio_vs_project"] = round(row["usd_per_million_images"] / base, 2)
    return {
        "prices": PRICES,
        "tier": tier,
        "headroom": HEADROOM,
        "io_inclusive": io_inclusive(results.get("throughput") or {}, tier),
        "compute_only": {
            "basis": "compute only: warm decode -> infer -> encode, no storage I/O",
            "image": typical,
            "threads": 1,
            "rows": rows,
        },
    }
