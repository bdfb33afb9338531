import copy
import json

import numpy as np
import pytest
from segmentation.manifest import parse_manifest

from model_build import manifest
from model_build.evaluate import keras_class_maps, select_variant
from model_build.manifest import ManifestError

from .fabricate import built_manifest, evaluation, model_dir, variant


def test_selection_picks_the_fastest_variant_within_tolerance():
    results = {
        "float32": variant("float32", 0.800, 50, 27),
        "float16": variant("float16", 0.799, 52, 26),
        "dynamic_range": variant("dynamic_range", 0.792, 40, 21),
        "int8": variant("int8", 0.770, 16, 10),  # fastest, but 3 points below Keras
    }
    chosen = select_variant(results, keras_miou=0.800, tolerance_points=1.0, threads=2)
    assert chosen.variant == "dynamic_range" and chosen.within_tolerance
    loose = select_variant(results, keras_miou=0.800, tolerance_points=5.0, threads=2)
    assert loose.variant == "int8"


def test_selection_uses_the_requested_thread_count():
    results = {
        "a": variant("a", 0.8, ms_1=10, ms_2=30),
        "b": variant("b", 0.8, ms_1=20, ms_2=12),
    }
    assert select_variant(results, 0.8, threads=1).variant == "a"
    assert select_variant(results, 0.8, threads=2).variant == "b"


def test_selection_falls_back_to_the_most_accurate_and_says_so():
    results = {"x": variant("x", 0.5, 10, 5), "y": variant("y", 0.6, 20, 10)}
    chosen = select_variant(results, keras_miou=0.9)
    assert chosen.variant == "y" and not chosen.within_tolerance
    assert "no variant within" in chosen.reason


def test_the_tolerance_boundary_is_inclusive():
    results = {"q": variant("q", 0.79, 1, 1)}
    assert select_variant(results, keras_miou=0.80, tolerance_points=1.0).within_tolerance


def test_manifest_is_schema_valid_and_self_consistent(tmp_path):
    path, chosen = model_dir(tmp_path / "model", b"payload")
    on_disk = json.loads((path / "manifest.json").read_text())
    assert on_disk == chosen
    assert chosen["sha256"] == manifest.sha256_hex(b"payload")
    assert chosen["version"].endswith(chosen["sha256"][:8])
    assert chosen["output"]["classes"] == ["pet", "background", "border"]
    assert chosen["input"] == {
        "shape": [1, 128, 128, 3],
        "dtype": "uint8",
        "value_range": [0, 255],
        "color": "RGB",
        "layout": "NHWC",
    }
    assert chosen["metrics"]["tflite"]["miou"] == evaluation().variants["int8"].miou
    assert set(chosen["selection"]["candidates"]) == {"float32", "int8"}


@pytest.mark.parametrize("flip", [False, True])
def test_the_manifest_says_whether_its_metrics_were_measured_flip_averaged(flip):
    measured = evaluation()
    measured.test_time_flip = flip
    chosen = built_manifest(b"payload", measured)
    assert chosen["test_time_flip"] is flip
    assert parse_manifest(chosen).test_time_flip is flip  # and the function serves it so


class _LopsidedKeras:
    """Stands in for a Keras model's `predict`: the pet logit is the red channel (0..1) plus a
    ramp from -1 at the left edge to +1 at the right; background is a constant 0.75."""

    def predict(self, images, batch_size=None, verbose=0):
        ramp = np.linspace(-1.0, 1.0, images.shape[2], dtype=np.float32)
        logits = np.zeros((*images.shape[:3], 3), np.float32)
        logits[..., 0] = images[..., 0] / 255.0 + ramp[np.newaxis, np.newaxis, :]
        logits[..., 1] = 0.75
        return logits


def test_keras_maps_are_flip_averaged_on_request():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    images[:, :, :2, 0] = 255  # red: the left quarter
    plain = keras_class_maps(_LopsidedKeras(), images)
    assert (plain[:, :, :2] == 1).all()  # the ramp drowns the red at the left
    assert (plain[:, :, -1] == 0).all()  # and makes the black right edge pet
    averaged = keras_class_maps(_LopsidedKeras(), images, flip=True)
    # The ramp cancels out: pet exactly where the red is. (Averaging with the mirror of the
    # image's own logits, instead of the mirror image's, would spread the red to both edges at
    # half strength, under the background's 0.75.)
    expected = np.ones_like(averaged)
    expected[:, :, :2] = 0
    assert (averaged == expected).all()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("sha256",), "xyz", "sha256"),
        (("input", "dtype"), "int64", "input/dtype"),
        (("quantization",), "int4", "quantization"),
        (("metrics", "tflite", "miou"), 1.5, "metrics/tflite/miou"),
    ],
)
def test_schema_rejects_bad_fields_and_names_them(tmp_path, path, value, field):
    _, chosen = model_dir(tmp_path / "model")
    broken = copy.deepcopy(chosen)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ManifestError, match=field):
        manifest.validate(broken)


def test_schema_rejects_a_missing_field(tmp_path):
    _, chosen = model_dir(tmp_path / "model")
    del chosen["training"]
    with pytest.raises(ManifestError, match="training"):
        manifest.validate(chosen)


def test_read_model_dir_detects_a_tampered_model(tmp_path):
    path, _ = model_dir(tmp_path / "model")
    manifest.read_model_dir(path)
    (path / "model.tflite").write_bytes(b"tampered")
    with pytest.raises(ManifestError, match="sha256"):
        manifest.read_model_dir(path)


def test_git_commit_comes_from_the_environment_first(monkeypatch):
    # The GPU VM runs an unpacked archive: Terraform / Cloud Build pass the commit in.
    monkeypatch.setenv("MODEL_BUILD_GIT_COMMIT", " 0123abcd\n")
    assert manifest.git_commit() == "0123abcd"


def test_git_commit_falls_back_to_git_then_unknown(monkeypatch, tmp_path):
    monkeypatch.setenv("MODEL_BUILD_GIT_COMMIT", "")
    from_git = manifest.git_commit()  # this checkout
    assert len(from_git) == 40 and int(from_git, 16) >= 0
    monkeypatch.delenv("MODEL_BUILD_GIT_COMMIT")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert manifest.git_commit(cwd=tmp_path) == "unknown"  # an unpacked archive, no .git


def test_selection_defaults_to_the_functions_single_thread():
    from model_build.cli import build_parser
    from model_build.config import DEFAULT_SELECTION_THREADS

    assert DEFAULT_SELECTION_THREADS == 1  # NUM_THREADS=1 on the function's 1 vCPU
    results = {
        "a": variant("a", 0.8, ms_1=10, ms_2=30),
        "b": variant("b", 0.8, ms_1=20, ms_2=12),
    }
    assert select_variant(results, 0.8).variant == "a"
    args = build_parser().parse_args(["evaluate", "--out", "o"])
    assert args.selection_threads == 1
