"""`make bench`: the function's performance against full TensorFlow and against the machine.

Every figure is measured in this run, on this machine, and reported next to its baseline from the
same run (ratios), because absolute times on a shared machine are noise. Sections:

* latency     decode -> predict -> encode (the function's pipeline, no network) per image, for each
              TFLite variant on LiteRT and for the same pipeline on TensorFlow (Keras `predict`,
              `tf.function`), 1 and 2 threads, a typical and a large JPEG; model-only latency;
              the deployed variant also served with test-time flip averaging (`+flip`, two
              inferences per image) and its cost as a ratio to the same variant served plainly
* cold_start  a new process in the deploy-shaped virtualenv of its path (bench/venvs.py):
              interpreter start -> first mask (main.py import, model load, first inference), and
              its peak RSS
* footprint   installed size of functions/requirements.txt (the deploy lock) in a fresh virtualenv
              vs the same direct dependencies with tensorflow-cpu in place of ai-edge-litert
* machine     the float32 line (numpy sgemm GFLOP/s) and the int8 line (bench/int8_limit.py:
              large int8 FC/conv models converted here, run by LiteRT), 1 and 2 threads; the
              model's achieved ops/s as a share of each (int8 variant: of the int8 line)
* e2e         local stack (emulators + functions-framework, Pub/Sub push): upload -> mask
              visible, p50/p95, and a burst's images/s; no injected storage latency
* throughput  I/O included (bench/throughput.py): one function instance pinned to one CPU,
              every storage request delayed by an in-region Cloud Storage latency + bytes /
              bandwidth (a parameter), exactly c requests in flight for c = 1, 2, 4, 8: images/s,
              p50/p95, busy time and $ per million images, peak RSS
* cost        $ per million images at the configured tier (Cloud Run request-based prices):
              I/O-inclusive from the throughput section's busy time (the headline), and compute
              only (the pipeline latency, for our path and both TensorFlow engines)
* targets     the performance targets (issue 13; bench/targets.py), each with its measured value:
              met or not. Three runs' spread: `python -m bench.spread a.json b.json c.json`

    python -m bench [--quick] [--out bench/results.json] [--skip footprint|e2e|throughput]
                    [--storage-latency-ms 50] [--storage-bandwidth-mb-s 70]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cost, report, targets
from bench import int8_limit as int8_limit_lib
from bench import throughput as throughput_lib
from bench import venvs as venvs_lib
from bench.engines import (
    TF_ENGINES,
    engine_names,
    flip_engine,
    inferences_per_image,
    is_flip,
    is_tensorflow,
    plain_engine,
)
from bench.images import ensure_images
from bench.models import CACHE_ROOT, DONE_MARKER, REPO_ROOT, VARIANTS, model_dir
from bench.worker import quantile

PY = sys.executable
THREAD_COUNTS = (1, 2)
DEFAULT_OUT = REPO_ROOT / "bench" / "results.json"


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- children --------------------------------------------------------------------------------


def thread_env(threads: int) -> dict[str, str]:
    """Pins every thread pool a child could start (BLAS, OpenMP, TensorFlow) to `threads`."""
    value = str(threads)
    return {
        "OMP_NUM_THREADS": value,
        "OPENBLAS_NUM_THREADS": value,
        "MKL_NUM_THREADS": value,
        "VECLIB_MAXIMUM_THREADS": value,
        "NUMEXPR_NUM_THREADS": value,
        "TF_NUM_INTRAOP_THREADS": value,
        "TF_NUM_INTEROP_THREADS": "1",
    }


def child_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_EMU", "PUBSUB_EMU"))}
    env.update(thread_env(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "functions"), str(REPO_ROOT)])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def run_worker(
    args: list[str], env: dict[str, str], timeout: float = 600, python: str | Path = PY
) -> dict[str, Any]:
    """Runs `python -m bench.worker ARGS` and returns the JSON document it printed last."""
    proc = subprocess.run(
        [str(python), "-m", "bench.worker", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"bench.worker {args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- sections --------------------------------------------------------------------------------


def measure_latency(
    models: Path, images: dict[str, Path], cfg: argparse.Namespace
) -> dict[str, Any]:
    """One child per (family, threads): LiteRT variants together, TensorFlow engines together,
    so the LiteRT process never has TensorFlow loaded."""
    litert = [e for e in engine_names(VARIANTS) if e not in TF_ENGINES]
    litert.append(flip_engine(cfg.variant))
    pipeline: list[dict[str, Any]] = []
    model_only: list[dict[str, Any]] = []
    peak: dict[str, float] = {}
    for threads in THREAD_COUNTS:
        for family, engines in (("litert", litert), ("tensorflow", list(TF_ENGINES))):
            _log(f"latency: {family}, {threads} thread(s)")
            doc = run_worker(
                [
                    "latency",
                    "--models",
                    str(models),
                    "--threads",
                    str(threads),
                    "--engines",
                    ",".join(engines),
                    "--images",
                    ",".join(str(p) for p in images.values()),
                    "--warmup",
                    str(cfg.warmup),
                    "--repeats",
                    str(cfg.repeats),
                    "--model-repeats",
                    str(cfg.model_repeats),
                ],
                child_env(threads),
            )
            pipeline += doc["pipeline"]
            model_only += doc["model_only"]
            peak[family] = max(peak.get(family, 0.0), doc["peak_rss_mib"])
    return {
        "images": {name: _image_facts(path) for name, path in images.items()},
        "pipeline": pipeline,
        "model_only": model_only,
        "ratios": latency_ratios(pipeline),
        "flip": flip_ratios(pipeline, model_only),
        "worker_peak_rss_mib": peak,
    }


def _image_facts(path: Path) -> dict[str, Any]:
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    return {"width": width, "height": height, "bytes": path.stat().st_size, "format": "JPEG"}


def latency_ratios(pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each LiteRT row: how many times faster than each TensorFlow engine (same image and
    thread count, same run)."""
    index = {(r["engine"], r["image"], r["threads"]): r for r in pipeline}
    ratios = []
    for row in pipeline:
        if row["engine"] in TF_ENGINES:
            continue
        entry = {"engine": row["engine"], "image": row["image"], "threads": row["threads"]}
        for tf_engine in TF_ENGINES:
            base = index.get((tf_engine, row["image"], row["threads"]))
            entry[f"speedup_vs_{tf_engine}"] = (
                round(base["total_ms"] / row["total_ms"], 2) if base else None
            )
        ratios.append(entry)
    return ratios


def flip_ratios(
    pipeline: list[dict[str, Any]], model_only: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """For each flip-averaged row: its time over the same variant served plainly (same image and
    thread count, same run). The model's time about doubles; decode and encode do not."""
    index = {(r["engine"], r["image"], r["threads"]): r for r in pipeline}
    models = {(r["engine"], r["threads"]): r["median_ms"] for r in model_only}
    ratios = []
    for row in pipeline:
        if not is_flip(row["engine"]):
            continue
        base = index.get((plain_engine(row["engine"]), row["image"], row["threads"]))
        if base is None:
            continue
        plain_model = models.get((base["engine"], row["threads"]))
        flip_model = models.get((row["engine"], row["threads"]))
        ratios.append(
            {
                "engine": row["engine"],
                "image": row["image"],
                "threads": row["threads"],
                "pipeline_ratio": round(row["total_ms"] / base["total_ms"], 2),
                "model_ratio": (
                    round(flip_model / plain_model, 2) if flip_model and plain_model else None
                ),
            }
        )
    return ratios


def measure_cold_start(
    models: Path,
    image: Path,
    large: Path,
    engines: list[str],
    cfg: argparse.Namespace,
    venvs: dict[str, venvs_lib.DeployVenv] | None,
) -> list[dict[str, Any]]:
    """Median over `cfg.cold_repeats` fresh processes per engine (engines interleaved), each in
    its path's deploy-shaped virtualenv (bench/venvs.py) when there is one."""
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    cache = Path(tempfile.mkdtemp(prefix="bench-model-cache-"))
    try:
        for _ in range(cfg.cold_repeats):
            for engine in engines:
                variant = engine.split(":", 1)[1] if ":" in engine else cfg.variant
                env = child_env(
                    cfg.threads_deployed,
                    {
                        "OUTPUT_BUCKET": "bench-output",
                        "MODEL_URI": str(models / variant),
                        "NUM_THREADS": str(cfg.threads_deployed),
                        "MODEL_CACHE_DIR": str(cache),
                        "LOG_LEVEL": "WARNING",
                    },
                )
                python = venvs[_deploy_venv(engine)].python if venvs else PY
                started = time.time()
                doc = run_worker(
                    [
                        "coldstart",
                        "--models",
                        str(models),
                        "--threads",
                        str(cfg.threads_deployed),
                        "--engine",
                        engine,
                        "--image",
                        str(image),
                        "--large-image",
                        str(large),
                    ],
                    env,
                    python=python,
                )
                marks = doc["marks"]
                runs[engine].append(
                    {
                        "first_mask_s": marks["first_mask"] - started,
                        "interpreter_s": marks["interpreter_up"] - started,
                        "import_main_s": marks["imported_main"] - marks["interpreter_up"],
                        "model_load_s": marks["model_loaded"] - marks["imported_main"],
                        "first_inference_s": marks["first_mask"] - marks["model_loaded"],
                        "peak_rss_mib": doc["peak_rss_mib"],
                        "peak_rss_after_large_mib": doc["peak_rss_after_large_mib"],
                    }
                )
                if not is_tensorflow(engine):
                    runs[engine][-1]["floor_s"] = _cold_floor(models, variant, cfg, env, python)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    results = []
    for engine, samples in runs.items():
        if "floor_s" in samples[0]:  # cold start as a multiple of the floor, run by run
            for sample in samples:
                sample["over_floor"] = sample["first_mask_s"] / sample["floor_s"]
        results.append(
            {
                "engine": engine,
                "threads": cfg.threads_deployed,
                "repeats": len(samples),
                "interpreter": (
                    f"deploy venv: {_deploy_venv(engine)}"
                    if venvs
                    else "developer .venv (deploy venvs unavailable)"
                ),
                **{
                    key: round(statistics.median(s[key] for s in samples), 3)
                    for key in samples[0]
                    if not key.startswith("peak_rss")
                },
                "peak_rss_mib": round(statistics.median(s["peak_rss_mib"] for s in samples), 1),
                "peak_rss_after_large_mib": round(
                    statistics.median(s["peak_rss_after_large_mib"] for s in samples), 1
                ),
            }
        )
    return results


def _cold_floor(
    models: Path, variant: str, cfg: argparse.Namespace, env: dict[str, str], python: str
) -> float:
    """Seconds from spawning a process to one inference with only numpy and LiteRT imported:
    what no cold start of this model on this runtime can beat (worker.coldfloor)."""
    manifest = json.loads((models / variant / "manifest.json").read_text())
    started = time.time()
    doc = run_worker(
        [
            "coldfloor",
            "--model",
            str(models / variant / manifest["file"]),
            "--threads",
            str(cfg.threads_deployed),
        ],
        env,
        python=python,
    )
    return doc["marks"]["first_inference"] - started


def _deploy_venv(engine: str) -> str:
    """The deploy-shaped virtualenv (bench/venvs.py) an engine's cold start runs in."""
    return "tensorflow" if is_tensorflow(engine) else "project"


def measure_footprint(venvs: dict[str, venvs_lib.DeployVenv]) -> dict[str, Any]:
    """Installed size of the deploy-shaped virtualenvs (bench/venvs.py)."""
    result: dict[str, Any] = {"tool": venvs["project"].facts.get("tool", "uv")}
    for name, venv in venvs.items():
        result[name] = venv.facts
    result["ratio_tensorflow_to_project"] = round(
        result["tensorflow"]["installed_mib"] / result["project"]["installed_mib"], 2
    )
    result["ratio_with_bytecode"] = round(
        result["tensorflow"]["with_bytecode_mib"] / result["project"]["with_bytecode_mib"], 2
    )
    return result


def measure_machine(
    flops: int, model_only: list[dict[str, Any]], cfg, limit_models: Path | None = None
) -> dict[str, Any]:
    """The machine's float32 line (numpy sgemm) and int8 line (bench/int8_limit.py through
    LiteRT), each on 1 and 2 threads; every model-only row as a share of the line of its kind."""
    sgemm = {}
    for threads in THREAD_COUNTS:
        _log(f"machine: sgemm, {threads} thread(s)")
        sgemm[str(threads)] = run_worker(
            ["sgemm", "--size", str(cfg.sgemm_size), "--repeats", str(cfg.sgemm_repeats)],
            child_env(threads),
        )
    int8: dict[str, Any] | None = None
    if limit_models is not None:
        runs = {}
        for threads in THREAD_COUNTS:
            _log(f"machine: int8 limit, {threads} thread(s)")
            runs[str(threads)] = run_worker(
                [
                    "int8limit",
                    "--models",
                    str(limit_models),
                    "--threads",
                    str(threads),
                    "--repeats",
                    str(cfg.limit_repeats),
                ],
                child_env(threads),
            )
        int8 = int8_limit_lib.summarise(runs)
    # The limit is what the machine can do: the best run (the median is also recorded).
    limit = sgemm["1"]["best_gflops"]
    return {
        "sgemm": sgemm,
        "sgemm_1thread_gflops": limit,
        "int8_limit": int8 or {"status": "not measured", "reason": "no int8 limit models"},
        "achieved": achieved_rows(flops, model_only, sgemm, int8),
    }


def achieved_rows(
    flops: int,
    model_only: list[dict[str, Any]],
    sgemm: dict[str, Any],
    int8: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Model-only GFLOP/s (2 x MACs x inferences per image / median latency) as a share of sgemm
    for every engine, and of the int8 limit (same thread count) for the int8 variant."""
    achieved = []
    for row in model_only:
        work = flops * inferences_per_image(row["engine"])
        gflops = work / (row["median_ms"] / 1e3) / 1e9
        ref = sgemm[str(row["threads"])]["best_gflops"]
        entry = {
            "engine": row["engine"],
            "threads": row["threads"],
            "model_only_ms": row["median_ms"],
            "achieved_gflops": round(gflops, 2),
            "percent_of_sgemm": round(100 * gflops / ref, 1),
        }
        if int8 and plain_engine(row["engine"]) == "litert:int8" and str(row["threads"]) in int8:
            line = int8[str(row["threads"])]["best_gops"]
            entry["percent_of_int8_limit"] = round(100 * gflops / line, 1)
        achieved.append(entry)
    return achieved


def measure_e2e(models: Path, image: Path, cfg: argparse.Namespace) -> dict[str, Any]:
    """Through the local stack's Python API: one warm-up upload (the instance's cold start is
    not counted), `e2e_sequential` uploads one at a time (upload -> mask visible), then a burst
    of `e2e_burst` uploads (sustained images/s)."""
    try:
        from segment import clients, outputs
        from segment import upload as uploads
        from segment.stack import LocalStack, StackOptions
    except ImportError as exc:
        return {"status": "not measured", "reason": f"local stack not available ({exc})"}
    log_dir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    options = StackOptions(
        log_dir=log_dir,
        model_uri=str(models / cfg.variant),
        function_env={"NUM_THREADS": str(cfg.threads_deployed), "LOG_LEVEL": "WARNING"},
    )
    try:
        _log("e2e: starting the local stack")
        started = time.perf_counter()
        with LocalStack(options) as stack:
            stack_up_s = time.perf_counter() - started
            storage = clients.storage_client(stack.endpoints)
            publisher = clients.publisher_client(stack.endpoints)
            bucket, out, topic = (
                stack.names.input_bucket,
                stack.names.output_bucket,
                stack.pipeline.topic,
            )

            def send(name: str):
                sent = uploads.upload_file(storage, bucket, image, name)
                uploads.notify(publisher, topic, sent)
                return sent

            def has_output(sent) -> bool:
                found = outputs.find_outputs(storage, out, sent.name)
                return outputs.current_output(found, sent.generation) is not None

            def wait(pending: list, timeout: float = 120.0) -> dict[str, float]:
                done: dict[str, float] = {}
                deadline = time.perf_counter() + timeout
                while len(done) < len(pending) and time.perf_counter() < deadline:
                    for sent in pending:
                        if sent.name not in done and has_output(sent):
                            done[sent.name] = time.perf_counter()
                    time.sleep(0.02)
                if len(done) < len(pending):
                    raise RuntimeError(f"e2e: {len(pending) - len(done)} mask(s) never appeared")
                return done

            t0 = time.perf_counter()
            wait([send("warmup/0.jpg")])
            first_s = time.perf_counter() - t0
            latencies = []
            for i in range(cfg.e2e_sequential):
                t0 = time.perf_counter()
                wait([send(f"seq/{i}.jpg")])
                latencies.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            burst = [send(f"burst/{i}.jpg") for i in range(cfg.e2e_burst)]
            finished = wait(burst)
            burst_s = max(finished.values()) - t0
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    return {
        "status": "measured",
        "engine": f"litert:{cfg.variant}",
        "image": image.stem,
        "stack_start_s": round(stack_up_s, 2),
        "first_upload_to_mask_s": round(first_s, 3),
        "sequential": {
            "count": len(latencies),
            "p50_ms": round(1e3 * statistics.median(latencies), 1),
            "p95_ms": round(1e3 * quantile(latencies, 0.95), 1),
        },
        "burst": {
            "count": len(burst),
            "seconds": round(burst_s, 3),
            "images_per_s": round(len(burst) / burst_s, 2),
        },
        "note": "one function instance (functions-framework), local emulators; poll every 20 ms",
    }


def measure_throughput(
    models: Path, image: Path, large: Path, cfg: argparse.Namespace
) -> dict[str, Any]:
    """bench/throughput.py on the deployed variant: one instance pinned to one CPU, storage
    latency injected, images/s, p50/p95 and busy time at each concurrency."""
    configured = cost.configured_tier()["concurrency"]
    # --quick (the test suite's smoke run): 1 and the configured level, enough for every target.
    base = (1,) if cfg.quick else throughput_lib.CONCURRENCY_LEVELS
    levels = tuple(sorted({*base, configured}))
    plan = throughput_lib.Plan(
        levels=levels,
        images_per_level=cfg.throughput_images,
        latency_ms=cfg.storage_latency_ms,
        bandwidth_mb_s=cfg.storage_bandwidth_mb_s,
        num_threads=cfg.threads_deployed,
        configured_concurrency=configured,
    )
    result = throughput_lib.measure(str(models / cfg.variant), image, large, plan)
    result["engine"] = f"litert:{cfg.variant}"
    return result


# --- driver ----------------------------------------------------------------------------------


DEFAULT_MANIFEST = REPO_ROOT / "models" / "default" / "manifest.json"


def _default_manifest() -> dict[str, Any]:
    """models/default's manifest, or {} where there is none (a fresh layout)."""
    try:
        manifest = json.loads(DEFAULT_MANIFEST.read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def deployed_variant() -> tuple[str, str]:
    """(variant, why): models/default's quantization, else int8 (the fastest: architecture
    decision 4 in docs/architecture.md)."""
    variant = _default_manifest().get("quantization")
    if isinstance(variant, str) and variant in VARIANTS:
        return variant, f"quantization of {DEFAULT_MANIFEST.relative_to(REPO_ROOT)}"
    return "int8", "models/default/ has no manifest yet: int8, the fastest variant"


def deployed_test_time_flip() -> bool:
    """Whether models/default is served flip-averaged (its manifest's `test_time_flip`)."""
    return _default_manifest().get("test_time_flip") is True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, small images (tests)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results.json path")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_ROOT)
    parser.add_argument("--variant", choices=VARIANTS, help="the deployed variant (default: auto)")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=("footprint", "e2e", "throughput"),
        help="leave a section out (recorded as not measured)",
    )
    parser.add_argument(
        "--storage-latency-ms",
        type=float,
        default=throughput_lib.STORAGE_LATENCY_MS,
        help="throughput: latency injected per storage request (default: in-region Cloud "
        "Storage, see bench/throughput.py)",
    )
    parser.add_argument(
        "--storage-bandwidth-mb-s",
        type=float,
        default=throughput_lib.STORAGE_BANDWIDTH_MB_S,
        help="throughput: storage bandwidth per request, MB/s",
    )
    cfg = parser.parse_args(argv)
    quick = cfg.quick
    cfg.warmup = 1 if quick else 3
    cfg.repeats = 2 if quick else 15
    cfg.model_repeats = 3 if quick else 30
    cfg.cold_repeats = 1 if quick else 5  # import time varies by ~0.2 s between processes
    cfg.sgemm_size = 512 if quick else 1024
    cfg.sgemm_repeats = 5 if quick else 15
    cfg.e2e_sequential = 3 if quick else 20
    cfg.e2e_burst = 4 if quick else 30
    cfg.throughput_images = 8 if quick else 48  # timed requests per concurrency level
    cfg.limit_repeats = 10 if quick else 30
    cfg.threads_deployed = 1  # the cost tier has 1 vCPU; see bench/cost.py
    if cfg.variant:
        cfg.variant_reason = "--variant"
    else:
        cfg.variant, cfg.variant_reason = deployed_variant()
    return cfg


def _models_in_child(cache_dir: Path) -> Path:
    """The cached models; a build (TensorFlow, ~1 GiB) runs in a child, so this process stays
    small and never has TensorFlow loaded."""
    if (model_dir(cache_dir) / DONE_MARKER).is_file():
        return model_dir(cache_dir)
    code = (
        "import sys; from pathlib import Path; from bench.models import ensure_models; "
        "print(ensure_models(Path(sys.argv[1]), "
        "log=lambda m: print('bench: ' + m, file=sys.stderr, flush=True)))"
    )
    proc = subprocess.run(
        [PY, "-c", code, str(cache_dir)],
        cwd=REPO_ROOT,
        env=child_env(os.cpu_count() or 1),
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return Path(proc.stdout.strip().splitlines()[-1])


def _optional(
    name: str, measure: Callable[[], dict[str, Any]], cfg: argparse.Namespace, timings: dict
) -> dict[str, Any]:
    """A section that may be skipped (--skip) or fail (recorded as not measured, with why)."""
    if name in cfg.skip:
        return {"status": "not measured", "reason": f"--skip {name}"}
    try:
        return _timed(name, measure, timings)
    except Exception as exc:
        _log(f"{name} failed: {exc}")
        return {"status": "not measured", "reason": f"{name} failed: {exc}"[:500]}


def _limit_models_in_child(cfg: argparse.Namespace) -> Path | None:
    """bench/int8_limit.py's models (converted once by TensorFlow, in a child); None when the
    conversion fails (the int8 limit is then recorded as not measured)."""
    proc = subprocess.run(
        [PY, "-m", "bench.int8_limit", str(cfg.cache_dir)],
        cwd=REPO_ROOT,
        env=child_env(os.cpu_count() or 1),
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        _log(f"int8 limit models failed ({proc.returncode}); int8 limit not measured")
        return None
    return Path(proc.stdout.strip().splitlines()[-1])


def _timed(name: str, fn: Callable[[], Any], timings: dict[str, float]) -> Any:
    started = time.perf_counter()
    try:
        return fn()
    finally:
        timings[name] = round(time.perf_counter() - started, 1)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the one-off conversion's C++ logs
    started = time.perf_counter()
    timings: dict[str, float] = {}
    load_before = os.getloadavg()
    models = _timed("models", lambda: _models_in_child(cfg.cache_dir), timings)
    flops = json.loads((models / "flops.json").read_text())
    images = ensure_images(cfg.cache_dir / "images", quick=cfg.quick)
    typical, large = images.values()

    latency = _timed("latency", lambda: measure_latency(models, images, cfg), timings)
    venvs = None
    if "footprint" in cfg.skip:
        footprint = {"status": "not measured", "reason": "--skip footprint"}
    else:
        try:
            venvs = _timed("venvs", lambda: venvs_lib.ensure_venvs(cfg.cache_dir, _log), timings)
            footprint = measure_footprint(venvs)
        except (OSError, subprocess.SubprocessError, venvs_lib.VenvError) as exc:
            _log(f"deploy virtualenvs failed, cold start runs in this interpreter: {exc}")
            footprint = {"status": "not measured", "reason": f"uv failed: {exc}"[:500]}
    cold_engines = (
        [f"litert:{cfg.variant}", "tf_function"] if cfg.quick else [*engine_names(VARIANTS)]
    )
    _log(f"cold start: {', '.join(cold_engines)}")
    cold = _timed(
        "cold_start",
        lambda: measure_cold_start(models, typical, large, cold_engines, cfg, venvs),
        timings,
    )
    limit_models = _timed("int8_limit_models", lambda: _limit_models_in_child(cfg), timings)
    machine = _timed(
        "machine",
        lambda: measure_machine(flops["flops"], latency["model_only"], cfg, limit_models),
        timings,
    )
    # The local stack is optional: a failure is recorded with its reason, the other figures stay.
    e2e = _optional("e2e", lambda: measure_e2e(models, typical, cfg), cfg, timings)
    throughput = _optional(
        "throughput", lambda: measure_throughput(models, typical, large, cfg), cfg, timings
    )
    if throughput.get("status") == "measured":
        cost.add_throughput_cost(throughput)  # each row's $ per million at the configured tier

    results: dict[str, Any] = {
        "meta": {
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "quick": cfg.quick,
            "git_commit": _git_commit(),
            "machine": {
                "cpus": os.cpu_count(),
                "processor": platform.processor() or platform.machine(),
                "python": platform.python_version(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            },
            "versions": _versions(),
            "deployed_variant": cfg.variant,
            "deployed_variant_reason": cfg.variant_reason,
            # The targets and the I/O-inclusive sections serve the variant plainly; a
            # flip-averaged default costs what the latency section's `flip` ratios add.
            "deployed_test_time_flip": deployed_test_time_flip(),
            "repeats": {
                "warmup": cfg.warmup,
                "pipeline": cfg.repeats,
                "model_only": cfg.model_repeats,
                "cold_start": cfg.cold_repeats,
                "throughput_per_level": cfg.throughput_images,
                "int8_limit": cfg.limit_repeats,
            },
            "model_cache": str(models),
        },
        "model": flops,
        "latency": latency,
        "cold_start": cold,
        "footprint": footprint,
        "machine_limit": machine,
        "e2e": e2e,
        "throughput": throughput,
    }
    results["cost"] = cost.cost_model(results, variant=cfg.variant)
    results["targets"] = targets.evaluate(results, variant=cfg.variant)
    timings["total"] = round(time.perf_counter() - started, 1)
    results["meta"]["section_seconds"] = timings
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report.render(results))
    _log(f"wrote {cfg.out} in {timings['total']:.0f}s")
    return 0


def _git_commit() -> str:
    """HEAD, with "+changes" when bench/ or functions/ differ from it (the measured code)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "bench", "functions", ":!bench/results.json")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+changes" if dirty else head


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("ai-edge-litert", "tensorflow-cpu", "keras", "numpy", "pillow"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out
