"""The bench's pure parts, on hand-made inputs: targets, busy-time cost, throughput rows, the
spread summary, the int8 line, and the fault proxy's injected delay (measured loosely: a delayed
request takes at least the delay; no upper bound on wall-clock time is asserted)."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bench import cost, int8_limit, report, spread, targets, throughput
from bench.run import achieved_rows, flip_ratios
from tests.fakes.fault_proxy import FaultProxy

TIER = {"memory_gib": 1.0, "vcpu": 1.0, "concurrency": 1, "source": "test"}


# --- throughput rows ---------------------------------------------------------------------------


def test_busy_seconds_counts_overlaps_once() -> None:
    assert throughput.busy_seconds([]) == 0.0
    assert throughput.busy_seconds([(0, 1), (0.5, 2), (3, 4)]) == pytest.approx(3.0)
    assert throughput.busy_seconds([(3, 4), (0, 1), (1, 1.5)]) == pytest.approx(2.5)  # touching


def test_level_row() -> None:
    intervals = [(0.0, 0.1), (0.0, 0.2), (0.1, 0.3), (0.2, 0.4)]
    row = throughput.level_row(2, intervals)
    assert row["concurrency"] == 2
    assert row["images"] == 4
    assert row["images_per_s"] == pytest.approx(10.0)  # 4 images in 0.4 s
    assert row["p50_ms"] == pytest.approx(200.0)
    assert row["p95_ms"] == pytest.approx(200.0)
    assert row["busy_seconds_per_image"] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        throughput.level_row(1, [])


def _tp_row(c: int, ips: float, p95: float, rss: float = 300.0) -> dict[str, Any]:
    return {
        "concurrency": c,
        "images": 48,
        "images_per_s": ips,
        "p50_ms": p95 * 0.9,
        "p95_ms": p95,
        "busy_seconds_per_image": 1 / ips,
        "storage_requests_per_image": 6.0,
        "peak_rss_sum_mib": rss,
        "peak_rss_largest_process_mib": rss / 2,
        "processes": 2,
    }


def test_best_row_is_the_fastest_within_the_p95_bound() -> None:
    rows = [_tp_row(1, 4.0, 300), _tp_row(2, 7.0, 320), _tp_row(4, 9.0, 590), _tp_row(8, 10, 900)]
    assert throughput.best_row(rows)["concurrency"] == 4  # 8 is faster but p95 3x
    assert throughput.best_row(rows[1:]) is None  # no concurrency-1 row


def test_push_body_carries_the_notification() -> None:
    resource = {"bucket": "b", "name": "x.jpg", "generation": "7"}
    body = throughput.push_body(resource, {"eventType": "OBJECT_FINALIZE"}, "42", "sub")
    assert body["subscription"] == "sub"
    assert body["message"]["messageId"] == "42"
    assert json.loads(base64.b64decode(body["message"]["data"])) == resource


# --- cost ---------------------------------------------------------------------------------------


def test_busy_time_cost_bills_the_configured_tier() -> None:
    # 0.1 s busy per image on 1 vCPU / 1 GiB: 0.1 * (24e-6 + 2.5e-6) * 1e6 + $0.40 requests.
    billed = cost.busy_time_cost(0.1, TIER)
    assert billed["usd_per_million_images"] == pytest.approx(3.05)
    assert billed["cpu_seconds_per_image"] == pytest.approx(0.1)
    two = cost.busy_time_cost(0.1, {**TIER, "vcpu": 2.0, "memory_gib": 2.0})
    assert two["usd_per_million_images"] == pytest.approx(5.70)


def test_each_concurrency_is_also_billed_at_the_tier_its_memory_budget_needs() -> None:
    from segmentation.memory import load_budget
    from segmentation.settings import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS

    tier = {"memory_gib": 1.0, "vcpu": 1.0, "concurrency": 1}
    throughput = {"rows": [{"concurrency": c, "busy_seconds_per_image": 0.1} for c in (1, 4, 8)]}
    cost.add_throughput_cost(throughput, tier)
    budget = load_budget()
    for row in throughput["rows"]:
        needed = budget.required_mib(
            concurrency=row["concurrency"],
            max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
            max_image_bytes=DEFAULT_MAX_IMAGE_BYTES,
        )
        assert row["budget_memory_gib"] * 1024 >= needed  # the budget fits the tier billed
        assert row["budget_memory_gib"] / 2 * 1024 < needed or row["budget_memory_gib"] <= 0.125
    one, four, eight = throughput["rows"]
    assert one["usd_per_million_images_at_budget_tier"] == one["usd_per_million_images"]
    assert four["usd_per_million_images_at_budget_tier"] > four["usd_per_million_images"]
    assert eight["budget_vcpu"] == 2.0  # Cloud Run: above 4 GiB needs 2 vCPUs


def test_io_inclusive_rows_and_headline() -> None:
    tp = {
        "status": "measured",
        "engine": "litert:int8",
        "storage_latency_ms": 50.0,
        "rows": [_tp_row(1, 4.0, 300), _tp_row(2, 10.0, 320)],
    }
    cost.add_throughput_cost(tp, TIER)
    assert tp["rows"][0]["usd_per_million_images"] == pytest.approx(0.25 * 26.5 + 0.4, abs=0.01)
    io = cost.io_inclusive(tp, TIER)
    assert io["status"] == "measured"
    assert [r["concurrency"] for r in io["rows"]] == [1, 2]
    assert io["usd_per_million_images_at_configured"] == tp["rows"][0]["usd_per_million_images"]
    assert cost.io_inclusive({"status": "not measured", "reason": "x"}, TIER)["reason"] == "x"


def test_configured_tier_reads_variables_tf() -> None:
    tier = cost.configured_tier()
    assert tier["memory_gib"] > 0 and tier["vcpu"] > 0
    assert isinstance(tier["concurrency"], int) and tier["concurrency"] >= 1


# --- targets ------------------------------------------------------------------------------------


def _results(
    *,
    keras: float = 10.0,
    tf_function: float = 3.0,
    cold_ours: float = 2.0,
    c1: float = 4.0,
    best: float = 8.0,
    best_p95: float = 600.0,
    int8_share: float = 60.0,
    rss: float = 1024.0,
) -> dict[str, Any]:
    image = "typical"
    return {
        "meta": {"deployed_variant": "int8", "git_commit": "abc"},
        "latency": {
            "images": {image: {}},
            "ratios": [
                {
                    "engine": "litert:int8",
                    "image": image,
                    "threads": 1,
                    "speedup_vs_keras_predict": keras,
                    "speedup_vs_tf_function": tf_function,
                }
            ],
        },
        "cold_start": [
            {"engine": "litert:int8", "first_mask_s": cold_ours},
            {"engine": "tf_function", "first_mask_s": 20.0},
            {"engine": "keras_predict", "first_mask_s": 21.0},
        ],
        "footprint": {"ratio_tensorflow_to_project": 8.8},
        "machine_limit": {
            "achieved": [
                {
                    "engine": "litert:int8",
                    "threads": 1,
                    "achieved_gflops": 50.0,
                    "percent_of_sgemm": 64.0,
                    "percent_of_int8_limit": int8_share,
                }
            ]
        },
        "throughput": {
            "status": "measured",
            "configured_concurrency": 1,
            "large_image": "large",
            "storage_latency_ms": 50.0,
            "rows": [_tp_row(1, c1, 300.0, rss), _tp_row(4, best, best_p95, rss * 2)],
        },
        "cost": {"tier": TIER},
    }


def _verdicts(results: dict[str, Any], variant: str = "int8") -> dict[str, bool | None]:
    return {t["key"]: t["met"] for t in targets.evaluate(results, variant=variant)}


def test_targets_met_exactly_at_their_thresholds() -> None:
    assert _verdicts(_results()) == {
        "pipeline_vs_keras": True,  # 10x
        "pipeline_vs_tf_function": True,  # 3x
        "cold_start": True,  # 20 s (the faster TF start) / 2 s
        "concurrency": True,  # 8 vs 4 images/s, p95 600 = 2 x 300
        "int8_efficiency": True,  # 60%
        "memory": True,  # 1024 MiB at concurrency 1 on 1 GiB
    }


def test_targets_missed_just_below_their_thresholds() -> None:
    missed = _results(
        keras=9.99,
        tf_function=2.99,
        cold_ours=2.01,
        best=7.99,
        int8_share=59.9,
        rss=1025.0,
    )
    assert not any(_verdicts(missed).values())


def test_concurrency_target_ignores_levels_over_the_p95_bound() -> None:
    # 4 is 2.5x faster but its p95 is 2.1x: the best allowed level is 1 itself (1.0x).
    row = next(
        t
        for t in targets.evaluate(_results(best=10.0, best_p95=630.0), variant="int8")
        if t["key"] == "concurrency"
    )
    assert row["met"] is False
    assert row["value"] == pytest.approx(1.0)


def test_targets_without_throughput_are_not_measured() -> None:
    results = _results()
    results["throughput"] = {"status": "not measured", "reason": "--skip throughput"}
    verdicts = _verdicts(results)
    assert verdicts["concurrency"] is None and verdicts["memory"] is None


def test_float_variant_efficiency_uses_the_sgemm_line() -> None:
    results = _results()
    results["machine_limit"]["achieved"][0]["engine"] = "litert:float32"
    results["latency"]["ratios"][0]["engine"] = "litert:float32"
    results["cold_start"][0]["engine"] = "litert:float32"
    row = next(
        t for t in targets.evaluate(results, variant="float32") if t["key"] == "int8_efficiency"
    )
    assert "sgemm" in row["target"] and row["value"] == 64.0


def test_install_size_is_no_longer_a_target() -> None:
    keys = {t["key"] for t in targets.evaluate(_results(), variant="int8")}
    assert keys == {
        "pipeline_vs_keras",
        "pipeline_vs_tf_function",
        "cold_start",
        "concurrency",
        "int8_efficiency",
        "memory",
    }


# --- machine lines ------------------------------------------------------------------------------


def test_int8_limit_ops_and_summary() -> None:
    assert int8_limit.ops_per_invoke(int8_limit.SPECS["fc"]) == 2 * 256 * 1024 * 1024
    assert int8_limit.ops_per_invoke(int8_limit.SPECS["conv3x3"]) == 2 * 64 * 64 * 128 * 128 * 9
    doc = {
        "models": [
            {"name": "fc", "best_gops": 80.0, "median_gops": 60.0},
            {"name": "conv1x1", "best_gops": 90.0, "median_gops": 70.0},
        ]
    }
    limit = int8_limit.summarise({"1": doc})
    assert limit["1"]["best_gops"] == 90.0 and limit["1"]["model"] == "conv1x1"


def test_achieved_rows_share_of_each_line() -> None:
    sgemm = {"1": {"best_gflops": 100.0}}
    int8 = {"1": {"best_gops": 200.0}}
    rows = achieved_rows(
        int(1e9),
        [
            {"engine": "litert:int8", "threads": 1, "median_ms": 10.0},
            {"engine": "litert:float32", "threads": 1, "median_ms": 20.0},
        ],
        sgemm,
        int8,
    )
    assert rows[0]["achieved_gflops"] == pytest.approx(100.0)
    assert rows[0]["percent_of_sgemm"] == pytest.approx(100.0)
    assert rows[0]["percent_of_int8_limit"] == pytest.approx(50.0)
    assert "percent_of_int8_limit" not in rows[1]  # a float variant: sgemm only


def test_achieved_rows_count_both_inferences_of_flip_averaging() -> None:
    rows = achieved_rows(
        int(1e9),
        [{"engine": "litert:int8+flip", "threads": 1, "median_ms": 20.0}],
        {"1": {"best_gflops": 100.0}},
        {"1": {"best_gops": 200.0}},
    )
    # Two inferences of 1 GFLOP in 20 ms: the same 100 GFLOP/s as one in 10 ms.
    assert rows[0]["achieved_gflops"] == pytest.approx(100.0)
    assert rows[0]["percent_of_int8_limit"] == pytest.approx(50.0)


def test_flip_ratios_against_the_same_variant_served_plainly() -> None:
    def row(engine: str, image: str, total: float) -> dict[str, Any]:
        return {"engine": engine, "image": image, "threads": 1, "total_ms": total}

    pipeline = [
        row("litert:int8", "typical", 40.0),
        row("litert:int8+flip", "typical", 60.0),
        row("litert:float32", "typical", 10.0),  # another variant: never a flip's baseline
        row("keras_predict", "typical", 400.0),
    ]
    model_only = [
        {"engine": "litert:int8", "threads": 1, "median_ms": 20.0},
        {"engine": "litert:int8+flip", "threads": 1, "median_ms": 41.0},
    ]
    assert flip_ratios(pipeline, model_only) == [
        {
            "engine": "litert:int8+flip",
            "image": "typical",
            "threads": 1,
            "pipeline_ratio": 1.5,
            "model_ratio": 2.05,
        }
    ]
    text = report._flip(flip_ratios(pipeline, model_only))
    assert "| litert:int8+flip | typical | 1 | 1.50x | 2.05x |" in text


# --- spread ----------------------------------------------------------------------------------


def test_spread_summarises_every_ratio_and_target() -> None:
    runs = [_results(cold_ours=c) for c in (2.5, 1.8, 2.0)]  # 8x, 11.1x, 10x
    for run, flip in zip(runs, (1.2, 1.5, 1.3), strict=True):
        run["targets"] = targets.evaluate(run, variant="int8")
        run["latency"]["flip"] = [
            {"engine": "litert:int8+flip", "image": "typical", "threads": 1, "pipeline_ratio": flip}
        ]
    rows = {r["figure"]: r for r in spread.summarise(runs)}
    cold = rows["target cold_start"]
    assert (cold["runs"], cold["min"], cold["median"], cold["max"]) == (3, 8.0, 10.0, 11.11)
    assert cold["met"] == "2 of 3"  # not met in every run
    assert rows["install size TF / ours (retired target)"]["median"] == 8.8
    assert rows["images/s c4 / c1"]["median"] == pytest.approx(2.0)
    assert "pipeline speedup_vs_keras_predict (typical, 1 thread)" in rows
    flip = rows["flip-averaged / plain pipeline (typical, 1 thread)"]
    assert (flip["min"], flip["median"], flip["max"]) == (1.2, 1.3, 1.5)
    text = spread.render(list(rows.values()), ["a", "b", "c"])
    assert "| target cold_start | 3 | 8 | 10 | 11.1 | 2 of 3 |" in text


def test_report_renders_the_new_sections() -> None:
    results = _results()
    cost.add_throughput_cost(results["throughput"], TIER)
    results["throughput"].update(
        engine="litert:int8",
        image="typical",
        num_threads=1,
        storage_bandwidth_mb_s=70.0,
        pinning="taskset -a -p -c 1",
        storage_source="https://example.invalid/source",
    )
    text = report._throughput(results["throughput"])
    assert "## Throughput, I/O included" in text and "taskset" in text
    io = cost.io_inclusive(results["throughput"], TIER)
    text = report._cost(
        {
            "tier": TIER,
            "prices": cost.PRICES,
            "headroom": cost.HEADROOM,
            "io_inclusive": io,
            "compute_only": {"basis": "compute only", "image": "typical", "rows": []},
        }
    )
    assert "### I/O-inclusive" in text and "### Compute only" in text


# --- the fault proxy's delay --------------------------------------------------------------------


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b"x" * 100_000

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def upstream() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _get(url: str) -> tuple[int, int, float]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        started = time.perf_counter()
        connection.request("GET", "/storage/v1/b/bucket/o/name")
        response = connection.getresponse()
        payload = response.read()
        return response.status, len(payload), time.perf_counter() - started
    finally:
        connection.close()


def test_proxy_delay_arithmetic() -> None:
    proxy = FaultProxy("http://127.0.0.1:1")
    try:
        assert proxy.delay_for(10**6, round_trip=True) == 0.0  # off by default
        proxy.set_delay(0.05, 1e6)
        assert proxy.delay_for(500_000) == pytest.approx(0.5)
        assert proxy.delay_for(500_000, round_trip=True) == pytest.approx(0.55)
        with pytest.raises(ValueError):
            proxy.set_delay(-1.0)
        with pytest.raises(ValueError):
            proxy.set_delay(0.0, 0.0)
    finally:
        proxy.stop()


def test_a_delayed_request_takes_at_least_the_delay(upstream: str) -> None:
    with FaultProxy(upstream) as proxy:
        status, size, _ = _get(proxy.url)
        assert (status, size) == (200, 100_000)
        proxy.set_delay(0.2, 1e6)  # 0.2 s + 100 kB at 1 MB/s = 0.3 s at least
        status, size, elapsed = _get(proxy.url)
        assert (status, size) == (200, 100_000)
        assert elapsed >= 0.3


def test_the_cold_start_floor_runs_numpy_litert_a_model_and_one_inference() -> None:
    import subprocess
    import sys
    from pathlib import Path

    model = Path(__file__).resolve().parents[2] / "models" / "default" / "model.tflite"
    command = ["-m", "bench.worker", "coldfloor", "--model", str(model), "--threads", "1"]
    done = subprocess.run(
        [sys.executable, *command],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    marks = json.loads(done.stdout.strip().splitlines()[-1])["marks"]
    order = ["interpreter_up", "imported", "model_loaded", "first_inference"]
    assert [marks[k] for k in order] == sorted(marks[k] for k in order)
