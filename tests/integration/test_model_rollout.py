"""Model rollout on the local stack: two versions of the tiny model published in the emulator's
model registry, the function following `gs://.../unet/latest` with MODEL_REFRESH_SECONDS=1 and a
50 % canary of the second version.

* the canary share of 40 uploads matches the percent within tolerance, and every upload is on
  exactly the track its hash names; a redelivery of an object (its mask deleted, the same
  notification again) lands on the same version;
* `segment models compare` counts the same masks from their metadata;
* `segment models promote` and `rollback` move latest.json, and new masks follow within about a
  refresh interval.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from segmentation.model import routes_to_canary
from segmentation.storage import mask_name

from segment import cli, clients, notifier
from segment.stack import LocalStack, StackNames, StackOptions
from tests.fakes.fixtures import tiny_int8_model_dir, tiny_model_dir
from tests.fakes.images import halves_png
from tests.integration.conftest import FAST_POLICY, StackDriver, wait_until

pytestmark = pytest.mark.integration

__all__ = ["tiny_int8_model_dir", "tiny_model_dir"]

CANARY_PERCENT = 50
REFRESH_SECONDS = 1
UPLOADS = 40
IMAGE = halves_png(32, 32)


def _version(directory: Path) -> str:
    return json.loads((directory / "manifest.json").read_text())["version"]


@pytest.fixture(scope="module")
def versions(tiny_model_dir: Path, tiny_int8_model_dir: Path) -> tuple[str, str]:
    """(stable, canary): the float32 and the int8 tiny model's versions."""
    return _version(tiny_model_dir), _version(tiny_int8_model_dir)


@pytest.fixture(scope="module")
def rollout(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    tiny_int8_model_dir: Path,
    versions: tuple[str, str],
) -> Iterator[StackDriver]:
    names = StackNames()
    options = StackOptions(
        log_dir=tmp_path_factory.mktemp("rollout-logs"),
        model_uri=f"gs://{names.models_bucket}/unet/latest",
        names=names,
        policy=FAST_POLICY,
        function_env={
            "MODEL_REFRESH_SECONDS": str(REFRESH_SECONDS),
            "CANARY_MODEL_VERSION": versions[1],
            "CANARY_PERCENT": str(CANARY_PERCENT),
        },
    )
    with LocalStack(options) as stack:
        endpoints = stack.endpoints
        driver = StackDriver(
            stack,
            clients.storage_client(endpoints),
            clients.publisher_client(endpoints),
            clients.subscriber_client(endpoints),
        )
        models = driver.storage.bucket(names.models_bucket)
        for directory in (tiny_model_dir, tiny_int8_model_dir):  # as model_build publish does
            for file in ("model.tflite", "manifest.json"):
                blob = models.blob(f"unet/{_version(directory)}/{file}")
                blob.upload_from_filename(str(directory / file))
        yield driver


@pytest.fixture
def segment_env(rollout: StackDriver, monkeypatch: pytest.MonkeyPatch) -> StackDriver:
    """The variables `segment local up` prints, for the in-process `segment`."""
    for key, value in rollout.stack.env().items():
        monkeypatch.setenv(key, value)
    return rollout


def _segment(*argv: str) -> None:
    assert cli.main(list(argv)) == 0, argv


def _upload(driver: StackDriver, name: str) -> Any:
    blob = driver.upload(name, IMAGE)
    notifier.publish_notification(driver.publisher, driver.stack.pipeline.topic, blob)
    return blob


def _mask_metadata(driver: StackDriver, blob: Any) -> dict[str, str]:
    def probe() -> dict[str, str] | None:
        mask = driver.output_bucket.get_blob(mask_name(blob.name))
        if mask is None or mask.metadata.get("source-generation") != str(blob.generation):
            return None
        return dict(mask.metadata)

    return wait_until(probe, timeout=60, what=f"the mask of {blob.name}")


def _expected_track(driver: StackDriver, blob: Any) -> str:
    bucket = driver.stack.names.input_bucket
    canary = routes_to_canary(bucket, blob.name, int(blob.generation), CANARY_PERCENT)
    return "canary" if canary else "stable"


def _follows(driver: StackDriver, prefix: str, version: str, *, within: float) -> float:
    """Uploads one image after another until a stable-track mask is made by `version`; the
    seconds that took (the refresh happens in the background of the first request due)."""
    started = time.monotonic()
    for index in range(100):
        blob = _upload(driver, f"{prefix}/probe-{index}.png")
        metadata = _mask_metadata(driver, blob)
        if metadata["model-track"] == "stable" and metadata["model-version"] == version:
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"masks still not made by {version}"
        time.sleep(0.2)
    pytest.fail(f"masks never followed {version}")


def test_canary_split_is_by_hash_and_redeliveries_stay(
    segment_env: StackDriver, versions: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    driver = segment_env
    stable, canary = versions
    _segment("models", "promote", stable)
    blobs = [_upload(driver, f"split/{index:02d}.png") for index in range(UPLOADS)]
    made = {blob.name: _mask_metadata(driver, blob) for blob in blobs}
    for blob in blobs:
        metadata = made[blob.name]
        track = _expected_track(driver, blob)
        assert metadata["model-track"] == track, blob.name
        assert metadata["model-version"] == (canary if track == "canary" else stable)
    share = sum(m["model-track"] == "canary" for m in made.values()) / UPLOADS
    assert share == pytest.approx(CANARY_PERCENT / 100, abs=0.25)

    # Redeliveries: the mask gone (a failed first attempt), the same notification again.
    chosen = [b for b in blobs if made[b.name]["model-track"] == "canary"][:2]
    chosen += [b for b in blobs if made[b.name]["model-track"] == "stable"][:2]
    for blob in chosen:
        driver.output_bucket.blob(mask_name(blob.name)).delete()
        notifier.publish_notification(driver.publisher, driver.stack.pipeline.topic, blob)
    for blob in chosen:
        again = _mask_metadata(driver, blob)
        assert again["model-version"] == made[blob.name]["model-version"]
        assert again["model-track"] == made[blob.name]["model-track"]

    capsys.readouterr()
    _segment("models", "compare", "--prefix", "split/", "--json")
    document = json.loads(capsys.readouterr().out)
    canaries = sum(m["model-track"] == "canary" for m in made.values())
    assert document["tracks"]["canary"]["count"] == canaries
    assert document["tracks"]["canary"]["versions"] == {canary: canaries}
    assert document["tracks"]["stable"]["count"] == UPLOADS - canaries
    assert document["canary_minus_stable"] is not None
    summaries = [s for s in driver.summaries() if s.get("outcome") == "mask_written"]
    assert {s["model_track"] for s in summaries} == {"stable", "canary"}


def test_promote_and_rollback_are_followed_within_the_refresh_interval(
    segment_env: StackDriver, versions: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    driver = segment_env
    stable, canary = versions
    _segment("models", "promote", stable)  # (already latest when the module runs in order)
    _segment("models", "promote", canary)
    _follows(driver, "promoted", canary, within=REFRESH_SECONDS + 20)
    # The promoted canary is the stable version now: every upload is stable, on it.
    for index in range(6):
        metadata = _mask_metadata(driver, _upload(driver, f"promoted/after-{index}.png"))
        assert (metadata["model-track"], metadata["model-version"]) == ("stable", canary)

    _segment("models", "rollback")
    pointer = json.loads(
        driver.storage.bucket(driver.stack.names.models_bucket)
        .blob("unet/latest.json")
        .download_as_bytes()
    )
    assert pointer["version"] == stable
    _follows(driver, "rolled-back", stable, within=REFRESH_SECONDS + 20)
    for index in range(8):  # and the canary takes its share again
        blob = _upload(driver, f"rolled-back/after-{index}.png")
        metadata = _mask_metadata(driver, blob)
        track = _expected_track(driver, blob)
        assert metadata["model-track"] == track
        assert metadata["model-version"] == (canary if track == "canary" else stable)

    refreshed = []
    for line in driver.stack.function_log.read_text().splitlines():
        if line.startswith("{") and '"model_refreshed"' in line:
            refreshed.append(json.loads(line)["model_version"])
    assert refreshed[-2:] == [canary, stable]
