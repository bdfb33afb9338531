"""The run's pictures (model_build/plots.py): the training curve, the variant chart, where
training, evaluate, publish and `python -m model_build plots` put them."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from PIL import Image

from model_build import plots
from model_build.storage import GcsLocation, LocalLocation
from tests.conftest import REPO_ROOT

from .fabricate import evaluation, model_dir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _history(head: int, fine_tune: int = 0, validation: bool = True) -> list[dict]:
    history = []
    for epoch in range(1, head + fine_tune + 1):
        entry = {
            "epoch": epoch,
            "phase": "head" if epoch <= head else "fine_tune",
            "loss": round(1.0 / epoch, 5),
            "accuracy": round(1 - 0.5 / epoch, 5),
        }
        if validation:
            entry |= {"val_loss": round(1.1 / epoch + 0.01 * epoch, 5), "val_accuracy": 0.8}
        history.append(entry)
    return history


def _evaluation_report() -> dict:
    """evaluation.json as the evaluate step writes it (a fabricated evaluation)."""
    return {
        **evaluation().to_json(),
        "selection": {"tolerance_miou_points": 1.0, "threads": 1},
        "version": "20260102-030405-abcdef12",
    }


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        image.verify()  # a complete, uncorrupted PNG
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


# --- the pictures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "history",
    [
        _history(20, 10),  # two phases, validation
        _history(5, validation=False),  # one phase, no validation
        _history(1, validation=False),  # the first epoch of a run
        _history(150, 250),  # a long run: a few hundred points
    ],
    ids=["two-phases", "no-validation", "one-epoch", "long"],
)
def test_the_training_curve_is_a_png_of_the_expected_size(history):
    assert _png_size(plots.training_curve(history)) == plots.CURVE_SIZE


def test_the_training_curve_marks_both_phases_and_reads_a_resumed_history():
    history = _history(3, 2)
    assert plots.phases(history) == [plots.Phase("head", 1, 3), plots.Phase("fine_tune", 4, 5)]
    # An epoch recorded twice (a retried write) counts once, the later entry winning.
    repeated = [*history, dict(history[1], loss=0.123)]
    cleaned = plots.clean_history(repeated)
    assert [e["epoch"] for e in cleaned] == [1, 2, 3, 4, 5] and cleaned[1]["loss"] == 0.123
    assert _png_size(plots.training_curve(repeated)) == plots.CURVE_SIZE


def test_a_history_without_epochs_is_refused():
    with pytest.raises(ValueError, match="no epoch"):
        plots.training_curve([])


def test_the_variant_chart_is_a_png_of_the_expected_size():
    report = _evaluation_report()
    assert _png_size(plots.variant_chart(report, "int8", 1.0)) == plots.CHART_SIZE
    # Without a chosen variant or tolerance, an unscored (NaN) variant and 2-thread latency only.
    report["variants"]["float16"] = dict(
        report["variants"]["float32"], variant="float16", miou=math.nan
    )
    for result in report["variants"].values():
        result["latency_ms"] = {"2": result["latency_ms"]["2"]}
    assert _png_size(plots.variant_chart(report)) == plots.CHART_SIZE


def test_a_chart_without_variants_is_refused():
    with pytest.raises(ValueError, match="no variant"):
        plots.variant_chart({"keras": {"miou": 0.5}, "variants": {}})


def test_the_history_and_curve_go_to_every_location(tmp_path):
    first, second = LocalLocation(tmp_path / "a"), LocalLocation(tmp_path / "b")
    written = plots.write_training_history(_history(2, 1), [first, second])
    assert written == [f"{tmp_path}/a/training-curve.png", f"{tmp_path}/b/training-curve.png"]
    for folder in ("a", "b"):
        saved = json.loads((tmp_path / folder / plots.HISTORY_FILE).read_text())
        assert [e["phase"] for e in saved["history"]] == ["head", "head", "fine_tune"]
        png = (tmp_path / folder / plots.TRAINING_CURVE).read_bytes()
        assert _png_size(png) == plots.CURVE_SIZE


def test_pictures_reach_cloud_storage_as_image_png():
    client = mock.MagicMock()
    blob = client.bucket.return_value.blob.return_value
    location = GcsLocation("gs://models/checkpoints/run-1", client=client)
    plots.write_training_history(_history(2), [location])
    types = {
        c.args[0][:4]: c.kwargs.get("content_type") for c in blob.upload_from_string.mock_calls
    }
    assert types == {PNG_SIGNATURE[:4]: "image/png", b"{\n  ": "application/json"}
    assert client.bucket.return_value.blob.call_args_list[-1].args == (
        "checkpoints/run-1/training-curve.png",
    )
    # Writes that name no content type are left to the client's default, as before.
    blob.reset_mock()
    location.write_bytes("state.json", b"{}")
    blob.upload_from_string.assert_called_once_with(b"{}")


# --- training, evaluate and publish ------------------------------------------------------------


def test_training_writes_the_curve_next_to_its_checkpoints_and_into_out(tmp_path):
    from model_build.checkpoints import CheckpointStore, TrainingState
    from model_build.train import TrainingPictures, write_training_pictures

    store = CheckpointStore(str(tmp_path / "checkpoints"))
    state = TrainingState(history=_history(2, 1))
    callback = TrainingPictures(store, state, tmp_path / "out")
    callback.on_epoch_end(2)
    for folder in ("checkpoints", "out"):
        png = (tmp_path / folder / plots.TRAINING_CURVE).read_bytes()
        assert _png_size(png) == plots.CURVE_SIZE
        assert (tmp_path / folder / plots.HISTORY_FILE).exists()
    # No epoch yet: nothing to draw, nothing written; a failing picture never stops training.
    write_training_pictures(store, TrainingState(), tmp_path / "empty")
    assert not (tmp_path / "empty").exists()
    with mock.patch.object(plots, "write_training_history", side_effect=OSError("disk full")):
        write_training_pictures(store, state, tmp_path / "out")


def test_the_training_callback_draws_after_every_epoch(tmp_path):
    from model_build.checkpoints import CheckpointStore, TrainingState
    from model_build.train import TrainConfig, _callbacks

    from .test_train import _flat_loss_fit

    config = TrainConfig(out=str(tmp_path), validation_fraction=0)
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    state = TrainingState()
    assert _flat_loss_fit(_callbacks(config, store, state, "head", tmp_path), 0, 2) == 2
    saved = json.loads((tmp_path / "checkpoints" / plots.HISTORY_FILE).read_text())
    assert [e["epoch"] for e in saved["history"]] == [1, 2]
    assert _png_size((tmp_path / plots.TRAINING_CURVE).read_bytes()) == plots.CURVE_SIZE


def test_evaluate_copies_the_curve_and_draws_the_chart_into_the_model_dir(tmp_path):
    from model_build import steps

    out = tmp_path / "run"
    _, chosen = model_dir(out / steps.MODEL_DIR)
    report = _evaluation_report()
    # A run older than the curve: drawn from training.json's history.
    (out / "training.json").write_text(json.dumps({"history": _history(3)}))
    steps._write_pictures(out, report, chosen)
    curve = (out / steps.MODEL_DIR / plots.TRAINING_CURVE).read_bytes()
    assert _png_size(curve) == plots.CURVE_SIZE
    chart = (out / steps.MODEL_DIR / plots.VARIANT_CHART).read_bytes()
    assert _png_size(chart) == plots.CHART_SIZE
    # Training's own curve in <out> is copied as it is.
    (out / plots.TRAINING_CURVE).write_bytes(b"train's curve")
    steps._write_pictures(out, report, chosen)
    assert (out / steps.MODEL_DIR / plots.TRAINING_CURVE).read_bytes() == b"train's curve"


def _with_pictures(path: Path) -> dict[str, bytes]:
    pictures = {name: PNG_SIGNATURE + name.encode() for name in ("quality.png",)}
    pictures[plots.TRAINING_CURVE] = plots.training_curve(_history(2, 1))
    pictures[plots.VARIANT_CHART] = plots.variant_chart(_evaluation_report(), "int8", 1.0)
    for name, data in pictures.items():
        (path / name).write_bytes(data)
    return pictures


def test_publish_uploads_the_pictures_before_the_manifest(tmp_path, monkeypatch):
    from model_build import publish as publish_lib

    path, chosen = model_dir(tmp_path / "model", b"model with pictures")
    pictures = _with_pictures(path)
    order = []
    real_write = LocalLocation.write_bytes

    def recording_write(self, name, data, **kwargs):
        order.append((name, kwargs.get("content_type")))
        return real_write(self, name, data, **kwargs)

    monkeypatch.setattr(LocalLocation, "write_bytes", recording_write)
    done = publish_lib.publish(path, str(tmp_path / "registry"))
    version_dir = tmp_path / "registry" / "unet" / chosen["version"]
    for name, data in pictures.items():
        assert (version_dir / name).read_bytes() == data
    names = [name for name, _ in order]
    assert names[0] == "model.tflite" and names.index("manifest.json") > max(
        names.index(name) for name in pictures
    )
    assert {t for name, t in order if name in pictures} == {"image/png"}
    assert done.latest_moved and not done.already_published
    # A retry finds the version complete and writes nothing into it.
    order.clear()
    again = publish_lib.publish(path, str(tmp_path / "registry"))
    assert again.already_published and not [n for n, _ in order if n != "latest.json"]


def test_publish_still_publishes_a_model_dir_without_pictures(tmp_path):
    from model_build import publish as publish_lib

    path, chosen = model_dir(tmp_path / "model", b"model without pictures")
    done = publish_lib.publish(path, str(tmp_path / "registry"))
    version_dir = tmp_path / "registry" / "unet" / chosen["version"]
    assert sorted(p.name for p in version_dir.iterdir()) == ["manifest.json", "model.tflite"]
    assert done.latest_moved


def test_the_pictures_publish_uploads_are_the_ones_segment_lists():
    from model_build import publish as publish_lib
    from model_build import steps
    from segment.models import PICTURES as LISTED

    assert set(LISTED.values()) <= set(publish_lib.PICTURES)
    assert steps.QUALITY_SHEET in publish_lib.PICTURES


def test_the_run_layout_has_one_owner():
    """Every step names the run directory's files through model_build.layout (TF-free)."""
    from model_build import checkpoints, layout, steps, train
    from model_build import publish as publish_lib

    assert plots.STATE_FILE is layout.STATE_FILE is checkpoints.STATE_FILE
    assert plots.TRAINING_FACTS is layout.TRAINING_FACTS is train.TRAINING_FACTS
    assert train.TrainConfig(out="o").checkpoint_uri == str(Path("o") / layout.DEFAULT_CHECKPOINTS)
    assert steps.EVALUATION_FILE is layout.EVALUATION_FILE and steps.MODEL_DIR is layout.MODEL_DIR
    assert steps.QUALITY_SHEET in publish_lib.PICTURES


# --- python -m model_build plots ---------------------------------------------------------------


def _fabricated_run(out: Path, history: list[dict] | None = None) -> dict:
    """A run directory as an older `model_build all` left it: checkpoints/state.json with the
    history, evaluation.json and model/ (model.tflite + manifest.json), and no picture."""
    _, chosen = model_dir(out / "model")
    state = {"epoch": 5, "phase": "fine_tune", "complete": True}
    state["history"] = history if history is not None else _history(3, 2)
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "state.json").write_text(json.dumps(state))
    (out / "evaluation.json").write_text(json.dumps(_evaluation_report()))
    return chosen


def test_the_plots_step_redraws_an_older_runs_pictures(tmp_path, capsys):
    from model_build.cli import main

    out = tmp_path / "run"
    _fabricated_run(out)
    assert main(["plots", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for folder in (out, out / "model", out / "checkpoints"):
        png = (folder / plots.TRAINING_CURVE).read_bytes()
        assert _png_size(png) == plots.CURVE_SIZE
        assert f"wrote {folder / plots.TRAINING_CURVE}" in printed
    saved = json.loads((out / "checkpoints" / plots.HISTORY_FILE).read_text())
    assert len(saved["history"]) == 5
    chart = (out / "model" / plots.VARIANT_CHART).read_bytes()
    assert _png_size(chart) == plots.CHART_SIZE


def test_the_plots_step_falls_back_to_training_json(tmp_path):
    from model_build.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "training.json").write_text(json.dumps({"history": _history(4, validation=False)}))
    assert main(["plots", "--out", str(out)]) == 0
    assert _png_size((out / plots.TRAINING_CURVE).read_bytes()) == plots.CURVE_SIZE
    assert not (out / plots.VARIANT_CHART).exists()  # no evaluation.json: no chart


def test_the_plots_step_says_when_there_is_nothing_to_draw(tmp_path, capsys):
    from model_build.cli import main

    assert main(["plots", "--out", str(tmp_path)]) == 1
    assert "nothing to draw" in capsys.readouterr().err
    missing = str(tmp_path / "elsewhere")
    assert main(["plots", "--out", str(tmp_path), "--checkpoint-dir", missing]) == 1
    assert "state.json" in capsys.readouterr().err


def test_the_plots_step_loads_no_tensorflow(tmp_path):
    out = tmp_path / "run"
    _fabricated_run(out)
    probe = (
        "import sys\n"
        "from model_build.cli import main\n"
        f"code = main(['plots', '--out', {str(out)!r}])\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert result.stdout.strip().splitlines()[-1] == "0 []"
    assert (out / "model" / plots.VARIANT_CHART).exists()
