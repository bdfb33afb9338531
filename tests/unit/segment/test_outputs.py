"""segment.outputs: the one record type and finder of the function's outputs, built on the
function's own names, metadata keys and `ObjectInfo`."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from segmentation import storage as function_storage
from segmentation.storage import META_ERROR_REASON, META_SOURCE_GENERATION

from segment import clients, outputs
from tests.unit.segment.gcs_fake import FakeStorage

OUT = "out-bucket"
SEGMENT_DIR = Path(outputs.__file__).resolve().parent


def _mask(storage: FakeStorage, source: str, generation: int | str, **extra: str):
    metadata = {META_SOURCE_GENERATION: str(generation), **extra}
    return storage.put(OUT, function_storage.mask_name(source), b"png", metadata)


def _error(storage: FakeStorage, source: str, generation: int, body: bytes = b"{}", **extra):
    metadata = {META_SOURCE_GENERATION: str(generation), **extra}
    return storage.put(OUT, function_storage.error_name(source), body, metadata)


def test_find_outputs_uses_the_function_names_even_for_odd_source_names():
    storage = FakeStorage()
    source = "up/../weird/./cat.png"  # dot segments: the function's safe fallback name
    assert function_storage.mask_name(source) != f"masks/{source}.png"
    _error(storage, source, 5)
    _mask(storage, source, 5)

    found = outputs.find_outputs(storage, OUT, source)

    assert [o.kind for o in found] == [outputs.MASK, outputs.ERROR]  # mask first
    assert found[0].name == function_storage.mask_name(source)
    assert found[1].name == function_storage.error_name(source)
    assert found[0].uri == f"gs://{OUT}/{function_storage.mask_name(source)}"
    assert isinstance(found[0].info, function_storage.ObjectInfo)
    # every storage call is bounded (segment.clients: no two-minute retries)
    assert all(kw["retry"] is clients.storage_retry() for _, _, kw in storage.calls)
    assert all(kw["timeout"] == clients.STORAGE_TIMEOUT for _, _, kw in storage.calls)


@pytest.mark.parametrize(
    ("recorded", "generation", "freshness", "describes"),
    [
        ("7", 7, "current", True),
        ("6", 7, "stale", False),
        ("8", 7, "newer", True),
        ("not-a-number", 7, "unknown", False),
        ("7", None, "unknown", None),
    ],
)
def test_freshness_against_the_input_generation(recorded, generation, freshness, describes):
    storage = FakeStorage()
    _mask(storage, "a.png", recorded)
    (output,) = outputs.find_outputs(storage, OUT, "a.png")

    assert output.freshness(generation) == freshness
    if describes is not None:
        assert output.describes(generation) is describes
        assert outputs.is_processed([output], generation) is describes


def test_a_missing_source_generation_is_unknown():
    storage = FakeStorage()
    storage.put(OUT, function_storage.mask_name("a.png"), b"png", {})
    (output,) = outputs.find_outputs(storage, OUT, "a.png")
    assert output.source_generation is None
    assert output.freshness(3) == "unknown"


def test_current_output_is_the_newest_that_describes_the_generation():
    storage = FakeStorage()
    _mask(storage, "a.png", 4)  # stale mask
    _error(storage, "a.png", 9, **{META_ERROR_REASON: "not_an_image"})  # newer error record
    found = outputs.find_outputs(storage, OUT, "a.png")

    assert outputs.current_output(found, 9).kind == outputs.ERROR
    assert outputs.current_output(found, 4).kind == outputs.ERROR  # the newest wins
    assert outputs.current_output(found, 10) is None
    assert outputs.current_output([], 1) is None


def test_error_reason_from_metadata_else_from_the_downloaded_body():
    storage = FakeStorage()
    body = json.dumps({"error": {"reason": "corrupt_image"}}).encode()
    _error(storage, "a.png", 1, body)
    _error(storage, "b.png", 1, b"{}", **{META_ERROR_REASON: "not_an_image"})
    (a,) = outputs.find_outputs(storage, OUT, "a.png")
    (b,) = outputs.find_outputs(storage, OUT, "b.png")

    assert a.error_reason is None  # not downloaded, no metadata
    assert outputs.download(storage, a).error_reason == "corrupt_image"
    assert b.error_reason == "not_an_image"


def test_wait_for_outputs_downloads_what_describes_each_generation(tmp_path):
    storage = FakeStorage()
    _mask(storage, "done.png", 5)
    _mask(storage, "stale.png", 3)
    seen = []

    found = outputs.wait_for_outputs(
        storage,
        OUT,
        {"done.png": 5, "stale.png": 4, "absent.png": 1},
        timeout=0,
        on_output=lambda name, output: seen.append((name, output.kind)),
    )

    assert seen == [("done.png", outputs.MASK)]
    assert list(found) == ["done.png"]
    assert found["done.png"].data == b"png"
    saved = found["done.png"].save(tmp_path)
    assert saved == tmp_path / function_storage.mask_name("done.png")
    assert saved.read_bytes() == b"png"


def test_save_refuses_an_output_that_was_not_downloaded(tmp_path):
    storage = FakeStorage()
    _mask(storage, "a.png", 1)
    (output,) = outputs.find_outputs(storage, OUT, "a.png")
    with pytest.raises(ValueError, match="not downloaded"):
        output.save(tmp_path)


def test_find_outputs_skips_other_sources_and_follows_the_conflict_name():
    storage = FakeStorage()
    theirs = {"source-name": "legacy.png", "source-bucket": "in"}
    _mask(storage, "a.png", 9, **theirs)
    _error(storage, "a.png", 1, **{"source-name": "a.png", "source-bucket": "elsewhere"})
    mine = {"source-name": "a.png", "source-bucket": "in"}
    storage.put(OUT, function_storage.mask_conflict_name("a.png"), b"png", {
        META_SOURCE_GENERATION: "4", **mine,
    })  # fmt: skip

    (found,) = outputs.find_outputs(storage, OUT, "a.png", source_bucket="in")
    assert found.kind == outputs.MASK and found.source_generation == 4
    assert found.name == function_storage.mask_conflict_name("a.png")
    assert not outputs.is_processed([found], 9)
    # Without the bucket, only the name tells sources apart.
    found = outputs.find_outputs(storage, OUT, "a.png")
    assert [(o.kind, o.source_generation) for o in found] == [(outputs.MASK, 4), (outputs.ERROR, 1)]


# --- one owner -------------------------------------------------------------------------------


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_segment_declares_no_output_name_or_metadata_key_of_its_own():
    """Output prefixes and metadata keys come from segmentation.storage only."""
    owned = {
        value
        for name, value in vars(function_storage).items()
        if isinstance(value, str) and (name.startswith("META_") or name.endswith("_PREFIX"))
    }
    assert {"source-generation", "error-reason", "masks/"} <= owned
    for path in sorted(SEGMENT_DIR.glob("*.py")):
        assert not (_string_constants(path) & owned), path.name


def test_one_finder_and_one_record_type():
    """Only segment.outputs finds outputs or models them; the old copies are gone."""
    definitions = {}
    for path in sorted(SEGMENT_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and (
                node.name.startswith(("find_output", "wait_for_output"))
                or node.name in {"Output", "OutputRecord"}
            ):
                definitions.setdefault(node.name, []).append(path.name)
    assert definitions == {
        "OutputRecord": ["outputs.py"],
        "find_outputs": ["outputs.py"],
        "wait_for_outputs": ["outputs.py"],
    }
    assert not (SEGMENT_DIR / "naming.py").exists()


def test_the_fault_proxy_is_test_only():
    assert not (SEGMENT_DIR / "fault_proxy.py").exists()
    from tests.fakes.fault_proxy import FaultProxy

    assert FaultProxy.__module__ == "tests.fakes.fault_proxy"
