"""Breeds the model never saw: breed names, per-breed scores, and a run's held-out breeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_build.cli import build_parser, train_config
from model_build.config import DataConfig
from model_build.layout import TRAINING_FACTS
from model_build.oxford_folder import DatasetFolderError, breed_of, breeds_of, without_breeds
from model_build.serving_score import BreedTally, breed_scores
from model_build.steps import trained_data_config


def test_breed_is_the_oxford_name_before_its_number():
    assert breed_of("Bengal_12") == "Bengal"
    assert breed_of("american_bulldog_3") == "american_bulldog"
    assert breed_of("great_pyrenees") is None and breed_of("cat") is None
    assert breeds_of(["Bengal_1", "Bengal_2", "cat", "pug_7"]) == ["Bengal", "pug"]


def test_holding_out_a_breed_no_name_has_names_the_breeds_there():
    names = ["Bengal_1", "pug_2", "pug_3"]
    assert without_breeds(names, ("pug",)) == ["Bengal_1"]
    with pytest.raises(DatasetFolderError, match=r"breed Pug .*breeds here: Bengal, pug"):
        without_breeds(names, ("Pug",))
    with pytest.raises(DatasetFolderError, match=r"none \(names are not <Breed>_<number>\)"):
        without_breeds(["IMG", "photo"], ("pug",))


def _tally(correct: int, wrong: int) -> BreedTally:
    tally = BreedTally()
    tally.add(np.array([[correct, wrong, 0], [0, correct, 0], [0, 0, correct]]))
    return tally


def test_breed_scores_say_whether_training_saw_each_breed():
    tallies = {"pug": _tally(10, 0), "Bengal": _tally(5, 5), "Abyssinian": _tally(9, 1)}
    data = {"holdout_breeds": ["Bengal"], "train_breeds": ["pug"]}
    scores = breed_scores(tallies, {"metrics": {"data": data}})
    assert list(scores) == ["Abyssinian", "Bengal", "pug"]
    assert {b: s["training"] for b, s in scores.items()} == {
        "Abyssinian": "not_in_training",
        "Bengal": "held_out",
        "pug": "seen",
    }
    assert scores["pug"]["miou"] == pytest.approx(1.0) and scores["pug"]["examples"] == 1
    assert scores["Bengal"]["pixel_accuracy"] == pytest.approx(15 / 20)
    # A manifest from before breeds were recorded: only held-out breeds are known.
    older = breed_scores(tallies, {"metrics": {"data": {}}})
    assert {s["training"] for s in older.values()} == {"unknown"}


def test_cli_passes_held_out_breeds_through(tmp_path):
    args = ["train", "--out", str(tmp_path), "--data-dir", str(tmp_path)]
    held = ["--holdout-breed", "pug", "--holdout-breed", "Bengal"]
    parsed = build_parser().parse_args([*args, *held])
    assert train_config(parsed).data.holdout_breeds == ("pug", "Bengal")
    assert train_config(build_parser().parse_args(args)).data.holdout_breeds == ()


def test_evaluate_takes_the_held_out_breeds_from_the_run_it_evaluates(tmp_path):
    folder = DataConfig(source="folder", data_dir=str(tmp_path))
    assert trained_data_config(tmp_path, folder) == folder  # no training.json: as given
    facts = {"config": {"data": {"holdout_breeds": ["Bengal"]}}}
    (tmp_path / TRAINING_FACTS).write_text(json.dumps(facts))
    assert trained_data_config(tmp_path, folder).holdout_breeds == ("Bengal",)
    same = DataConfig(source="folder", data_dir=str(tmp_path), holdout_breeds=("Bengal",))
    assert trained_data_config(tmp_path, same).holdout_breeds == ("Bengal",)
    other = DataConfig(source="folder", data_dir=str(tmp_path), holdout_breeds=("pug",))
    with pytest.raises(ValueError, match=r"--holdout-breed pug .*trained without \(Bengal\)"):
        trained_data_config(tmp_path, other)
