"""results.json -> the Markdown tables `make bench` prints (and docs/performance.md quotes)."""

from __future__ import annotations

from typing import Any

from bench.engines import TF_ENGINES
from bench.targets import fastest_tensorflow_start


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            if abs(value) < 1:
                return f"{value:.3g}"
            return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render(results: dict[str, Any]) -> str:
    meta, out = results["meta"], []
    machine = meta["machine"]
    served_flip = meta.get("deployed_test_time_flip")
    flip = ", served flip-averaged (see the flip ratios)" if served_flip else ""
    out.append(
        f"# bench {'(quick) ' if meta['quick'] else ''}{meta['created']}, {meta['git_commit']}"
        f" | {machine['cpus']} CPUs, load avg {machine['loadavg_before'][0]:.2f} before /"
        f" {machine['loadavg_after'][0]:.2f} after | deployed variant: {meta['deployed_variant']}"
        f" ({meta['deployed_variant_reason']}{flip})"
    )
    model = results["model"]
    out.append(
        f"\nModel: {model['flops'] / 1e9:.3f} GFLOP per image (counted from the Keras layers), "
        f"{100 * model['transpose_conv_share']:.0f}% of MACs in transposed convolutions."
    )
    out.append(_latency(results["latency"]))
    out.append(_flip(results["latency"].get("flip") or []))
    out.append(_cold(results["cold_start"], f"litert:{meta['deployed_variant']}"))
    out.append(_footprint(results["footprint"]))
    out.append(_machine(results["machine_limit"]))
    out.append(_e2e(results["e2e"]))
    out.append(_throughput(results.get("throughput") or {"reason": "not in this results file"}))
    out.append(_cost(results["cost"]))
    if "targets" in results:
        out.append(_targets(results["targets"]))
    return "\n".join(out)


def _targets(targets: list[dict[str, Any]]) -> str:
    def verdict(met: bool | None) -> str:
        return "not measured" if met is None else ("met" if met else "NOT MET")

    rows = [[t["target"], t["threshold"], t["measured"], verdict(t["met"])] for t in targets]
    met = sum(1 for t in targets if t["met"])
    return f"\n## Targets: {met} of {len(targets)} met\n\n" + _table(
        ["target", "threshold", "measured", "verdict"], rows
    )


def _latency(latency: dict[str, Any]) -> str:
    ratios = {(r["engine"], r["image"], r["threads"]): r for r in latency["ratios"]}
    rows = []
    for row in latency["pipeline"]:
        ratio = ratios.get((row["engine"], row["image"], row["threads"]), {})
        rows.append(
            [
                row["image"],
                row["threads"],
                row["engine"],
                row["total_ms"],
                row["decode_ms"],
                row["infer_ms"],
                row["encode_ms"],
                _x(ratio.get("speedup_vs_keras_predict")),
                _x(ratio.get("speedup_vs_tf_function")),
            ]
        )
    rows.sort(key=lambda r: (r[0], r[1], r[2] in TF_ENGINES, r[3]))
    return (
        "\n## Per-image latency, encoded bytes -> mask PNG (median ms; speed-up = TF ms / ours)\n\n"
        + _table(
            [
                "image",
                "threads",
                "engine",
                "total",
                "decode",
                "infer",
                "encode",
                "vs Keras predict",
                "vs tf.function",
            ],
            rows,
        )
    )


def _flip(ratios: list[dict[str, Any]]) -> str:
    if not ratios:
        return "\n## Test-time flip averaging\n\nnot measured"
    rows = [
        [r["engine"], r["image"], r["threads"], _x(r["pipeline_ratio"]), _x(r["model_ratio"])]
        for r in sorted(ratios, key=lambda r: (r["image"], r["threads"]))
    ]
    return (
        "\n## Test-time flip averaging (a manifest's `test_time_flip`): its time over the same "
        "variant served plainly\n\n"
        + _table(["engine", "image", "threads", "pipeline", "model only"], rows)
    )


def _cold(cold: list[dict[str, Any]], deployed: str) -> str:
    rows = [
        [
            c["engine"],
            c["first_mask_s"],
            c["import_main_s"],
            c["model_load_s"],
            c["first_inference_s"],
            c["peak_rss_mib"],
            c["peak_rss_after_large_mib"],
            c.get("floor_s"),
            _x(c.get("over_floor")),
        ]
        for c in cold
    ]
    base = next((c for c in cold if c["engine"] == deployed), None)
    tf = fastest_tensorflow_start(cold)
    summary = ""
    if base and tf:
        summary = (
            f"\n\nTensorFlow ({tf['engine']}, the faster TF start) vs {base['engine']}: "
            f"{tf['first_mask_s'] / base['first_mask_s']:.1f}x the cold start, "
            f"{tf['peak_rss_mib'] / base['peak_rss_mib']:.1f}x the peak RSS."
        )
    where = cold[0].get("interpreter", "developer .venv") if cold else ""
    return (
        "\n## Cold start: new process -> first mask (median s; peak RSS MiB; "
        f"each path in its {'deploy-shaped virtualenv' if 'deploy' in where else where})\n\n"
        + _table(
            [
                "engine",
                "to first mask",
                "import main",
                "model load",
                "first image",
                "peak RSS",
                "peak RSS after a large image",
                "floor (numpy + LiteRT + model + 1 inference)",
                "cold start / floor",
            ],
            rows,
        )
        + summary
    )


def _footprint(fp: dict[str, Any]) -> str:
    if fp.get("status") == "not measured":
        return f"\n## Footprint\n\nnot measured ({fp['reason']})"
    rows = [
        [
            name,
            fp[name]["installed_mib"],
            fp[name].get("with_bytecode_mib"),
            fp[name]["distributions"],
            fp[name]["install_s"],
        ]
        for name in ("project", "tensorflow")
    ]
    return (
        "\n## Footprint: deploy-shaped virtualenvs (project: functions/requirements.txt; "
        "tensorflow: the same direct dependencies with tensorflow-cpu==2.21.0 in place of "
        "ai-edge-litert)\n\n"
        + _table(
            ["requirements", "installed MiB", "with bytecode MiB", "distributions", "install s"],
            rows,
        )
        + f"\n\nTensorFlow's install is {fp['ratio_tensorflow_to_project']:.1f}x the size"
        + (
            f" ({fp['ratio_with_bytecode']:.1f}x with bytecode)."
            if "ratio_with_bytecode" in fp
            else "."
        )
    )


def _machine(machine: dict[str, Any]) -> str:
    sgemm = machine["sgemm"]
    int8 = machine.get("int8_limit") or {}
    has_int8 = "1" in int8
    rows = []
    for a in machine["achieved"]:
        row = [a["engine"], a["threads"], a["model_only_ms"], a["achieved_gflops"]]
        row.append(a["percent_of_sgemm"])
        if has_int8:
            row.append(a.get("percent_of_int8_limit"))
        rows.append(row)
    rows.sort(key=lambda r: (r[1], r[2]))
    headers = ["engine", "threads", "model-only ms", "achieved G ops/s", "% of sgemm (float line)"]
    text = (
        f"\n## Machine limit: numpy sgemm {sgemm['1']['best_gflops']:.1f} GFLOP/s on 1 thread, "
        f"{sgemm['2']['best_gflops']:.1f} on 2 (best of {sgemm['1']['repeats']}; medians "
        f"{sgemm['1']['median_gflops']:.1f} / {sgemm['2']['median_gflops']:.1f}; "
        f"n={sgemm['1']['size']}, float32)"
    )
    if has_int8:
        headers.append("% of int8 limit")
        one, two = int8["1"], int8.get("2", int8["1"])
        text += (
            f"; LiteRT int8 limit {one['best_gops']:.1f} G ops/s on 1 thread ({one['model']}), "
            f"{two['best_gops']:.1f} on 2 ({two['model']}; medians {one['median_gops']:.1f} / "
            f"{two['median_gops']:.1f})"
        )
    else:
        text += f"; int8 limit not measured ({int8.get('reason', 'missing')})"
    return text + "\n\n" + _table(headers, rows)


def _e2e(e2e: dict[str, Any]) -> str:
    if e2e.get("status") != "measured":
        return f"\n## End to end on the local stack\n\nnot measured ({e2e.get('reason')})"
    seq, burst = e2e["sequential"], e2e["burst"]
    return f"\n## End to end on the local stack ({e2e['engine']}, {e2e['image']})\n\n" + _table(
        ["upload -> mask p50 ms", "p95 ms", "n", "sustained images/s", "burst n", "stack up s"],
        [
            [
                seq["p50_ms"],
                seq["p95_ms"],
                seq["count"],
                burst["images_per_s"],
                burst["count"],
                e2e["stack_start_s"],
            ]
        ],
    )


def _budget_cost(row: dict[str, Any]) -> str:
    if row.get("usd_per_million_images_at_budget_tier") is None:
        return "-"
    return (
        f"{row['usd_per_million_images_at_budget_tier']:.2f} "
        f"({row['budget_memory_gib']:g} GiB, {row['budget_vcpu']:g} vCPU)"
    )


def _throughput(tp: dict[str, Any]) -> str:
    title = "\n## Throughput, I/O included: one instance pinned to one CPU"
    if tp.get("status") != "measured":
        return f"{title}\n\nnot measured ({tp.get('reason')})"
    rows = [
        [
            r["concurrency"],
            r["images_per_s"],
            r["p50_ms"],
            r["p95_ms"],
            r["busy_seconds_per_image"],
            r.get("usd_per_million_images"),
            _budget_cost(r),
            r["storage_requests_per_image"],
            r["peak_rss_sum_mib"],
            r["images"],
        ]
        for r in tp["rows"]
    ]
    return (
        f"{title} ({tp['engine']}, {tp['image']}, NUM_THREADS {tp['num_threads']}; "
        f"{tp['storage_latency_ms']:g} ms + bytes at {tp['storage_bandwidth_mb_s']:g} MB/s per "
        f"storage request; {tp['pinning']})\n\n"
        + _table(
            [
                "concurrency",
                "images/s",
                "p50 ms",
                "p95 ms",
                "busy s/image",
                "$/M images (configured tier)",
                "$/M images (tier the memory budget needs)",
                "storage requests/image",
                f"peak RSS MiB (after {tp['large_image']} x concurrency)",
                "n",
            ],
            rows,
        )
        + f"\n\nStorage latency source: {tp['storage_source']}."
    )


def _cost(cost: dict[str, Any]) -> str:
    tier, prices = cost["tier"], cost["prices"]
    head = (
        f"\n## Cost at {tier['memory_gib']:g} GiB / {tier['vcpu']:g} vCPU ({tier['source']}); "
        f"${prices['usd_per_vcpu_second']}/vCPU-s, ${prices['usd_per_gib_second']}/GiB-s, "
        f"${prices['usd_per_million_requests']}/M requests ({prices['source']}, "
        f"{prices['as_of']})"
    )
    io = cost.get("io_inclusive") or {}
    if io.get("status") == "measured":
        io_rows = [
            [
                r["concurrency"],
                r["busy_seconds_per_image"],
                r["cpu_seconds_per_image"],
                r["gib_seconds_per_image"],
                r["usd_per_million_images"],
            ]
            for r in io["rows"]
        ]
        io_text = (
            f"\n\n### I/O-inclusive ({io['engine']}; billed = instance busy time per image, "
            f"storage at {io['storage_latency_ms']:g} ms per request; configured concurrency "
            f"{io['configured_concurrency']}: ${io['usd_per_million_images_at_configured']} per "
            "million images)\n\n"
            + _table(
                ["concurrency", "busy s/image", "CPU-s/image", "GiB-s/image", "$/M images"], io_rows
            )
        )
    else:
        io_text = f"\n\n### I/O-inclusive\n\nnot measured ({io.get('reason')})"
    compute = cost["compute_only"]
    rows = [
        [
            r["engine"],
            r["cpu_seconds_per_image"],
            r["gib_seconds_per_image"],
            r["usd_per_million_images"],
            _x(r["cost_ratio_vs_project"]),
            r["usd_per_million_images_rounded_100ms"],
            r["peak_rss_mib"],
            r["smallest_memory_gib"],
            r["usd_per_million_images_at_smallest"],
            r["usd_per_million_cold_starts"],
        ]
        for r in compute["rows"]
    ]
    return (
        head
        + io_text
        + f"\n\n### Compute only ({compute['basis']}; {compute['image']}, 1 thread)\n\n"
        + _table(
            [
                "engine",
                "CPU-s/image",
                "GiB-s/image",
                "$/M images",
                "cost ratio",
                "$/M, each request rounded up to 100 ms",
                "instance peak RSS MiB",
                f"smallest tier GiB (x{cost['headroom']})",
                "$/M at smallest",
                "$/M cold starts",
            ],
            rows,
        )
    )
