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

from bench.cost import dollars_per_million, smallest_tier
from bench.engines import TF_ENGINES
from bench.models import VARIANTS
from bench.run import latency_ratios
from bench.targets import evaluate

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
    engines = [f"litert:{v}" for v in VARIANTS] + list(TF_ENGINES)
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
    assert len(latency["ratios"]) == len(VARIANTS) * len(images) * len(THREADS)
    for ratio in latency["ratios"]:
        for tf_engine in TF_ENGINES:
            assert _positive(ratio[f"speedup_vs_{tf_engine}"])


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

    e2e = results["e2e"]
    if e2e["status"] == "measured":
        assert _positive(e2e["sequential"]["p50_ms"]) and _positive(e2e["sequential"]["p95_ms"])
        assert e2e["sequential"]["p95_ms"] >= e2e["sequential"]["p50_ms"]
        assert _positive(e2e["burst"]["images_per_s"])
    else:  # allowed, but it must say why
        assert e2e["reason"]

    cost = results["cost"]
    assert cost["prices"]["source"].startswith("https://")
    engines = [r["engine"] for r in cost["rows"]]
    assert engines == [f"litert:{results['meta']['deployed_variant']}", *TF_ENGINES]
    for row in cost["rows"]:
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
def test_targets_are_reported(results: dict) -> None:
    targets = results["targets"]
    assert len(targets) == 6
    for target in targets:
        assert target["met"] in (True, False), target  # every target measured in a quick run
        assert target["measured"] and target["threshold"]


def _results(speedup_predict: float, cold_ours: float, rss: float, fp_ratio: float) -> dict:
    image = "typical"
    return {
        "latency": {
            "images": {image: {}},
            "ratios": [
                {
                    "engine": "litert:int8",
                    "image": image,
                    "threads": 1,
                    "speedup_vs_keras_predict": speedup_predict,
                    "speedup_vs_tf_function": 1.0,
                }
            ],
        },
        "cold_start": [
            {"engine": "litert:int8", "first_mask_s": cold_ours, "peak_rss_after_large_mib": rss},
            {"engine": "tf_function", "first_mask_s": 20.0, "peak_rss_after_large_mib": 600.0},
            {"engine": "keras_predict", "first_mask_s": 19.0, "peak_rss_after_large_mib": 600.0},
        ],
        "footprint": {
            "ratio_tensorflow_to_project": fp_ratio,
            "project": {"installed_mib": 100.0},
            "tensorflow": {"installed_mib": 100.0 * fp_ratio},
        },
        "machine_limit": {
            "achieved": [
                {
                    "engine": "litert:int8",
                    "threads": 1,
                    "percent_of_sgemm": 59.9,
                    "achieved_gflops": 50.0,
                }
            ]
        },
    }


def test_target_verdicts_follow_the_thresholds() -> None:
    met = {t["target"]: t["met"] for t in evaluate(_results(5.0, 1.9, 204, 10.0), variant="int8")}
    assert met == {
        "pipeline >= 5x Keras predict": True,
        "pipeline ahead of tf.function": False,  # 1.0x is not ahead
        "cold start <= 1/10 of the TensorFlow path": True,  # 19 s (the faster TF start) / 1.9
        "peak RSS fits the 256 MiB tier": True,  # 204 x 1.25 = 255
        "dependencies <= 1/10 of TensorFlow's": True,
        "model GFLOP/s >= 60% of sgemm": False,
    }
    missed = {t["target"]: t["met"] for t in evaluate(_results(4.9, 2.0, 206, 9.9), variant="int8")}
    assert not any(
        missed[k]
        for k in (
            "pipeline >= 5x Keras predict",
            "cold start <= 1/10 of the TensorFlow path",
            "peak RSS fits the 256 MiB tier",
            "dependencies <= 1/10 of TensorFlow's",
        )
    )


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
