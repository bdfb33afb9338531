"""Model rollout in the function: the hash routing of the canary, the refresh of `latest` on a
fake clock (a failed refresh keeps serving), the canary's fallback, the settings, and the mask
metadata and summary line naming the version and track that made the mask."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from segmentation import contract
from segmentation.errors import SettingsError, StorageUnavailableError
from segmentation.model import (
    CANARY_RETRY_SECONDS,
    ROUTING_POINTS,
    ServingModels,
    StableModel,
    routes_to_canary,
    routing_point,
    serving_models,
)
from segmentation.pipeline import handle_cloud_event
from segmentation.results import Outcome, Track
from segmentation.settings import Settings, load_settings

from tests.fakes import notifications
from tests.fakes.images import halves_png
from tests.fakes.notifications import INPUT_BUCKET, OUTPUT_BUCKET
from tests.fakes.storage import FakeObjectStore

MODELS = "demo-seg-models"
LATEST = f"gs://{MODELS}/unet/latest"
REQUIRED = {"OUTPUT_BUCKET": "demo-seg-output", "MODEL_URI": LATEST}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _version(directory: Path) -> str:
    return json.loads((directory / "manifest.json").read_text())["version"]


def _publish(store: FakeObjectStore, directory: Path) -> str:
    version = _version(directory)
    for file in ("model.tflite", "manifest.json"):
        store.put(MODELS, f"unet/{version}/{file}", (directory / file).read_bytes())
    return version


def _point_latest(store: FakeObjectStore, directory: Path) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    version = manifest["version"]
    pointer = contract.latest_pointer(version, f"gs://{MODELS}/unet/{version}", manifest["sha256"])
    store.put(MODELS, "unet/latest.json", json.dumps(pointer).encode())


def _pointer_reads(store: FakeObjectStore) -> int:
    return sum(1 for op, _, name in store.log if op == "read" and name.endswith("latest.json"))


def _events(capsys: pytest.CaptureFixture[str], event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    return [line for line in lines if line.get("event") == event]


@pytest.fixture
def registry(
    store: FakeObjectStore, tiny_model_dir: Path, tiny_int8_model_dir: Path
) -> tuple[str, str]:
    """Two published versions (float32, int8); latest names the first."""
    first, second = _publish(store, tiny_model_dir), _publish(store, tiny_int8_model_dir)
    assert first != second
    _point_latest(store, tiny_model_dir)
    return first, second


def _inline(work: Callable[[], None]) -> None:
    work()


def _stable(store: FakeObjectStore, tmp_path: Path, clock: FakeClock, **kwargs: Any) -> StableModel:
    kwargs.setdefault("refresh_seconds", 300)
    kwargs.setdefault("background", _inline)
    return StableModel(
        kwargs.pop("uri", LATEST),
        store=store,
        cache_dir=tmp_path / "cache",
        num_threads=1,
        clock=clock,
        **kwargs,
    )


# --- routing ---------------------------------------------------------------------------------


def test_routing_point_is_a_stable_hash_of_bucket_name_and_generation() -> None:
    point = routing_point("in", "uploads/cat.png", 17)
    assert 0 <= point < ROUTING_POINTS
    assert routing_point("in", "uploads/cat.png", 17) == point  # every redelivery agrees
    import hashlib

    digest = hashlib.sha256(b"in\nuploads/cat.png\n17").digest()
    assert point == int.from_bytes(digest[:8], "big") % ROUTING_POINTS
    others = {routing_point("in", "uploads/cat.png", g) for g in range(18, 40)}
    assert len(others) > 10  # a re-upload (new generation) is routed afresh


@pytest.mark.parametrize("percent", [0, 0.5, 10, 37.5, 50, 100])
def test_the_canary_share_matches_the_percent(percent: float) -> None:
    uploads = [("in", f"uploads/{i:05d}.jpg", 1_700_000_000_000_000 + i) for i in range(20_000)]
    share = sum(routes_to_canary(*upload, percent) for upload in uploads) / len(uploads)
    assert share == pytest.approx(percent / 100, abs=0.01)
    if percent == 0:
        assert share == 0
    if percent == 100:
        assert share == 1


# --- refreshing `latest` ---------------------------------------------------------------------


def test_a_warm_instance_follows_latest_within_the_interval(
    store: FakeObjectStore, registry: tuple[str, str], tiny_int8_model_dir: Path, tmp_path: Path
) -> None:
    first, second = registry
    clock = FakeClock()
    stable = _stable(store, tmp_path, clock)
    assert stable.get().version == first
    _point_latest(store, tiny_int8_model_dir)
    reads = _pointer_reads(store)
    clock.advance(299)
    assert stable.get().version == first  # not due yet: latest.json is not even read
    assert _pointer_reads(store) == reads
    clock.advance(1)
    assert stable.get().version == second  # due: re-read, loaded, swapped
    assert _pointer_reads(store) == reads + 1
    assert (tmp_path / "cache" / second / "model.tflite").is_file()  # cached like the first
    for _ in range(5):  # at most one check per interval
        assert stable.get().version == second
    assert _pointer_reads(store) == reads + 1


def test_an_unchanged_pointer_loads_nothing(
    store: FakeObjectStore, registry: tuple[str, str], tmp_path: Path
) -> None:
    clock = FakeClock()
    stable = _stable(store, tmp_path, clock)
    model = stable.get()
    model_reads = [e for e in store.log if e[2].endswith(".tflite")]
    clock.advance(300)
    assert stable.get() is model
    assert [e for e in store.log if e[2].endswith(".tflite")] == model_reads


def test_a_failed_refresh_keeps_serving_and_logs_a_warning(
    store: FakeObjectStore,
    registry: tuple[str, str],
    tiny_int8_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second = registry
    clock = FakeClock()
    stable = _stable(store, tmp_path, clock)
    stable.get()
    _point_latest(store, tiny_int8_model_dir)
    store.fail_next("read", StorageUnavailableError("503 from storage"))
    clock.advance(300)
    assert stable.get().version == first  # the request is served, with the loaded model
    [warning] = _events(capsys, "model_refresh_failed")
    assert warning["severity"] == "WARNING" and warning["model_version"] == first
    assert "503 from storage" in warning["error"]
    clock.advance(100)
    assert stable.get().version == first  # the next try waits a whole interval
    clock.advance(200)
    assert stable.get().version == second
    [refreshed] = _events(capsys, "model_refreshed")
    assert refreshed["previous_model_version"] == first and refreshed["model_version"] == second


def test_a_corrupt_new_version_is_refused_and_the_old_one_keeps_serving(
    store: FakeObjectStore,
    registry: tuple[str, str],
    tiny_int8_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second = registry
    store.put(MODELS, f"unet/{second}/model.tflite", b"bit rot")
    clock = FakeClock()
    stable = _stable(store, tmp_path, clock)
    stable.get()
    _point_latest(store, tiny_int8_model_dir)
    clock.advance(300)
    assert stable.get().version == first
    [warning] = _events(capsys, "model_refresh_failed")
    assert "ModelIntegrityError" in warning["error"]


def test_a_refresh_never_blocks_requests_and_runs_once_at_a_time(
    store: FakeObjectStore, registry: tuple[str, str], tiny_int8_model_dir: Path, tmp_path: Path
) -> None:
    first, second = registry
    pending: list[Callable[[], None]] = []
    clock = FakeClock()
    stable = _stable(store, tmp_path, clock, background=pending.append)
    stable.get()
    _point_latest(store, tiny_int8_model_dir)
    clock.advance(300)
    assert stable.get().version == first  # the refresh is scheduled, not awaited
    clock.advance(300)
    assert stable.get().version == first  # one refresh at a time: none scheduled meanwhile
    assert len(pending) == 1
    pending.pop()()
    assert stable.get().version == second


def test_the_swap_is_atomic_and_the_new_model_serves_every_thread(
    store: FakeObjectStore, registry: tuple[str, str], tiny_int8_model_dir: Path, tmp_path: Path
) -> None:
    _first, second = registry
    clock = FakeClock()
    stable = _stable(store, tmp_path, clock)
    old = stable.get()
    image = np.zeros((128, 128, 3), np.uint8)
    image[:, :, 0] = 200
    assert (old.predict(image) == 0).all()
    _point_latest(store, tiny_int8_model_dir)
    clock.advance(300)
    new = stable.get()
    assert new is not old and new.version == second
    assert (old.predict(image) == 0).all()  # a request holding the old model finishes with it
    seen: list[Any] = []

    def worker() -> None:
        model = stable.get()
        assert (model.predict(image) == 0).all()
        seen.append(model)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [new, new]
    assert new.interpreters == 1  # the pool (size 1 here) is shared by the threads


@pytest.mark.parametrize(("uri", "refresh"), [(f"gs://{MODELS}/unet/PINNED", 300), (LATEST, 0)])
def test_a_pinned_uri_or_a_zero_interval_never_refreshes(
    store: FakeObjectStore,
    registry: tuple[str, str],
    tiny_int8_model_dir: Path,
    tmp_path: Path,
    uri: str,
    refresh: int,
) -> None:
    first, _second = registry
    uri = uri.replace("PINNED", first)
    clock = FakeClock()
    stable = _stable(store, tmp_path, clock, uri=uri, refresh_seconds=refresh)
    stable.get()
    reads = _pointer_reads(store)
    _point_latest(store, tiny_int8_model_dir)
    clock.advance(10_000)
    assert stable.get().version == first
    assert _pointer_reads(store) == reads


def test_the_default_background_is_a_thread(
    store: FakeObjectStore, registry: tuple[str, str], tiny_int8_model_dir: Path, tmp_path: Path
) -> None:
    _first, second = registry
    clock = FakeClock()
    stable = StableModel(
        LATEST, store=store, cache_dir=tmp_path, num_threads=1, refresh_seconds=1, clock=clock
    )
    stable.get()
    _point_latest(store, tiny_int8_model_dir)
    clock.advance(1)
    stable.get()
    for _ in range(200):
        if stable.get().version == second:
            break
        threading.Event().wait(0.05)
    assert stable.get().version == second


# --- the canary ------------------------------------------------------------------------------


def _serving(
    store: FakeObjectStore, tmp_path: Path, clock: FakeClock, canary: str | None, percent: float
) -> ServingModels:
    return serving_models(
        LATEST,
        store=store,
        cache_dir=tmp_path / "cache",
        num_threads=1,
        refresh_seconds=300,
        canary_version=canary,
        canary_percent=percent,
        clock=clock,
        background=_inline,
    )


def test_uploads_are_routed_by_their_hash(
    store: FakeObjectStore, registry: tuple[str, str], tmp_path: Path
) -> None:
    first, second = registry
    models = _serving(store, tmp_path, FakeClock(), second, 30)
    tracks = []
    for i in range(60):
        upload = (INPUT_BUCKET, f"uploads/{i}.png", 1000 + i)
        selection = models.select(*upload)
        expected = routes_to_canary(*upload, 30)
        assert selection.track is (Track.CANARY if expected else Track.STABLE)
        assert selection.model.version == (second if expected else first)
        again = models.select(*upload)  # a redelivery
        assert (again.track, again.model.version) == (selection.track, selection.model.version)
        tracks.append(selection.track)
    assert Track.CANARY in tracks and Track.STABLE in tracks


def test_a_promoted_canary_serves_as_stable(
    store: FakeObjectStore, registry: tuple[str, str], tiny_int8_model_dir: Path, tmp_path: Path
) -> None:
    _first, second = registry
    clock = FakeClock()
    models = _serving(store, tmp_path, clock, second, 100)
    assert models.select(INPUT_BUCKET, "a.png", 1).track is Track.CANARY
    _point_latest(store, tiny_int8_model_dir)  # promote the canary's version
    clock.advance(300)
    selection = models.select(INPUT_BUCKET, "a.png", 1)
    assert (selection.track, selection.model.version) == (Track.STABLE, second)


def test_a_broken_canary_sends_its_uploads_to_stable_and_is_retried_later(
    store: FakeObjectStore,
    registry: tuple[str, str],
    tiny_int8_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second = registry
    good = (tiny_int8_model_dir / "model.tflite").read_bytes()
    store.put(MODELS, f"unet/{second}/model.tflite", b"truncated")
    clock = FakeClock()
    models = _serving(store, tmp_path, clock, second, 100)
    selection = models.select(INPUT_BUCKET, "a.png", 1)
    assert (selection.track, selection.model.version) == (Track.STABLE, first)
    [warning] = _events(capsys, "canary_unavailable")
    assert warning["canary_version"] == second and "ModelIntegrityError" in warning["error"]
    store.put(MODELS, f"unet/{second}/model.tflite", good)  # fixed
    reads = len(store.log)
    assert models.select(INPUT_BUCKET, "b.png", 1).track is Track.STABLE  # not retried yet
    assert len(store.log) == reads
    clock.advance(CANARY_RETRY_SECONDS)
    selection = models.select(INPUT_BUCKET, "c.png", 1)
    assert (selection.track, selection.model.version) == (Track.CANARY, second)


def test_a_zero_percent_canary_is_never_built(
    store: FakeObjectStore, registry: tuple[str, str], tmp_path: Path
) -> None:
    _first, second = registry
    models = _serving(store, tmp_path, FakeClock(), second, 0)
    assert models.canary is None
    assert all(models.select(INPUT_BUCKET, f"{i}", i).track is Track.STABLE for i in range(50))


# --- the pipeline: metadata and summary line -------------------------------------------------


@pytest.mark.parametrize(("percent", "track"), [(0, Track.STABLE), (100, Track.CANARY)])
def test_the_mask_and_the_summary_name_the_version_and_track_that_made_it(
    store: FakeObjectStore,
    registry: tuple[str, str],
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    percent: float,
    track: Track,
) -> None:
    first, second = registry
    models = _serving(store, tmp_path, FakeClock(), second, percent)
    name = "uploads/cat.png"
    generation = store.put(INPUT_BUCKET, name, halves_png(64, 48)).generation
    message = notifications.message(INPUT_BUCKET, name, generation, size=100)
    capsys.readouterr()
    result = handle_cloud_event(
        notifications.eventarc_event(message), store=store, model=models, settings=settings
    )
    assert result.outcome is Outcome.MASK_WRITTEN
    version = second if track is Track.CANARY else first
    metadata = store.get(OUTPUT_BUCKET, f"masks/{name}.png").info.metadata
    assert metadata["model-version"] == version and metadata["model-track"] == str(track)
    assert "timing-model_load-ms" in metadata
    [summary] = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"outcome"' in line
    ]
    assert summary["model_version"] == version and summary["model_track"] == str(track)


def test_a_plain_model_is_the_stable_track(
    store: FakeObjectStore, tiny_model: Any, settings: Settings
) -> None:
    name = "uploads/dog.png"
    generation = store.put(INPUT_BUCKET, name, halves_png(32, 32)).generation
    message = notifications.message(INPUT_BUCKET, name, generation, size=100)
    event = notifications.eventarc_event(message)
    result = handle_cloud_event(event, store=store, model=tiny_model, settings=settings)
    assert result.model_track is Track.STABLE
    assert store.get(OUTPUT_BUCKET, f"masks/{name}.png").info.metadata["model-track"] == "stable"


# --- settings --------------------------------------------------------------------------------


def test_rollout_settings_defaults() -> None:
    settings = load_settings(REQUIRED)
    assert settings.model_refresh_seconds == 300
    assert settings.canary_model_version is None and settings.canary_percent == 0
    assert not settings.canary_enabled


def test_rollout_settings_are_read() -> None:
    settings = load_settings(
        {
            **REQUIRED,
            "MODEL_REFRESH_SECONDS": "0",
            "CANARY_MODEL_VERSION": "20261121-131500-ab12cd34",
            "CANARY_PERCENT": "12.5",
        }
    )
    assert settings.model_refresh_seconds == 0
    assert settings.canary_model_version == "20261121-131500-ab12cd34"
    assert settings.canary_percent == 12.5 and settings.canary_enabled


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MODEL_REFRESH_SECONDS": "-1"}, "MODEL_REFRESH_SECONDS"),
        ({"MODEL_REFRESH_SECONDS": "5m"}, "MODEL_REFRESH_SECONDS"),
        ({"CANARY_PERCENT": "101", "CANARY_MODEL_VERSION": "v2"}, "CANARY_PERCENT"),
        ({"CANARY_PERCENT": "-0.5", "CANARY_MODEL_VERSION": "v2"}, "CANARY_PERCENT"),
        ({"CANARY_PERCENT": "nan", "CANARY_MODEL_VERSION": "v2"}, "CANARY_PERCENT"),
        ({"CANARY_PERCENT": "ten", "CANARY_MODEL_VERSION": "v2"}, "CANARY_PERCENT"),
        ({"CANARY_PERCENT": "10"}, "CANARY_MODEL_VERSION"),
        ({"CANARY_MODEL_VERSION": "../v2", "CANARY_PERCENT": "10"}, "CANARY_MODEL_VERSION"),
        ({"CANARY_MODEL_VERSION": "latest"}, "CANARY_MODEL_VERSION"),
        ({"CANARY_MODEL_VERSION": "v2", "MODEL_URI": "models"}, "CANARY_MODEL_VERSION"),
    ],
)
def test_bad_rollout_settings_name_their_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings({**REQUIRED, **env})
    assert exc.value.variable == variable
    assert str(exc.value).startswith(f"{variable}: ")
