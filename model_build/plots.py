"""Pictures of a run, drawn with matplotlib (Agg backend, imported only when a picture is drawn):

    training-curve.png   loss and accuracy per epoch, training and validation, phases marked
    variant-chart.png    every TFLite variant's mIoU against its 1-thread latency (point size:
                         file size), the chosen one marked, Keras's mIoU and the tolerance floor
    history.json         {"history": [...]}: the per-epoch figures the curve is drawn from

Training writes history.json and training-curve.png next to its checkpoints (local or gs://) and
into --out after every epoch; evaluate copies the curve into <out>/model/ and draws the variant
chart there; publish uploads them with the version. `python -m model_build plots --out DIR`
draws both again for a run made before they existed.

Neither picture shows a dataset photo (quality.png does), so both may go anywhere. Nothing here
imports TensorFlow: the plots step answers without it.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segmentation.contract import MANIFEST_FILE

from model_build.layout import (
    DEFAULT_CHECKPOINTS,
    EVALUATION_FILE,
    HISTORY_FILE,
    MODEL_DIR,
    STATE_FILE,
    TRAINING_CURVE,
    TRAINING_FACTS,
    VARIANT_CHART,
)
from model_build.storage import LocalLocation, Location, open_location

log = logging.getLogger(__name__)

PNG = "image/png"
JSON = "application/json"

DPI = 100
CURVE_SIZE = (1200, 480)  # pixels: loss | accuracy
CHART_SIZE = (900, 600)
# Markers on every point while there are few enough to tell apart.
MARKER_LIMIT = 40
PANELS = (("loss", "loss", "val_loss"), ("accuracy", "accuracy", "val_accuracy"))
PHASE_SHADES = ("#f7f7f7", "#e3ecf9")
TRAIN_COLOUR = "#1f77b4"
VALIDATION_COLOUR = "#ff7f0e"
CHOSEN_COLOUR = "#d62728"
KERAS_COLOUR = "#2ca02c"
DEFAULT_THREADS = "1"


@dataclass(frozen=True)
class Phase:
    name: str
    first: int  # epoch numbers, inclusive
    last: int


def clean_history(history: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per epoch (the last one written wins), in epoch order."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for entry in history:
        if "epoch" in entry:
            by_epoch[int(entry["epoch"])] = dict(entry)
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def phases(history: Sequence[Mapping[str, Any]]) -> list[Phase]:
    """Consecutive runs of epochs in the same phase (a clean history)."""
    runs: list[Phase] = []
    for entry in history:
        name, epoch = str(entry.get("phase", "")), int(entry["epoch"])
        if runs and runs[-1].name == name:
            runs[-1] = Phase(name, runs[-1].first, epoch)
        else:
            runs.append(Phase(name, epoch, epoch))
    return runs


def training_curve(history: Iterable[Mapping[str, Any]], title: str | None = None) -> bytes:
    """The PNG (CURVE_SIZE) of a training history: loss and accuracy per epoch, validation
    dashed when the history has it, each phase shaded and named, the best validation loss
    marked. Raises ValueError for a history without epochs."""
    entries = clean_history(history)
    if not entries:
        raise ValueError("the training history has no epoch to draw")
    from matplotlib.ticker import MaxNLocator

    figure = _figure(CURVE_SIZE)
    runs = phases(entries)
    axes = figure.subplots(1, len(PANELS))
    for ax, (label, train_key, val_key) in zip(axes, PANELS, strict=True):
        _shade_phases(ax, runs)
        plotted = _plot_metric(ax, entries, train_key, "training", TRAIN_COLOUR, "-")
        plotted += _plot_metric(ax, entries, val_key, "validation", VALIDATION_COLOUR, "--")
        if label == "loss":
            _mark_best(ax, entries, val_key)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right" if label == "loss" else "lower right", fontsize="small")
        if not plotted:
            ax.text(
                0.5, 0.5, f"no {label} recorded", ha="center", va="center", transform=ax.transAxes
            )
        ax.set_xlim(entries[0]["epoch"] - 0.5, entries[-1]["epoch"] + 0.5)
    figure.suptitle(title or _curve_title(entries, runs))
    return _png(figure)


def variant_chart(
    evaluation: Mapping[str, Any],
    chosen: str | None = None,
    tolerance_points: float | None = None,
    title: str | None = None,
) -> bytes:
    """The PNG (CHART_SIZE) of an evaluation (evaluation.json): each variant's mIoU against its
    1-thread median latency, the point's area in proportion to the file size, `chosen` ringed,
    Keras's mIoU as a line and, with `tolerance_points`, the floor a variant had to reach."""
    variants = dict(evaluation.get("variants") or {})
    if not variants:
        raise ValueError("the evaluation has no variant to draw")
    threads = _threads(variants)
    points, unplotted = _variant_points(variants, threads)
    keras_miou = _number((evaluation.get("keras") or {}).get("miou"))
    floor = None
    if keras_miou is not None and tolerance_points is not None:
        floor = keras_miou - tolerance_points / 100.0
    figure = _figure(CHART_SIZE)
    ax = figure.subplots()
    largest = max((p.size for p in points), default=0.0) or 1.0
    lines = [keras_miou, floor]
    ys = [p.miou for p in points] + [v for v in lines if v is not None]
    spans = (_span([p.latency for p in points]), _span(ys))
    placed: list[_Point] = []
    for point in points:
        picked = point.name == chosen
        colour = CHOSEN_COLOUR if picked else TRAIN_COLOUR
        share = point.size / largest
        ax.scatter(
            [point.latency],
            [point.miou],
            s=60 + 1400 * share,
            color=colour,
            alpha=0.55,
            edgecolors=CHOSEN_COLOUR if picked else "black",
            linewidths=2.5 if picked else 0.8,
            zorder=3,
        )
        # Its figures in the legend (a marker of its own, sized like it); its name beside it,
        # raised above the names of the points already placed close by.
        ax.plot(
            [],
            [],
            "o",
            color=colour,
            alpha=0.55,
            markersize=5 + 9 * share,
            label=f"{point.name}{' (chosen)' if picked else ''}: {point.size / 1e6:.1f} MB, "
            f"mIoU {point.miou:.3f}, {point.latency:.1f} ms",
        )
        stacked = sum(1 for other in placed if _close(other, point, spans))
        placed.append(point)
        ax.annotate(
            point.name,
            (point.latency, point.miou),
            xytext=(12, 6 + 14 * stacked),
            textcoords="offset points",
            fontsize="small",
            fontweight="bold" if picked else "normal",
            arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.6} if stacked else None,
        )
    if keras_miou is not None:
        ax.axhline(keras_miou, color=KERAS_COLOUR, label=f"Keras mIoU {keras_miou:.3f}")
    if floor is not None:
        ax.axhline(
            floor,
            color=KERAS_COLOUR,
            linestyle=":",
            label=f"tolerance floor {floor:.3f} (Keras - {tolerance_points:g} mIoU points)",
        )
    ax.legend(loc="best", fontsize="small", title="point area: file size", title_fontsize="small")
    if unplotted:
        ax.text(
            0.01,
            0.01,
            f"not scored: {', '.join(unplotted)}",
            transform=ax.transAxes,
            fontsize="small",
            va="bottom",
        )
    ax.margins(x=0.25, y=0.2)
    ax.set_xlabel(f"median latency per image, {threads} thread(s) (ms)")
    ax.set_ylabel("mIoU (test split)")
    ax.grid(alpha=0.3)
    examples = evaluation.get("examples")
    default_title = "TFLite variants" + (f" on {examples} test examples" if examples else "")
    if evaluation.get("version"):
        default_title += f": {evaluation['version']}"
    figure.suptitle(title or default_title)
    return _png(figure)


# --- where the pictures go -------------------------------------------------------------------


def write_training_history(
    history: Sequence[Mapping[str, Any]], locations: Iterable[Location], title: str | None = None
) -> list[str]:
    """Writes history.json and training-curve.png into every location; returns their URIs."""
    entries = clean_history(history)
    curve = training_curve(entries, title)
    document = json.dumps({"history": entries}, indent=2).encode() + b"\n"
    written = []
    for location in locations:
        location.write_bytes(HISTORY_FILE, document, content_type=JSON)
        location.write_bytes(TRAINING_CURVE, curve, content_type=PNG)
        written.append(_uri(location, TRAINING_CURVE))
    return written


def write_variant_chart(
    evaluation: Mapping[str, Any], manifest: Mapping[str, Any] | None, location: Location
) -> str:
    """Draws variant-chart.png into `location` from evaluation.json and the chosen manifest."""
    manifest = manifest or {}
    tolerance = (manifest.get("selection") or {}).get("tolerance_miou_points")
    chart = variant_chart(evaluation, manifest.get("quantization"), tolerance)
    location.write_bytes(VARIANT_CHART, chart, content_type=PNG)
    return _uri(location, VARIANT_CHART)


def redraw(out: Path, checkpoint_dir: str | None = None) -> list[str]:
    """Draws a finished (or running) run's pictures again from what it left in `out`:
    the training curve from the checkpoints' state.json (`checkpoint_dir`, default
    <out>/checkpoints) or else from <out>/training.json, into <out>/, <out>/model/ and next to
    the checkpoints it came from; the variant chart from <out>/evaluation.json and
    <out>/model/manifest.json into <out>/model/. Returns what it wrote; FileNotFoundError when
    there is nothing to draw from."""
    written: list[str] = []
    model_dir = out / MODEL_DIR
    history, source = _find_history(out, checkpoint_dir)
    if history:
        targets: list[Location] = [LocalLocation(out)]
        if model_dir.is_dir():
            targets.append(LocalLocation(model_dir))
        if source is not None:
            targets.append(source)
        written += write_training_history(history, targets)
    evaluation_path = out / EVALUATION_FILE
    if evaluation_path.exists():
        manifest_path = model_dir / MANIFEST_FILE
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
        target = LocalLocation(model_dir if model_dir.is_dir() else out)
        evaluation = json.loads(evaluation_path.read_text())
        written.append(write_variant_chart(evaluation, manifest, target))
    if not written:
        raise FileNotFoundError(
            f"nothing to draw in {out}: no training history (checkpoints' {STATE_FILE}, "
            f"{TRAINING_FACTS}) and no {EVALUATION_FILE}"
        )
    return written


def _find_history(
    out: Path, checkpoint_dir: str | None
) -> tuple[list[dict[str, Any]], Location | None]:
    """(history, the checkpoint location it came from, None for training.json)."""
    checkpoints = open_location(checkpoint_dir or str(out / DEFAULT_CHECKPOINTS))
    try:
        state = json.loads(checkpoints.read_bytes(STATE_FILE))
    except FileNotFoundError:
        if checkpoint_dir:  # named explicitly: say so rather than draw something else
            raise
    else:
        history = clean_history(state.get("history") or [])
        if history:
            return history, checkpoints
    facts_path = out / TRAINING_FACTS
    if facts_path.exists():
        return clean_history(json.loads(facts_path.read_text()).get("history") or []), None
    return [], None


# --- drawing ---------------------------------------------------------------------------------


def _figure(size: tuple[int, int]) -> Any:
    # The object-oriented API on an Agg canvas: no pyplot, no global backend, no GUI.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _plot_metric(
    ax: Any, entries: Sequence[Mapping[str, Any]], key: str, label: str, colour: str, style: str
) -> int:
    points = [(e["epoch"], v) for e in entries if (v := _number(e.get(key))) is not None]
    if not points:
        return 0
    epochs, values = zip(*points, strict=True)
    marker = "o" if len(points) <= MARKER_LIMIT else None
    ax.plot(epochs, values, style, color=colour, marker=marker, markersize=3, label=label)
    return 1


def _mark_best(ax: Any, entries: Sequence[Mapping[str, Any]], key: str) -> None:
    points = [(v, e["epoch"]) for e in entries if (v := _number(e.get(key))) is not None]
    if not points:
        return
    value, epoch = min(points)
    ax.plot(
        [epoch],
        [value],
        "*",
        color=VALIDATION_COLOUR,
        markersize=12,
        markeredgecolor="black",
        label=f"best {key} {value:.4f} (epoch {epoch})",
    )


def _shade_phases(ax: Any, runs: Sequence[Phase]) -> None:
    """Each phase a band of its own shade, named in the legend; a dotted line between two."""
    for index, phase in enumerate(runs):
        span = (
            f"epoch {phase.first}"
            if phase.first == phase.last
            else (f"epochs {phase.first}-{phase.last}")
        )
        ax.axvspan(
            phase.first - 0.5,
            phase.last + 0.5,
            facecolor=PHASE_SHADES[index % len(PHASE_SHADES)],
            edgecolor="lightgrey",
            zorder=0,
            label=f"phase {phase.name or '?'} ({span})",
        )
        if index:
            ax.axvline(phase.first - 0.5, color="grey", linestyle=":", linewidth=1)


def _curve_title(entries: Sequence[Mapping[str, Any]], runs: Sequence[Phase]) -> str:
    spans = ", ".join(
        f"{p.name} {p.first}" if p.first == p.last else f"{p.name} {p.first}-{p.last}" for p in runs
    )
    last = entries[-1]
    figures = [
        f"{key} {value:.4f}"
        for key in ("loss", "val_loss", "accuracy", "val_accuracy")
        if (value := _number(last.get(key))) is not None
    ]
    count = f"{len(entries)} epoch{'s' if len(entries) != 1 else ''}"
    return f"training: {count} ({spans}); last epoch: {', '.join(figures)}"


@dataclass(frozen=True)
class _Point:
    name: str
    latency: float
    miou: float
    size: float


def _variant_points(
    variants: Mapping[str, Mapping[str, Any]], threads: str
) -> tuple[list[_Point], list[str]]:
    """The variants that have a score and a latency, fastest first; the names of the others."""
    points, unplotted = [], []
    for name, result in sorted(variants.items()):
        miou = _number(result.get("miou"))
        latency = _number((result.get("latency_ms") or {}).get(threads))
        if miou is None or latency is None:
            unplotted.append(name)
            continue
        points.append(_Point(name, latency, miou, float(result.get("size_bytes") or 0)))
    return sorted(points, key=lambda p: (p.latency, -p.miou)), unplotted


def _span(values: Sequence[float]) -> float:
    return (max(values) - min(values)) if values else 0.0


def _close(a: _Point, b: _Point, spans: tuple[float, float]) -> bool:
    """Near enough on the chart for their names to collide (a share of each axis' span)."""
    x_span, y_span = spans
    return abs(a.latency - b.latency) <= 0.15 * x_span + 1e-9 and (
        abs(a.miou - b.miou) <= 0.1 * y_span + 1e-9
    )


def _threads(variants: Mapping[str, Mapping[str, Any]]) -> str:
    """The thread count the chart uses: 1 (the function's default) when measured."""
    measured = {str(t) for v in variants.values() for t in (v.get("latency_ms") or {})}
    if DEFAULT_THREADS in measured or not measured:
        return DEFAULT_THREADS
    return min(measured, key=lambda t: (not t.isdigit(), int(t) if t.isdigit() else 0, t))


def _number(value: Any) -> float | None:
    """A finite float, or None (absent, null, NaN)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _uri(location: Location, name: str) -> str:
    return f"{location.uri.rstrip('/')}/{name}"
