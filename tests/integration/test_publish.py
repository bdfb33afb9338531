"""Publishing against the real GCS emulator (and a local directory).

gcp-storage-emulator ignores preconditions (docs/architecture.md, decision 6): the race on
`latest` runs behind tests.fakes.fault_proxy, which enforces ifGenerationMatch as Cloud Storage
does."""

import json
from datetime import UTC, datetime

import pytest

from model_build import publish as publish_lib
from model_build.cli import main as cli_main
from model_build.publish import PublishVerificationError, VersionExistsError
from model_build.storage import (
    ABSENT,
    GcsLocation,
    LocalLocation,
    PreconditionFailedError,
)
from tests.fakes.fault_proxy import FaultProxy
from tests.unit.model_build.fabricate import model_dir

pytestmark = pytest.mark.integration


def _objects(bucket):
    return sorted(blob.name for blob in bucket.client.list_blobs(bucket))


def test_publish_uploads_a_version_and_moves_latest(bucket, tmp_path):
    path, chosen = model_dir(tmp_path / "model", b"model-bytes-1")
    done = publish_lib.publish(path, f"gs://{bucket.name}/models")
    version = chosen["version"]
    assert _objects(bucket) == sorted(
        [
            "models/unet/latest.json",
            f"models/unet/{version}/manifest.json",
            f"models/unet/{version}/model.tflite",
        ]
    )
    uploaded = bucket.blob(f"models/unet/{version}/model.tflite").download_as_bytes()
    assert uploaded == b"model-bytes-1"
    pointer = publish_lib.read_latest(f"gs://{bucket.name}/models")
    assert pointer["version"] == version
    assert pointer["path"] == f"gs://{bucket.name}/models/unet/{version}"
    assert pointer["sha256"] == chosen["sha256"] == done.sha256


def test_an_existing_version_is_never_overwritten(bucket, tmp_path):
    path, chosen = model_dir(tmp_path / "model", b"original")
    base = f"gs://{bucket.name}"
    publish_lib.publish(path, base)
    # Same version name, different bytes: refused, and nothing changes.
    (path / "model.tflite").write_bytes(b"impostor")
    tampered = dict(chosen, sha256=publish_lib.manifest_lib.sha256_hex(b"impostor"))
    (path / "manifest.json").write_text(json.dumps(tampered))
    with pytest.raises(VersionExistsError, match=chosen["version"]):
        publish_lib.publish(path, base)
    blob = bucket.blob(f"unet/{chosen['version']}/model.tflite")
    assert blob.download_as_bytes() == b"original"


def test_latest_only_moves_after_verification(bucket, tmp_path, monkeypatch):
    base = f"gs://{bucket.name}"
    first_path, first = model_dir(tmp_path / "first", b"first", created=_at(1))
    publish_lib.publish(first_path, base)
    second_path, second = model_dir(tmp_path / "second", b"second", created=_at(2))
    assert second["version"] != first["version"]

    real_read = GcsLocation.read_bytes

    def corrupted_read(self, name):  # the store hands back other bytes than were written
        data = real_read(self, name)
        return b"bit rot" if name == "model.tflite" else data

    with monkeypatch.context() as patch:
        patch.setattr(GcsLocation, "read_bytes", corrupted_read)
        with pytest.raises(PublishVerificationError, match="latest' was not moved"):
            publish_lib.publish(second_path, base)
    assert publish_lib.read_latest(base)["version"] == first["version"]
    # The model failed its check before the manifest was written: no version exists, and a
    # retry (the store reads back correctly now) publishes it.
    assert not bucket.blob(f"unet/{second['version']}/manifest.json").exists()
    assert publish_lib.publish(second_path, base).latest_moved
    assert publish_lib.read_latest(base)["version"] == second["version"]


def test_publish_without_moving_latest(bucket, tmp_path):
    path, _ = model_dir(tmp_path / "model", b"quiet")
    done = publish_lib.publish(path, f"gs://{bucket.name}", move_latest=False)
    assert not done.latest_moved
    assert publish_lib.read_latest(f"gs://{bucket.name}") is None


def test_publish_to_a_local_directory_and_again_from_the_cli(tmp_path, capsys):
    path, chosen = model_dir(tmp_path / "model", b"local")
    base = tmp_path / "registry"
    assert cli_main(["publish", "--model-dir", str(path), "--to", str(base)]) == 0
    version_dir = base / "unet" / chosen["version"]
    assert (version_dir / "model.tflite").read_bytes() == b"local"
    assert json.loads((base / "unet" / "latest.json").read_text())["version"] == chosen["version"]
    before = (version_dir / "model.tflite").stat().st_mtime_ns
    # The same directory again is a retry: checked, nothing rewritten.
    assert cli_main(["publish", "--model-dir", str(path), "--to", str(base)]) == 0
    assert "already published" in capsys.readouterr().out
    assert (version_dir / "model.tflite").stat().st_mtime_ns == before
    # Other content under that version is refused.
    (path / "model.tflite").write_bytes(b"other")
    tampered = dict(chosen, sha256=publish_lib.manifest_lib.sha256_hex(b"other"))
    (path / "manifest.json").write_text(json.dumps(tampered))
    assert cli_main(["publish", "--model-dir", str(path), "--to", str(base)]) == 1
    assert "VersionExistsError" in capsys.readouterr().err


def _at(day: int) -> datetime:
    return datetime(2026, 1, day, 12, 0, 0, tzinfo=UTC)


def test_a_version_without_its_manifest_is_completed_by_a_retry(bucket, tmp_path, monkeypatch):
    base = f"gs://{bucket.name}"
    path, chosen = model_dir(tmp_path / "model", b"model-bytes")
    prefix = f"unet/{chosen['version']}"
    real_write = GcsLocation.write_bytes

    def dropped_connection(self, name, data, **kwargs):
        if name == "manifest.json":
            raise ConnectionError("upload interrupted")
        return real_write(self, name, data, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(GcsLocation, "write_bytes", dropped_connection)
        with pytest.raises(ConnectionError):
            publish_lib.publish(path, base)
    assert _objects(bucket) == [f"{prefix}/model.tflite"]
    assert publish_lib.read_latest(base) is None
    # A torn leftover is replaced too: without a manifest the version does not exist yet.
    bucket.blob(f"{prefix}/model.tflite").upload_from_string(b"torn")

    done = publish_lib.publish(path, base)
    assert done.latest_moved and not done.already_published
    assert bucket.blob(f"{prefix}/model.tflite").download_as_bytes() == b"model-bytes"
    assert _objects(bucket) == sorted(
        ["unet/latest.json", f"{prefix}/manifest.json", f"{prefix}/model.tflite"]
    )


def test_a_retry_after_the_version_is_complete_moves_latest(bucket, tmp_path, monkeypatch):
    base = f"gs://{bucket.name}"
    path, chosen = model_dir(tmp_path / "model", b"model-bytes")

    def crash(*args, **kwargs):
        raise ConnectionError("preempted before the pointer moved")

    with monkeypatch.context() as patch:
        patch.setattr(publish_lib, "_move_latest", crash)
        with pytest.raises(ConnectionError):
            publish_lib.publish(path, base)
    model_blob = bucket.get_blob(f"unet/{chosen['version']}/model.tflite")
    done = publish_lib.publish(path, base)
    assert done.already_published and done.latest_moved
    assert publish_lib.read_latest(base)["version"] == chosen["version"]
    again = bucket.get_blob(f"unet/{chosen['version']}/model.tflite")
    assert again.generation == model_blob.generation  # verified, not uploaded again


def test_latest_only_moves_forward(bucket, tmp_path):
    base = f"gs://{bucket.name}"
    newer_path, newer = model_dir(tmp_path / "newer", b"newer", created=_at(3))
    older_path, older = model_dir(tmp_path / "older", b"older", created=_at(2))
    assert publish_lib.publish(newer_path, base).latest_moved
    late = publish_lib.publish(older_path, base)  # published, but not made latest
    assert not late.latest_moved
    assert bucket.blob(f"unet/{older['version']}/manifest.json").exists()
    assert publish_lib.read_latest(base)["version"] == newer["version"]


@pytest.mark.parametrize("racer_is_newer", [True, False])
def test_concurrent_publishers_leave_latest_at_the_newest(
    bucket, gcs_server, tmp_path, monkeypatch, racer_is_newer
):
    """Publisher A reads `latest`; B moves it before A writes. A's write carries the generation
    it read, fails, and A decides again on what is there now."""
    base = f"gs://{bucket.name}"
    first_path, _ = model_dir(tmp_path / "first", b"first", created=_at(1))
    a_path, a = model_dir(tmp_path / "a", b"a", created=_at(3 if racer_is_newer else 4))
    b_path, b = model_dir(tmp_path / "b", b"b", created=_at(4 if racer_is_newer else 3))
    publish_lib.publish(first_path, base)
    real_write = GcsLocation.write_if_generation
    raced = []

    def b_moves_latest_first(self, name, data, generation):
        if not raced:
            raced.append(generation)
            publish_lib.publish(b_path, base)  # B completes while A holds a stale generation
        return real_write(self, name, data, generation)

    with (
        FaultProxy(gcs_server.url, enforce_preconditions=True) as proxy,
        monkeypatch.context() as patch,
    ):
        patch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        patch.setattr(GcsLocation, "write_if_generation", b_moves_latest_first)
        done = publish_lib.publish(a_path, base)
        assert proxy.precondition_failures == 1  # A's first write, with the stale generation
    newest = b if racer_is_newer else a
    assert publish_lib.read_latest(base)["version"] == newest["version"]
    assert done.latest_moved is (not racer_is_newer)


def test_local_conditional_write_refuses_a_stale_generation(tmp_path):
    location = LocalLocation(tmp_path)
    assert location.read_with_generation("latest.json") == (None, ABSENT)
    location.write_if_generation("latest.json", b"one", ABSENT)
    data, generation = location.read_with_generation("latest.json")
    assert data == b"one"
    with pytest.raises(PreconditionFailedError):
        location.write_if_generation("latest.json", b"two", ABSENT)
    location.write_bytes("latest.json", b"someone else")  # moved in between
    with pytest.raises(PreconditionFailedError):
        location.write_if_generation("latest.json", b"two", generation)
    _, current = location.read_with_generation("latest.json")
    location.write_if_generation("latest.json", b"two", current)
    assert location.read_bytes("latest.json") == b"two"
