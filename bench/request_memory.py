"""What one request costs in memory, per decoded pixel, for each accepted upload format.

The function's memory budget (functions/segmentation/memory_budget.json, docs/performance.md
"Memory budget") charges every request `bytes_per_pixel x MAX_IMAGE_PIXELS` plus the encoded
upload. This measures the first factor: a fresh child process per (format, size) loads the
default model, reads the upload's bytes, resets its peak RSS (Linux `clear_refs` 5), runs the
function's own decode -> segment -> encode at full size and reports the new peak. The slope
between two sizes is the bytes per pixel; the worst format's slope is what the budget must cover.

    python -m bench.request_memory [--megapixels 4 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.throughput import status_kib

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO_ROOT / "models" / "default"
DEFAULT_MEGAPIXELS = (4.0, 16.0)
_ASPECT = 4 / 3


def _scene(width: int, height: int) -> np.ndarray:
    """A photo-like RGB array (gradients and noise), so encoders do realistic work."""
    rng = np.random.default_rng(7)
    x = np.linspace(0, 3.1, width, dtype=np.float32)
    y = np.linspace(0, 2.3, height, dtype=np.float32)[:, None]
    base = np.stack(
        [120 + 80 * np.sin(x + 0 * y), 110 + 70 * np.cos(y + 0 * x), 100 + 60 * np.sin(x + y)],
        axis=-1,
    )
    noise = rng.integers(-8, 9, size=(height, width, 1), dtype=np.int16)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _rgba(rgb: np.ndarray) -> Image.Image:
    alpha = np.full((*rgb.shape[:2], 1), 200, dtype=np.uint8)
    return Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA")


def _save(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


# Every accepted format, and within it the pixel modes that decode to the most memory.
CASES: dict[str, Callable[[np.ndarray], bytes]] = {
    "jpeg_rgb": lambda a: _save(Image.fromarray(a), "JPEG", quality=90),
    "png_rgb": lambda a: _save(Image.fromarray(a), "PNG", compress_level=1),
    "png_rgba": lambda a: _save(_rgba(a), "PNG", compress_level=1),
    "png_gray16": lambda a: _save(
        Image.fromarray(a[..., 0].astype(np.uint16) * 257).convert("I;16"), "PNG"
    ),
    "png_palette_transparent": lambda a: _save(
        Image.fromarray(a).quantize(64), "PNG", transparency=0, compress_level=1
    ),
    "webp_rgba": lambda a: _save(_rgba(a), "WEBP", lossless=False, quality=80),
    "gif": lambda a: _save(Image.fromarray(a).quantize(64), "GIF"),
}


def _child(case_path: str, model_dir: str) -> dict[str, Any]:
    """Runs in a fresh interpreter: one request's peak RSS above the loaded, idle process."""
    from segmentation import imaging
    from segmentation.manifest import parse_manifest
    from segmentation.model import SegmentationModel

    manifest = parse_manifest(json.loads((Path(model_dir) / "manifest.json").read_text()))
    model = SegmentationModel(Path(model_dir) / manifest.file, manifest)
    data = Path(case_path).read_bytes()  # the download: its bytes are charged separately
    imaging.configure_pillow(10**9)
    baseline = status_kib(os.getpid(), "VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    decoded = imaging.decode_image(data, max_pixels=10**9, size=manifest.input_size)
    prediction = model.segment(decoded.array)
    png = imaging.encode_mask(prediction.classes, decoded.original_size)
    peak = status_kib(os.getpid(), "VmHWM")
    width, height = decoded.original_size
    return {
        "pixels": width * height,
        "peak_above_idle_bytes": (peak - baseline) * 1024,
        "idle_rss_bytes": baseline * 1024,
        "mask_bytes": len(png),
    }


def measure(
    megapixels: tuple[float, ...] = DEFAULT_MEGAPIXELS, model_dir: Path = DEFAULT_MODEL
) -> dict[str, Any]:
    """{"cases": {case: {"bytes_per_pixel", "intercept_bytes", "points"}}, "worst": ...}."""
    cases: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="request-memory-") as tmp:
        for mp in megapixels:
            width = round((mp * 1e6 * _ASPECT) ** 0.5)
            height = round(mp * 1e6 / width)
            array = _scene(width, height)
            for name, encode in CASES.items():
                path = Path(tmp) / f"{name}-{mp:g}"
                path.write_bytes(encode(array))
                point = _run_child(path, model_dir)
                point["upload_bytes"] = path.stat().st_size
                cases.setdefault(name, {"points": []})["points"].append(point)
                path.unlink()
    for facts in cases.values():
        first, last = facts["points"][0], facts["points"][-1]
        slope = (last["peak_above_idle_bytes"] - first["peak_above_idle_bytes"]) / (
            last["pixels"] - first["pixels"]
        )
        facts["bytes_per_pixel"] = round(slope, 2)
        facts["intercept_bytes"] = round(first["peak_above_idle_bytes"] - slope * first["pixels"])
    worst = max(cases, key=lambda name: cases[name]["bytes_per_pixel"])
    idle = max(p["idle_rss_bytes"] for facts in cases.values() for p in facts["points"])
    return {
        "megapixels": list(megapixels),
        "cases": cases,
        "worst": {"case": worst, "bytes_per_pixel": cases[worst]["bytes_per_pixel"]},
        "idle_rss_bytes": idle,
    }


def _run_child(path: Path, model_dir: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.request_memory", "--child", str(path), str(model_dir)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{path.name}: child failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.request_memory", description=__doc__)
    parser.add_argument("--megapixels", type=float, nargs=2, default=DEFAULT_MEGAPIXELS)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child)))
        return 0
    result = measure(tuple(args.megapixels), args.model_dir)
    for name, facts in sorted(result["cases"].items(), key=lambda kv: -kv[1]["bytes_per_pixel"]):
        print(f"{name:26s} {facts['bytes_per_pixel']:7.2f} B/px  (+{facts['intercept_bytes']} B)")
    print(f"worst: {result['worst']['case']} {result['worst']['bytes_per_pixel']} B/px")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
