"""`python -m bench --quick` runs end to end and writes every figure with a sane type.

No timing thresholds: on a shared machine absolute times are noise. The converted models are
cached in bench/.cache (a fresh clone converts them once, about a minute more).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cost import configured_tier, dollars_per_million, smallest_tier
from bench.engines import TF_ENGINES, flip_engine
from bench.models import VARIANTS
from bench.run import latency_ratios

REPO_ROOT = Path(__file__).resolve().parents[2]
THREADS = (1, 2)


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "## Per-image latency" in proc.stdout  # the table went to stdout
    return json.loads(out.read_text())


@pytest.mark.slow
def test_meta_and_model(results: dict) -> None:
    assert results["meta"]["quick"] is True
    assert results["meta"]["deployed_variant"] in VARIANTS
    manifest = json.loads((REPO_ROOT / "models" / "default" / "manifest.json").read_text())
    assert results["meta"]["deployed_test_time_flip"] is manifest.get("test_time_flip", False)
    model = results["model"]
    # The U-Net's FLOPs are counted from the Keras layers: about 1.17 GFLOP, mostly decoder.
    assert 0.5e9 < model["flops"] < 3e9
    assert model["flops"] == 2 * model["macs"]
    assert 0.5 < model["transpose_conv_share"] < 1


@pytest.mark.slow
def test_latency_has_every_engine_image_and_thread_count(results: dict) -> None:
    latency = results["latency"]
    images = list(latency["images"])
    assert len(images) == 2
    flip = flip_engine(results["meta"]["deployed_variant"])
    engines = [f"litert:{v}" for v in VARIANTS] + [flip] + list(TF_ENGINES)
    rows = {(r["engine"], r["image"], r["threads"]): r for r in latency["pipeline"]}
    for engine in engines:
        for image in images:
            for threads in THREADS:
                row = rows[(engine, image, threads)]
                for key in ("total_ms", "decode_ms", "infer_ms", "encode_ms", "total_p90_ms"):
                    assert _positive(row[key]), (engine, image, threads, key)
    assert {(r["engine"], r["threads"]) for r in latency["model_only"]} == {
        (e, t) for e in engines for t in THREADS
    }
    assert len(latency["ratios"]) == (len(VARIANTS) + 1) * len(images) * len(THREADS)
    for ratio in latency["ratios"]:
        for tf_engine in TF_ENGINES:
            assert _positive(ratio[f"speedup_vs_{tf_engine}"])
    # Flip averaging against the same variant served plainly, for every image and thread count
    # (ratios only: how much slower it is, is a measurement, not a test).
    assert {(r["image"], r["threads"]) for r in latency["flip"]} == {
        (i, t) for i in images for t in THREADS
    }
    for ratio in latency["flip"]:
        assert ratio["engine"] == flip
        assert _positive(ratio["pipeline_ratio"]) and _positive(ratio["model_ratio"]), ratio


@pytest.mark.slow
def test_cold_start_footprint_machine_e2e_cost(results: dict) -> None:
    cold = {c["engine"]: c for c in results["cold_start"]}
    assert f"litert:{results['meta']['deployed_variant']}" in cold
    assert "tf_function" in cold
    for entry in cold.values():
        for key in ("first_mask_s", "import_main_s", "model_load_s", "first_inference_s"):
            assert _positive(entry[key]), key
        assert entry["peak_rss_mib"] > 10
        assert entry["peak_rss_after_large_mib"] >= entry["peak_rss_mib"]

    footprint = results["footprint"]
    assert footprint.get("status") != "not measured", footprint
    for name in ("project", "tensorflow"):
        assert _positive(footprint[name]["installed_mib"])
        assert footprint[name]["with_bytecode_mib"] > footprint[name]["installed_mib"]
        assert footprint[name]["distributions"] > 0
    assert _positive(footprint["ratio_tensorflow_to_project"])
    # The project's venv is the deploy lock itself; the cold start ran in these venvs.
    assert footprint["project"]["distributions"] == len(footprint["project"]["requirements"])
    for entry in cold.values():
        assert entry["interpreter"].startswith("deploy venv"), entry

    machine = results["machine_limit"]
    assert _positive(machine["sgemm_1thread_gflops"])
    assert {(a["engine"], a["threads"]) for a in machine["achieved"]} == {
        (r["engine"], r["threads"]) for r in results["latency"]["model_only"]
    }
    for entry in machine["achieved"]:
        assert _positive(entry["achieved_gflops"]) and _positive(entry["percent_of_sgemm"])
    for threads in ("1", "2"):  # the int8 line, through LiteRT
        assert _positive(machine["int8_limit"][threads]["best_gops"])
    int8_rows = [a for a in machine["achieved"] if a["engine"] == "litert:int8"]
    assert int8_rows and all(_positive(a["percent_of_int8_limit"]) for a in int8_rows)

    e2e = results["e2e"]
    if e2e["status"] == "measured":
        assert _positive(e2e["sequential"]["p50_ms"]) and _positive(e2e["sequential"]["p95_ms"])
        assert e2e["sequential"]["p95_ms"] >= e2e["sequential"]["p50_ms"]
        assert _positive(e2e["burst"]["images_per_s"])
    else:  # allowed, but it must say why
        assert e2e["reason"]

    cost = results["cost"]
    assert cost["prices"]["source"].startswith("https://")
    rows = cost["compute_only"]["rows"]
    engines = [r["engine"] for r in rows]
    deployed = results["meta"]["deployed_variant"]
    assert engines == [f"litert:{deployed}", flip_engine(deployed), *TF_ENGINES]
    for row in rows:
        for key in (
            "cpu_seconds_per_image",
            "gib_seconds_per_image",
            "usd_per_million_images",
            "usd_per_million_images_rounded_100ms",
            "cost_ratio_vs_project",
            "smallest_memory_gib",
            "usd_per_million_cold_starts",
        ):
            assert _positive(row[key]), (row["engine"], key)
            assert math.isfinite(row[key])


def test_cost_arithmetic() -> None:
    # 0.1 s on 1 vCPU / 1 GiB: 0.1 * (24e-6 + 2.5e-6) * 1e6 + $0.40 per million requests.
    assert dollars_per_million(0.1, 1.0, 1.0) == pytest.approx(3.05)
    assert smallest_tier(100) == 0.125
    assert smallest_tier(150) == 0.25
    assert smallest_tier(300) == 0.5
    assert smallest_tier(700) == 1.0
    assert smallest_tier(900) == 2.0


@pytest.mark.slow
def test_throughput_and_its_cost(results: dict) -> None:
    throughput = results["throughput"]
    assert throughput["status"] == "measured", throughput.get("reason")
    assert throughput["storage_latency_ms"] > 0
    configured = configured_tier()["concurrency"]
    assert [r["concurrency"] for r in throughput["rows"]] == sorted({1, configured})  # quick
    for row in throughput["rows"]:
        for key in ("images_per_s", "p50_ms", "p95_ms", "usd_per_million_images"):
            assert _positive(row[key]), (row["concurrency"], key)
        assert row["p95_ms"] >= row["p50_ms"]
        assert row["storage_requests_per_image"] >= 2  # at least a download and an upload
        assert row["processes"] >= 2 and row["peak_rss_sum_mib"] > 10
    io = results["cost"]["io_inclusive"]
    assert io["status"] == "measured"
    assert _positive(io["usd_per_million_images_at_configured"])


@pytest.mark.slow
def test_targets_are_reported(results: dict) -> None:
    targets = results["targets"]
    assert {t["key"] for t in targets} == {
        "pipeline_vs_keras",
        "pipeline_vs_tf_function",
        "cold_start",
        "concurrency",
        "int8_efficiency",
        "memory",
    }
    for target in targets:
        assert target["met"] in (True, False), target  # every target measured in a quick run
        assert target["measured"] and target["threshold"]


def test_latency_ratios_pair_same_image_and_threads() -> None:
    rows = [
        {"engine": "litert:int8", "image": "a", "threads": 1, "total_ms": 10.0},
        {"engine": "keras_predict", "image": "a", "threads": 1, "total_ms": 100.0},
        {"engine": "tf_function", "image": "a", "threads": 1, "total_ms": 30.0},
        {"engine": "tf_function", "image": "a", "threads": 2, "total_ms": 1.0},
    ]
    assert latency_ratios(rows) == [
        {
            "engine": "litert:int8",
            "image": "a",
            "threads": 1,
            "speedup_vs_keras_predict": 10.0,
            "speedup_vs_tf_function": 3.0,
        }
    ]


def test_requirement_lines_of_a_hashed_lock() -> None:
    from bench.venvs import requirement_lines

    text = (
        "# header\nnumpy==2.3.5 \\\n    --hash=sha256:ab \\\n    --hash=sha256:cd\n"
        "    # via x\npillow==12.0.0\n"
    )
    assert requirement_lines(text) == ["numpy==2.3.5", "pillow==12.0.0"]
