"""`python -m model_build all` end to end on tiny synthetic data, and the runtimes the function
supports loading what the manifest chose."""

import json
import shutil
import subprocess

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from model_build import manifest as manifest_lib
from model_build.config import RECIPE_KEYS
from model_build.convert import VARIANTS
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TFLITE_PYTHON = REPO_ROOT / ".venv-tflite" / "bin" / "python"

# Runs in the Python 3.11 virtualenv that has tflite-runtime 2.14 (numpy<2) and nothing else.
TFLITE_RUNTIME_PROBE = """
import json, sys
import numpy as np
from tflite_runtime.interpreter import Interpreter
out = {}
for path in sys.argv[1:]:
    try:
        it = Interpreter(model_path=path, num_threads=1)
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        x = np.random.default_rng(0).integers(0, 256, i["shape"], dtype=np.uint8)
        it.set_tensor(i["index"], x)
        it.invoke()
        out[path] = {"ok": True, "classes": it.get_tensor(o["index"])[0].argmax(-1).tolist()}
    except Exception as exc:
        out[path] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(out))
"""


def _litert_classes(path, image):
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], image)
    interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return output[0].argmax(-1)


def test_the_chain_produces_a_model_directory_with_real_metrics(model_run_dir):
    evaluation = json.loads((model_run_dir / "evaluation.json").read_text())
    assert set(evaluation["variants"]) == set(VARIANTS)
    for name in VARIANTS:
        assert (model_run_dir / "tflite" / f"{name}.tflite").stat().st_size > 1_000_000

    model_bytes, chosen = manifest_lib.read_model_dir(model_run_dir / "model")
    picked = evaluation["variants"][chosen["quantization"]]
    # The manifest's figures are the evaluation's, for the variant whose bytes it describes.
    assert chosen["metrics"]["tflite"]["miou"] == picked["miou"]
    assert chosen["metrics"]["tflite"]["latency_ms"] == picked["latency_ms"]
    assert chosen["metrics"]["keras"] == evaluation["keras"]
    assert chosen["metrics"]["data"]["examples"] == 12
    variant_bytes = (model_run_dir / "tflite" / f"{chosen['quantization']}.tflite").read_bytes()
    assert model_bytes == variant_bytes
    assert chosen["training"]["epochs"] == 2 and chosen["training"]["dataset"] == "synthetic"
    recipe = {k: chosen["training"][k] for k in ("loss", "augmentation", "lr_schedule")}
    assert recipe == {"loss": "ce_dice", "augmentation": "strong", "lr_schedule": "cosine"}
    assert set(RECIPE_KEYS) <= set(chosen["training"])  # every setting that tells recipes apart
    assert chosen["selection"]["tolerance_miou_points"] == 1.0
    # float32 is the Keras graph itself: its masks agree with Keras almost everywhere.
    assert evaluation["variants"]["float32"]["agreement_with_keras"] > 0.99


def test_litert_loads_the_chosen_model_with_the_manifest_contract(tflite_model_dir):
    _, chosen = manifest_lib.read_model_dir(tflite_model_dir)
    interpreter = Interpreter(model_path=str(tflite_model_dir / "model.tflite"))
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    assert detail["shape"].tolist() == chosen["input"]["shape"]
    assert np.dtype(detail["dtype"]).name == chosen["input"]["dtype"]
    output = interpreter.get_output_details()[0]
    assert output["shape"].tolist() == chosen["output"]["shape"]


def test_tflite_runtime_loads_what_the_manifest_chooses(model_run_dir):
    if not TFLITE_PYTHON.exists():
        pytest.fail(".venv-tflite is missing: `make setup` builds it")
    chosen = json.loads((model_run_dir / "model" / "manifest.json").read_text())
    paths = [str(model_run_dir / "model" / "model.tflite")]
    paths += [str(model_run_dir / "tflite" / f"{v}.tflite") for v in VARIANTS]
    result = subprocess.run(
        [str(TFLITE_PYTHON), "-c", TFLITE_RUNTIME_PROBE, *paths],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    loaded = json.loads(result.stdout)
    chosen_result = loaded[paths[0]]
    assert chosen_result["ok"], f"tflite-runtime cannot load the chosen model: {chosen_result}"
    # tflite-runtime and LiteRT give the same masks for the chosen model.
    image = np.random.default_rng(0).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    litert = _litert_classes(paths[0], image)
    assert np.mean(np.array(loaded[paths[0]]["classes"]) == litert) > 0.99
    print(chosen["quantization"], {p.rsplit("/", 1)[-1]: r["ok"] for p, r in loaded.items()})


def test_evaluate_draws_the_worst_and_best_examples_next_to_the_manifest(model_run_dir):
    from PIL import Image

    from model_build import plots

    sheet = model_run_dir / "model" / "quality.png"
    with Image.open(sheet) as image:
        assert image.format == "PNG"
        assert image.width > 900 and image.height > 4 * 160  # two panels of up to 4 rows
    # Train's curve (beside the checkpoints, in --out, copied into model/) and the variant chart.
    history = json.loads((model_run_dir / "checkpoints" / plots.HISTORY_FILE).read_text())
    assert [e["epoch"] for e in history["history"]] == [1, 2]
    pictures = {
        "checkpoints/training-curve.png": plots.CURVE_SIZE,
        "training-curve.png": plots.CURVE_SIZE,
        "model/training-curve.png": plots.CURVE_SIZE,
        "model/variant-chart.png": plots.CHART_SIZE,
    }
    for name, size in pictures.items():
        with Image.open(model_run_dir / name) as image:
            assert (image.format, image.size) == ("PNG", size), name


def test_score_runs_the_chosen_model_through_the_function_path(model_run_dir, tmp_path, capsys):
    from model_build.cli import main
    from tests.fakes.oxford import write_oxford_folder

    names = [f"cat_{i}" for i in range(5)] + ["Bengal_1", "Bengal_2"]
    root = write_oxford_folder(tmp_path / "pets", names)
    (root / "annotations" / "trainval.txt").write_text("cat_0 1 1 1\n")
    (root / "annotations" / "test.txt").write_text("".join(f"{n} 1 1 1\n" for n in names[1:]))
    report, sheet = tmp_path / "score.json", tmp_path / "sheet.png"
    args = ["--model-dir", str(model_run_dir / "model"), "--data-dir", str(root)]
    assert main(["score", *args, "--json", str(report), "--sheet", str(sheet)]) == 0
    scores = json.loads(report.read_text())
    chosen = json.loads((model_run_dir / "model" / "manifest.json").read_text())
    assert scores["model_version"] == chosen["version"] and scores["examples"] == 6
    assert set(scores["per_image_miou"]) == set(names[1:])
    assert 0 <= scores["miou"] <= 1 and sheet.stat().st_size > 0
    out = capsys.readouterr().out
    assert f"mIoU {scores['miou']:.3f}" in out
    breeds = scores["by_breed"]
    # The chain's model was trained on synthetic scenes: its manifest records no breeds.
    assert {b: (s["examples"], s["training"]) for b, s in breeds.items()} == {
        "Bengal": (2, "unknown"),
        "cat": (4, "unknown"),
    }
    assert f"Bengal: 2 photos, mIoU {breeds['Bengal']['miou']:.3f}" in out
    # A breed's scores are over its own photos' pixels only: the same as scoring just those.
    cats_only = tmp_path / "cats.json"
    assert main(["score", *args, "--limit", "4", "--json", str(cats_only)]) == 0
    cats = json.loads(cats_only.read_text())
    assert set(cats["per_image_miou"]) == set(names[1:5])
    assert breeds["cat"]["miou"] == pytest.approx(cats["miou"])
    assert breeds["cat"]["per_class_iou"] == pytest.approx(cats["per_class_iou"])

    # A model whose training kept Bengal out: score marks it as never seen.
    held = tmp_path / "held-out-model"
    shutil.copytree(model_run_dir / "model", held)
    manifest = json.loads((held / "manifest.json").read_text())
    manifest["metrics"]["data"].update(holdout_breeds=["Bengal"], train_breeds=["cat"])
    (held / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    held_args = ["--model-dir", str(held), "--data-dir", str(root), "--json", str(report)]
    assert main(["score", *held_args]) == 0
    breeds = json.loads(report.read_text())["by_breed"]
    assert (breeds["Bengal"]["training"], breeds["cat"]["training"]) == ("held_out", "seen")
    lines = capsys.readouterr().out.splitlines()
    assert next(line for line in lines if "Bengal:" in line).endswith(
        "(held out of training: never seen)"
    )


def test_evaluate_with_test_time_flip_writes_a_manifest_the_function_serves_so(
    model_run_dir, tmp_path, capsys
):
    """`evaluate --test-time-flip` over the chain's run: the manifest says so, every figure was
    measured flip-averaged, and the function and `score` serve it flip-averaged."""
    from segmentation.contract import CLASS_NAMES
    from segmentation.model import load_model

    from model_build import data as data_lib
    from model_build import metrics
    from model_build.cli import main
    from model_build.evaluate import tflite_class_maps
    from tests.fakes.oxford import write_oxford_folder

    run = tmp_path / "run"
    shutil.copytree(model_run_dir, run, ignore=shutil.ignore_patterns("checkpoints"))
    data = ["--data", "synthetic", "--synthetic-train-size", "48", "--synthetic-test-size", "12"]
    assert (
        main(["evaluate", *data, "--latency-samples", "3", "--test-time-flip", "--out", str(run)])
        == 0
    )
    _, chosen = manifest_lib.read_model_dir(run / "model")
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert chosen["test_time_flip"] is True and evaluation["test_time_flip"] is True
    plain = json.loads((model_run_dir / "evaluation.json").read_text())
    assert plain["test_time_flip"] is False
    model = load_model(str(run / "model"), store=None, cache_dir=str(tmp_path), num_threads=1)
    assert model.manifest.test_time_flip
    # The manifest's figures are the flip-averaged ones (and this model is not mirror-symmetric,
    # so the plain ones differ): what evaluate measured is what the function will serve.
    splits = data_lib.load_splits(
        data_lib.DataConfig(synthetic_train_size=48, synthetic_test_size=12)
    )
    images, masks = data_lib.to_numpy(splits.test)
    served, _, _ = tflite_class_maps(run / "model" / "model.tflite", images, 2, flip=True)
    plain, _, _ = tflite_class_maps(run / "model" / "model.tflite", images, 2)
    assert (served != plain).any()
    scores = metrics.summarize(metrics.confusion_matrix(masks, served, 3), CLASS_NAMES)
    assert chosen["metrics"]["tflite"]["miou"] == pytest.approx(scores["miou"])

    root = write_oxford_folder(tmp_path / "pets", ["cat_0", "cat_1"])
    (root / "annotations" / "trainval.txt").write_text("cat_0 1 1 1\n")
    (root / "annotations" / "test.txt").write_text("cat_1 1 1 1\n")
    assert main(["score", "--model-dir", str(run / "model"), "--data-dir", str(root)]) == 0
    assert "flip-averaged" in capsys.readouterr().out
