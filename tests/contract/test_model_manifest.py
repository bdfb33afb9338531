"""Contract: the model manifest and the `latest` pointer, between model_build and the function.

One schema (functions/segmentation/manifest.schema.json, in the deploy unit) that model_build
validates against; one module (segmentation.contract) holding what the function checks without
jsonschema. These tests keep the two equal, run every manifest writer (model_build, the test
fake, the benchmark) through the schema, and send a built manifest through publish and back into
the function.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from segmentation import contract
from segmentation.errors import ModelContractError, ModelError
from segmentation.manifest import parse_manifest
from segmentation.model import load_model

from model_build import manifest as manifest_lib
from model_build import publish as publish_lib
from tests.conftest import DEFAULT_MODEL_DIR
from tests.fakes import fixtures as fake_fixtures
from tests.unit.model_build.fabricate import built_manifest

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "functions" / "segmentation" / contract.SCHEMA_FILE
tiny_int8_model_dir = fake_fixtures.tiny_int8_model_dir  # the conftest shares only the float32


def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def _valid_manifest() -> dict[str, Any]:
    return manifest_lib.unmeasured_manifest(
        b"flatbuffer bytes",
        name="contract-test",
        version="20260101-000000-contract",
        quantization="float32",
        image_size=128,
        output_dtype="float32",
        note="contract test",
    )


# --- one schema, mirrored by one module ------------------------------------------------------


def test_the_schema_ships_in_the_deploy_unit_and_model_build_reads_it() -> None:
    assert SCHEMA_PATH.is_file()
    assert not (REPO / "model_build" / "manifest.schema.json").exists()
    jsonschema.Draft202012Validator.check_schema(_schema())
    assert manifest_lib.schema() == _schema()  # found through importlib.resources


def test_the_contract_module_mirrors_the_schema() -> None:
    schema = _schema()
    props = schema["properties"]
    inputs, outputs = props["input"]["properties"], props["output"]["properties"]
    assert props["schema_version"]["const"] == contract.SCHEMA_VERSION
    assert props["file"]["const"] == contract.MODEL_FILE
    assert props["version"]["pattern"] == contract.SAFE_COMPONENT_PATTERN
    assert props["sha256"]["pattern"] == contract.SHA256_PATTERN
    assert props["quantization"]["enum"] == list(contract.VARIANTS)
    assert props[contract.TEST_TIME_FLIP]["type"] == "boolean"
    assert inputs["dtype"]["enum"] == list(contract.INPUT_DTYPES)
    assert inputs["value_range"]["const"] == list(contract.INPUT_VALUE_RANGE)
    assert inputs["color"]["const"] == contract.COLOR
    assert inputs["layout"]["const"] == contract.LAYOUT
    assert outputs["dtype"]["enum"] == list(contract.OUTPUT_DTYPES)
    assert outputs["kind"]["const"] == contract.OUTPUT_KIND
    assert outputs["classes"]["const"] == list(contract.CLASS_NAMES)
    for section, channels in (("input", contract.INPUT_CHANNELS), ("output", 3)):
        batch, *_, last = props[section]["properties"]["shape"]["prefixItems"]
        assert batch == {"const": contract.BATCH}
        assert last == {"const": channels}
    assert len(contract.CLASS_NAMES) == 3  # the output shape's last axis above


def test_every_copy_of_classes_and_variants_is_the_contracts() -> None:
    from bench import models as bench_models
    from model_build import convert
    from model_build import model as model_module

    assert model_module.CLASS_NAMES is contract.CLASS_NAMES
    assert convert.VARIANTS is contract.VARIANTS
    assert bench_models.VARIANTS is contract.VARIANTS


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("schema_version",), 2),
        (("version",), "../evil"),
        (("version",), "v" * 129),
        (("file",), "other.tflite"),
        (("sha256",), "XYZ"),
        (("input", "shape"), [2, 128, 128, 3]),
        (("input", "shape"), [1, 128, 128, 4]),
        (("input", "shape"), [1, 128, 128]),
        (("input", "dtype"), "int8"),
        (("input", "value_range"), [-1, 1]),
        (("input", "color"), "BGR"),
        (("input", "layout"), "NCHW"),
        (("output", "shape"), [1, 128, 128, 4]),
        (("output", "dtype"), "float64"),
        (("output", "kind"), "probabilities"),
        (("output", "classes"), ["background", "pet", "border"]),
        (("output", "classes"), ["pet", "background", "border", "sky"]),
        ((contract.TEST_TIME_FLIP,), "yes"),
        ((contract.TEST_TIME_FLIP,), 1),
    ],
)
def test_the_schema_and_the_function_refuse_the_same_manifests(
    path: tuple[str, ...], value: Any
) -> None:
    document = _valid_manifest()
    jsonschema.validate(document, _schema())
    parse_manifest(document)
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, _schema())
    with pytest.raises(ModelContractError):
        parse_manifest(document)


def test_model_build_also_refuses_what_only_the_function_can_check() -> None:
    document = _valid_manifest()
    document["output"]["shape"] = [1, 64, 64, 3]  # the input is 128x128: no schema can say so
    jsonschema.validate(document, _schema())
    with pytest.raises(manifest_lib.ManifestError, match="output shape"):
        manifest_lib.validate(document)


# --- every writer passes the schema ----------------------------------------------------------


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_int8_model_dir"])
def test_the_fakes_manifest_passes_the_schema(fixture: str, request: pytest.FixtureRequest) -> None:
    directory = request.getfixturevalue(fixture)
    document = json.loads((directory / contract.MANIFEST_FILE).read_text())
    jsonschema.validate(document, _schema())
    manifest_lib.validate(document)
    manifest_lib.read_model_dir(directory)  # and its sha256 matches


def test_the_benchmarks_manifest_passes_the_schema(tiny_model_dir: Path, tmp_path: Path) -> None:
    from bench.models import write_model_dir

    data = (tiny_model_dir / contract.MODEL_FILE).read_bytes()
    out = write_model_dir(data, "float32", tmp_path / "float32", image_size=128)
    _, document = manifest_lib.read_model_dir(out)
    assert document["quantization"] == "float32"
    assert load_model(str(out), store=None, cache_dir="/unused", num_threads=1).version


@pytest.mark.skipif(
    not (DEFAULT_MODEL_DIR / contract.MANIFEST_FILE).is_file(), reason="no models/default"
)
def test_the_committed_default_model_follows_the_contract() -> None:
    document = json.loads((DEFAULT_MODEL_DIR / contract.MANIFEST_FILE).read_text())
    manifest_lib.validate(document)


# --- build -> publish -> fetch ---------------------------------------------------------------


def test_a_built_manifest_survives_publish_and_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    """model_build's build_manifest -> write_model_dir -> publish (local) -> the function's
    load_model through `latest`: the function sees exactly the model that was built."""
    data = (tiny_model_dir / contract.MODEL_FILE).read_bytes()
    built = built_manifest(
        data, variant="float32", created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )
    model_dir = manifest_lib.write_model_dir(data, built, tmp_path / "model")
    registry = tmp_path / "registry"
    published = publish_lib.publish(model_dir, str(registry))
    assert published.latest_moved and published.version == built["version"]

    model = load_model(
        str(registry / publish_lib.MODEL_FAMILY / contract.LATEST_SEGMENT),
        store=None,
        cache_dir="/unused",
        num_threads=1,
    )
    seen = model.manifest
    assert seen.version == built["version"]
    assert seen.sha256 == built["sha256"] == published.sha256
    assert seen.size_bytes == built["size_bytes"] == len(data)
    assert seen.classes == contract.CLASS_NAMES == tuple(built["output"]["classes"])
    assert seen.input_shape == tuple(built["input"]["shape"])
    assert seen.input_dtype == built["input"]["dtype"]
    assert seen.output_shape == tuple(built["output"]["shape"])
    assert seen.output_dtype == built["output"]["dtype"]
    assert (seen.name, seen.file, seen.quantization) == (
        built["name"],
        built["file"],
        built["quantization"],
    )
    assert seen.raw == built
    assert seen == parse_manifest(built)
    image = np.zeros((128, 128, 3), np.uint8)
    image[:, 64:, 1] = 200  # green: background (class 1)
    image[:, :64, 0] = 200  # red: pet (class 0)
    classes = model.predict(image)
    assert (classes[:, :64] == 0).all() and (classes[:, 64:] == 1).all()


# --- the latest pointer ----------------------------------------------------------------------


def test_publish_writes_the_pointer_the_contract_defines(tmp_path: Path) -> None:
    from tests.unit.model_build.fabricate import model_dir

    path, chosen = model_dir(tmp_path / "model", b"pointer test")
    publish_lib.publish(path, str(tmp_path / "registry"))
    raw = json.loads((tmp_path / "registry" / "unet" / contract.LATEST_POINTER).read_text())
    assert tuple(raw) == contract.LATEST_FIELDS
    pointer = contract.parse_latest_pointer(raw)
    assert (pointer.version, pointer.sha256) == (chosen["version"], chosen["sha256"])
    assert pointer.path == str(tmp_path / "registry" / "unet" / chosen["version"])


def test_latest_pointer_round_trip() -> None:
    when = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    document = contract.latest_pointer("v1", "gs://b/unet/v1/", "AB" * 32, published=when)
    assert document == {
        "version": "v1",
        "path": "gs://b/unet/v1/",
        "sha256": "AB" * 32,
        "published": "2026-05-06T07:08:09Z",
        "previous": [],
    }
    pointer = contract.parse_latest_pointer(json.loads(json.dumps(document)))
    assert pointer == contract.LatestPointer(
        "v1", "gs://b/unet/v1", "ab" * 32, document["published"]
    )
    # Written by hand (docs), or before the history was kept: version and path are enough.
    old = contract.parse_latest_pointer({"version": "v1", "path": "v1"})
    assert old.sha256 is None and old.previous == ()


def test_the_pointer_history_is_newest_first_without_the_new_version() -> None:
    when = datetime(2026, 5, 6, tzinfo=UTC)
    first = contract.parse_latest_pointer(contract.latest_pointer("v1", "v1", "a" * 64, when))
    assert contract.history_after(None, "v1") == []
    second = contract.latest_pointer(
        "v2", "v2", "b" * 64, when, previous=contract.history_after(first, "v2")
    )
    assert second["previous"] == ["v1"]
    pointer = contract.parse_latest_pointer(second)
    assert pointer.previous == ("v1",)
    assert contract.history_after(pointer, "v3") == ["v2", "v1"]
    assert contract.history_after(pointer, "v1") == ["v2"]  # promoting an older version
    many = contract.LatestPointer("v0", "v0", None, None, tuple(f"v{i}" for i in range(1, 20)))
    assert len(contract.history_after(many, "new")) == contract.LATEST_HISTORY_LIMIT


@pytest.mark.parametrize(
    "document",
    [
        [],
        {},
        {"version": "v1"},
        {"path": "v1"},
        {"version": "../x", "path": "v1"},
        {"version": 7, "path": "v1"},
        {"version": "v1", "path": ""},
        {"version": "v1", "path": None},
        {"version": "v1", "path": "v1", "sha256": "xyz"},
        {"version": "v1", "path": "v1", "published": 5},
        {"version": "v1", "path": "v1", "previous": "v0"},
        {"version": "v1", "path": "v1", "previous": ["../v0"]},
        {"version": "v1", "path": "v1", "previous": [7]},
    ],
)
def test_bad_latest_pointers_are_refused(document: Any) -> None:
    with pytest.raises(contract.ContractError):
        contract.parse_latest_pointer(copy.deepcopy(document))


def test_no_pointer_is_built_that_the_function_would_refuse() -> None:
    with pytest.raises(contract.ContractError, match="version"):
        contract.latest_pointer("../x", "gs://b/unet/x", "0" * 64)
    with pytest.raises(contract.ContractError, match="sha256"):
        contract.latest_pointer("v1", "gs://b/unet/v1", "not a digest")


def test_the_function_refuses_a_bad_pointer_as_a_model_error(tmp_path: Path) -> None:
    family = tmp_path / "unet"
    family.mkdir()
    (family / contract.LATEST_POINTER).write_text(json.dumps({"version": "v1", "path": ""}))
    with pytest.raises(ModelError, match=r"latest\.json is invalid"):
        load_model(str(family / "latest"), store=None, cache_dir="/unused", num_threads=1)
