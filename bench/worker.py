"""Measurement children. Each runs in a fresh process so that thread counts (fixed at process start
for TensorFlow and BLAS) and cold starts are real; the parent (`bench.run`) sets the environment
and reads one JSON document from the last line of stdout.

    python -m bench.worker latency   --models DIR --threads N --engines E,E --images A,B ...
    python -m bench.worker coldstart --models DIR --threads N --engine E --image A
    python -m bench.worker sgemm     --size 1024 --repeats 15
    python -m bench.worker int8limit --models DIR --threads N --repeats 30

Only the standard library is imported at module level: a cold-start child's clock starts with the
interpreter, and everything it imports after that is part of what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"


def _emit(document: dict) -> None:
    sys.stdout.write("\n" + json.dumps(document) + "\n")
    sys.stdout.flush()


def _peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM belongs to the address space exec created, while
    getrusage's ru_maxrss can carry the forking parent's peak across fork + exec."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


# --- latency ---------------------------------------------------------------------------------


def latency(args: argparse.Namespace) -> dict:
    """Per-image pipeline latency (decode -> predict -> encode) and model-only latency.

    All engines of this process are loaded first; then every round runs each engine on each
    image once, so load drift on a shared machine hits all engines alike.
    """
    import numpy as np
    from segmentation import imaging
    from segmentation.settings import DEFAULT_MAX_IMAGE_PIXELS

    from bench.engines import load_engine

    imaging.configure_pillow(DEFAULT_MAX_IMAGE_PIXELS)
    engines = {name: load_engine(name, Path(args.models), args.threads) for name in args.engines}
    images = {Path(p).stem: Path(p).read_bytes() for p in args.images}
    samples: dict[tuple[str, str], dict[str, list[float]]] = {
        (e, i): {"total": [], "decode": [], "infer": [], "encode": []}
        for e in engines
        for i in images
    }

    def run_once(engine, data: bytes) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        decoded = imaging.decode_image(
            data, max_pixels=DEFAULT_MAX_IMAGE_PIXELS, size=engine.input_size
        )
        t1 = time.perf_counter()
        classes = engine.predict(decoded.array)
        t2 = time.perf_counter()
        png = imaging.encode_mask(classes, decoded.original_size)
        t3 = time.perf_counter()
        if not png.startswith(b"\x89PNG"):
            raise RuntimeError("encode_mask did not return a PNG")
        return t1 - t0, t2 - t1, t3 - t2

    for _ in range(args.warmup):
        for engine in engines.values():
            for data in images.values():
                run_once(engine, data)
    for _ in range(args.repeats):
        for name, engine in engines.items():
            for image, data in images.items():
                decode, infer, encode = run_once(engine, data)
                slot = samples[(name, image)]
                slot["decode"].append(decode)
                slot["infer"].append(infer)
                slot["encode"].append(encode)
                slot["total"].append(decode + infer + encode)

    # Model only: the interpreter/TF call on a ready 128x128 array, no decode or encode.
    rng = np.random.default_rng(0)
    model_only: dict[str, list[float]] = {name: [] for name in engines}
    arrays = {
        name: rng.integers(0, 256, (e.input_size[1], e.input_size[0], 3), dtype=np.uint8)
        for name, e in engines.items()
    }
    for round_ in range(args.warmup + args.model_repeats):
        for name, engine in engines.items():
            t0 = time.perf_counter()
            engine.predict(arrays[name])
            if round_ >= args.warmup:
                model_only[name].append(time.perf_counter() - t0)

    rows = []
    for (engine, image), slot in samples.items():
        rows.append(
            {
                "engine": engine,
                "threads": args.threads,
                "image": image,
                "repeats": len(slot["total"]),
                **{f"{stage}_ms": _ms(statistics.median(v)) for stage, v in slot.items()},
                "total_p90_ms": _ms(quantile(slot["total"], 0.9)),
            }
        )
    return {
        "pipeline": rows,
        "model_only": [
            {
                "engine": name,
                "threads": args.threads,
                "repeats": len(values),
                "median_ms": _ms(statistics.median(values)),
                "min_ms": _ms(min(values)),
            }
            for name, values in model_only.items()
        ],
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile: the one rule of every p50/p90/p95 the bench reports."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- cold start ------------------------------------------------------------------------------


def coldstart(args: argparse.Namespace) -> dict:
    """From here (interpreter up) to the first mask, the way an instance starts: import main.py
    (functions-framework, storage client, settings), load the model, decode, predict, encode.
    The parent adds the interpreter's own start-up by timing from before it spawned us."""
    marks = {"interpreter_up": time.time()}
    sys.path.insert(0, str(FUNCTIONS_DIR))
    import main  # the deployed entry module: settings, store, lazy model

    marks["imported_main"] = time.time()
    if args.engine.startswith("litert:"):
        model = main.MODEL.get()  # load_model from MODEL_URI, as on the first request
    else:
        from segmentation.model import LazyModel

        from bench.engines import TensorFlowModel

        keras_path = Path(args.models) / "unet.keras"
        main.MODEL = LazyModel(
            lambda: TensorFlowModel(keras_path, mode=args.engine, threads=args.threads)
        )
        model = main.MODEL.get()
    marks["model_loaded"] = time.time()
    from segmentation import imaging

    data = Path(args.image).read_bytes()
    decoded = imaging.decode_image(
        data, max_pixels=main.SETTINGS.max_image_pixels, size=model.input_size
    )
    png = imaging.encode_mask(model.predict(decoded.array), decoded.original_size)
    marks["first_mask"] = time.time()
    if not png.startswith(b"\x89PNG"):
        raise RuntimeError("no PNG")
    document = {"engine": args.engine, "marks": marks, "peak_rss_mib": round(_peak_rss_mib(), 1)}
    if args.large_image:  # the instance's working set once it has also served a large upload
        large = imaging.decode_image(
            Path(args.large_image).read_bytes(),
            max_pixels=main.SETTINGS.max_image_pixels,
            size=model.input_size,
        )
        imaging.encode_mask(model.predict(large.array), large.original_size)
        document["peak_rss_after_large_mib"] = round(_peak_rss_mib(), 1)
    return document


def coldfloor(args: argparse.Namespace) -> dict:
    """The floor under any LiteRT cold start: from here (interpreter up) through importing numpy
    and LiteRT, loading the model and one inference, with nothing of the function (no
    framework, storage client, settings, decode or encode). The parent adds the interpreter's
    own start-up by timing from before it spawned us."""
    marks = {"interpreter_up": time.time()}
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    marks["imported"] = time.time()
    interpreter = Interpreter(model_path=args.model, num_threads=args.threads)
    interpreter.allocate_tensors()
    marks["model_loaded"] = time.time()
    entry = interpreter.get_input_details()[0]
    interpreter.set_tensor(entry["index"], np.zeros(entry["shape"], entry["dtype"]))
    interpreter.invoke()
    marks["first_inference"] = time.time()
    return {"marks": marks}


# --- machine limit ---------------------------------------------------------------------------


def sgemm(args: argparse.Namespace) -> dict:
    """float32 matrix multiply GFLOP/s with the BLAS thread count the parent set."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = args.size
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    for _ in range(3):
        np.matmul(a, b, out=out)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    flops = 2.0 * n**3
    return {
        "size": n,
        "repeats": args.repeats,
        "median_gflops": round(flops / statistics.median(times) / 1e9, 2),
        "best_gflops": round(flops / min(times) / 1e9, 2),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }


def int8limit(args: argparse.Namespace) -> dict:
    """int8 ops/s of each bench.int8_limit model on the function's interpreter class."""
    import numpy as np
    from segmentation.model import interpreter_class

    index = json.loads((Path(args.models) / "limit.json").read_text())
    factory = interpreter_class()
    rng = np.random.default_rng(0)
    models = []
    for name, entry in index.items():
        interpreter = factory(
            model_path=str(Path(args.models) / entry["file"]), num_threads=args.threads
        )
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        data = rng.integers(-128, 128, detail["shape"], dtype=np.int8)
        interpreter.set_tensor(detail["index"], data)
        for _ in range(3):
            interpreter.invoke()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - t0)
        ops = entry["ops_per_invoke"]
        models.append(
            {
                "name": name,
                "ops_per_invoke": ops,
                "input_dtype": np.dtype(detail["dtype"]).name,
                "best_ms": _ms(min(times)),
                "median_ms": _ms(statistics.median(times)),
                "best_gops": round(ops / min(times) / 1e9, 2),
                "median_gops": round(ops / statistics.median(times) / 1e9, 2),
            }
        )
    return {"threads": args.threads, "repeats": args.repeats, "models": models}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    sub = parser.add_subparsers(dest="command", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--models", required=True)
    lat.add_argument("--threads", type=int, required=True)
    lat.add_argument("--engines", type=lambda s: s.split(","), required=True)
    lat.add_argument("--images", type=lambda s: s.split(","), required=True)
    lat.add_argument("--warmup", type=int, default=3)
    lat.add_argument("--repeats", type=int, default=15)
    lat.add_argument("--model-repeats", type=int, default=30)
    cold = sub.add_parser("coldstart")
    cold.add_argument("--models", required=True)
    cold.add_argument("--threads", type=int, required=True)
    cold.add_argument("--engine", required=True)
    cold.add_argument("--image", required=True)
    cold.add_argument("--large-image")
    floor = sub.add_parser("coldfloor")
    floor.add_argument("--model", required=True)
    floor.add_argument("--threads", type=int, required=True)
    gemm = sub.add_parser("sgemm")
    gemm.add_argument("--size", type=int, default=1024)
    gemm.add_argument("--repeats", type=int, default=15)
    limit = sub.add_parser("int8limit")
    limit.add_argument("--models", required=True)
    limit.add_argument("--threads", type=int, required=True)
    limit.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    handler = {
        "latency": latency,
        "coldstart": coldstart,
        "coldfloor": coldfloor,
        "sgemm": sgemm,
        "int8limit": int8limit,
    }[args.command]
    _emit(handler(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
