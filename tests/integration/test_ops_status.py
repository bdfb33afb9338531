"""`segment status` on the GCS emulator: mask, error record or nothing yet; current or stale."""

from __future__ import annotations

import json
import uuid

import pytest
from segmentation.storage import error_name, mask_name

from segment.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def buckets(gcs, monkeypatch):
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("SEGMENT_OUTPUT_BUCKET", raising=False)
    suffix = uuid.uuid4().hex[:10]
    return gcs.create_bucket(f"st-in-{suffix}"), gcs.create_bucket(f"st-out-{suffix}")


def _upload(bucket, name: str, data: bytes = b"png"):
    blob = bucket.blob(name)
    blob.upload_from_string(data)
    return blob


def _output(output_bucket, name: str, source, *, kind: str, reason: str | None = None) -> None:
    """An output with the function's metadata (pipeline._source_metadata + kind's own)."""
    metadata = {
        "source-bucket": source.bucket.name,
        "source-name": source.name,
        "source-generation": str(source.generation),
    }
    if kind == "mask":
        blob = output_bucket.blob(mask_name(name))
        metadata["model-version"] = "v-test"
    else:
        blob = output_bucket.blob(error_name(name))
        metadata["error-reason"] = reason or "not_an_image"
    blob.metadata = metadata
    blob.upload_from_string(b"output")


def _status(input_bucket, output_bucket, name: str, capsys) -> str:
    assert (
        main(["status", f"gs://{input_bucket.name}/{name}", "--output-bucket", output_bucket.name])
        == 0
    )
    return capsys.readouterr().out


def test_status_reports_a_current_mask(buckets, capsys):
    input_bucket, output_bucket = buckets
    source = _upload(input_bucket, "up/cat.png")
    _output(output_bucket, "up/cat.png", source, kind="mask")

    out = _status(input_bucket, output_bucket, "up/cat.png", capsys)
    assert f"generation {source.generation}" in out
    assert f"current mask: gs://{output_bucket.name}/masks/up/cat.png.png" in out
    assert f"source generation {source.generation} vs object generation {source.generation}" in out
    assert "model-version: v-test" in out
    assert "nothing yet" not in out


def test_status_reports_a_stale_mask_after_a_reupload(buckets, capsys):
    input_bucket, output_bucket = buckets
    first = _upload(input_bucket, "up/dog.png")
    _output(output_bucket, "up/dog.png", first, kind="mask")
    second = _upload(input_bucket, "up/dog.png", b"new bytes")
    assert int(second.generation) > int(first.generation)

    out = _status(input_bucket, output_bucket, "up/dog.png", capsys)
    assert "stale mask" in out
    assert f"source generation {first.generation} vs object generation {second.generation}" in out


def test_status_reports_an_error_record(buckets, capsys):
    input_bucket, output_bucket = buckets
    source = _upload(input_bucket, "up/notes.txt", b"hello")
    _output(output_bucket, "up/notes.txt", source, kind="error", reason="not_an_image")

    out = _status(input_bucket, output_bucket, "up/notes.txt", capsys)
    assert (
        f"current error record (not_an_image): gs://{output_bucket.name}/errors/up/notes.txt.json"
        in out
    )
    assert "error-reason: not_an_image" in out


def test_status_reports_nothing_yet(buckets, capsys):
    input_bucket, output_bucket = buckets
    _upload(input_bucket, "up/new.png")

    out = _status(input_bucket, output_bucket, "up/new.png", capsys)
    assert "nothing yet" in out


def test_status_of_a_deleted_object_still_shows_its_outputs(buckets, capsys):
    input_bucket, output_bucket = buckets
    source = _upload(input_bucket, "up/gone.png")
    _output(output_bucket, "up/gone.png", source, kind="mask")
    source.delete()

    out = _status(input_bucket, output_bucket, "up/gone.png", capsys)
    assert "object not found" in out
    assert f"mask (object gone): gs://{output_bucket.name}/masks/up/gone.png.png" in out


def _status_json(input_bucket, output_bucket, name: str, capsys) -> dict:
    uri = f"gs://{input_bucket.name}/{name}"
    assert main(["status", uri, "--output-bucket", output_bucket.name, "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return json.loads(captured.out)  # one JSON document, nothing else on stdout


def test_status_json_of_a_stale_mask_and_a_current_error_record(buckets, capsys):
    input_bucket, output_bucket = buckets
    first = _upload(input_bucket, "up/pet.png")
    _output(output_bucket, "up/pet.png", first, kind="mask")
    second = _upload(input_bucket, "up/pet.png", b"not an image")
    _output(output_bucket, "up/pet.png", second, kind="error", reason="not_an_image")

    document = _status_json(input_bucket, output_bucket, "up/pet.png", capsys)

    assert document["object"] == {
        "uri": f"gs://{input_bucket.name}/up/pet.png",
        "bucket": input_bucket.name,
        "name": "up/pet.png",
        "exists": True,
        "generation": int(second.generation),
        "size": len(b"not an image"),
    }
    assert document["processed"] is True
    mask, error = document["outputs"]
    assert mask["kind"] == "mask" and mask["freshness"] == "stale"
    assert mask["uri"] == f"gs://{output_bucket.name}/{mask_name('up/pet.png')}"
    assert mask["source_generation"] == int(first.generation)
    assert mask["metadata"]["model-version"] == "v-test"
    assert mask["error_reason"] is None
    assert error["kind"] == "error" and error["freshness"] == "current"
    assert error["error_reason"] == "not_an_image"
    assert error["updated"]


def test_status_json_of_nothing_yet_and_of_a_deleted_object(buckets, capsys):
    input_bucket, output_bucket = buckets
    _upload(input_bucket, "up/new.png")
    document = _status_json(input_bucket, output_bucket, "up/new.png", capsys)
    assert document["processed"] is False and document["outputs"] == []

    gone = _upload(input_bucket, "up/gone.png")
    _output(output_bucket, "up/gone.png", gone, kind="mask")
    gone.delete()
    document = _status_json(input_bucket, output_bucket, "up/gone.png", capsys)
    assert document["object"]["exists"] is False and document["object"]["generation"] is None
    assert document["processed"] is False
    assert document["outputs"][0]["freshness"] == "gone"
