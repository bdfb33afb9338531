"""Publishing against the real GCS emulator (and a local directory)."""

import json

import pytest

from model_build import publish as publish_lib
from model_build.cli import main as cli_main
from model_build.publish import PublishVerificationError, VersionExistsError
from model_build.storage import GcsLocation
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
    first_path, first = model_dir(tmp_path / "first", b"first")
    publish_lib.publish(first_path, base)
    second_path, second = model_dir(tmp_path / "second", b"second")
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


def test_publish_without_moving_latest(bucket, tmp_path):
    path, _ = model_dir(tmp_path / "model", b"quiet")
    done = publish_lib.publish(path, f"gs://{bucket.name}", move_latest=False)
    assert not done.latest_moved
    assert publish_lib.read_latest(f"gs://{bucket.name}") is None


def test_publish_to_a_local_directory_and_refuse_again_from_the_cli(tmp_path, capsys):
    path, chosen = model_dir(tmp_path / "model", b"local")
    base = tmp_path / "registry"
    assert cli_main(["publish", "--model-dir", str(path), "--to", str(base)]) == 0
    version_dir = base / "unet" / chosen["version"]
    assert (version_dir / "model.tflite").read_bytes() == b"local"
    assert json.loads((base / "unet" / "latest.json").read_text())["version"] == chosen["version"]
    assert cli_main(["publish", "--model-dir", str(path), "--to", str(base)]) == 2
    assert "VersionExistsError" in capsys.readouterr().out
