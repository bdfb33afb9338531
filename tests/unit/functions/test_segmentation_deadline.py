"""The request deadline (segmentation/deadline.py): every storage call of a request, model
loading included, gets a retry timeout and an HTTP timeout that end by it, and no call is
started once it has passed (a transient error: Pub/Sub redelivers). Clocks are fake throughout:
nothing here waits."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from google.api_core.retry import Retry
from google.cloud.storage.retry import ConditionalRetryPolicy
from segmentation import contract
from segmentation.deadline import Deadline, DeadlineGuard, bound, margin_seconds
from segmentation.errors import (
    ModelError,
    RequestDeadlineError,
    StorageUnavailableError,
    TransientError,
)
from segmentation.model import StableModel, serving_models
from segmentation.pipeline import handle_cloud_event
from segmentation.results import Outcome
from segmentation.settings import Settings
from segmentation.storage import RETRY_TIMEOUT_S, GcsObjectStore, call_budget

from tests.fakes import notifications
from tests.fakes.images import halves_png
from tests.fakes.notifications import INPUT_BUCKET, OUTPUT_BUCKET
from tests.fakes.storage import FakeObjectStore

MODELS = "demo-seg-models"
LATEST = f"gs://{MODELS}/unet/latest"
NAME = "uploads/cat.png"
GENERATION = 1763731200123456


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- the deadline ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "margin"), [(300, 15.0), (600, 30.0), (60, 10.0), (8, 4.0), (1, 0.5)]
)
def test_the_margin_is_5_percent_at_least_10_s_at_most_half(timeout: int, margin: float) -> None:
    assert margin_seconds(timeout) == pytest.approx(margin)


def test_a_request_deadline_counts_down_on_its_clock() -> None:
    clock = FakeClock()
    deadline = Deadline.for_request(300, clock=clock)
    assert deadline.remaining() == pytest.approx(285)
    clock.advance(280)
    assert deadline.check("stat gs://b/o") == pytest.approx(5)
    clock.advance(5)
    assert deadline.remaining() == 0
    with pytest.raises(RequestDeadlineError, match="stat gs://b/o: not started") as info:
        deadline.check("stat gs://b/o")
    assert isinstance(info.value, TransientError)  # redelivered, never acked
    assert info.value.reason == "request_deadline"


@pytest.mark.parametrize("remaining", [0.2, 1, 3, 8, 60, 179, 180, 285, 1000])
def test_a_call_budget_ends_within_the_time_left(remaining: float) -> None:
    attempt, retry = call_budget(remaining)
    assert 0 < attempt <= 60 and 0 < retry <= RETRY_TIMEOUT_S == 120
    assert attempt + retry <= remaining + 1e-9
    if remaining >= 180:  # plenty of time: the library's own defaults
        assert (attempt, retry) == (60, 120)


# --- GcsObjectStore bound to a deadline -------------------------------------------------------


def _client_with_blob() -> mock.Mock:
    client = mock.Mock()
    bucket = client.bucket.return_value
    blob = bucket.blob.return_value
    bucket.get_blob.return_value = None
    blob.download_as_bytes.return_value = b"abc"
    blob.bucket.name, blob.name, blob.generation, blob.size = "bkt", "obj", 9, 3
    blob.content_type, blob.metadata = "image/png", {}
    return client


def _calls(client: mock.Mock) -> dict[str, Any]:
    """The keyword arguments of each library call, by method name."""
    bucket = client.bucket.return_value
    blob = bucket.blob.return_value
    return {
        "get_blob": bucket.get_blob.call_args.kwargs,
        "download_as_bytes": blob.download_as_bytes.call_args.kwargs,
        "download_to_file": blob.download_to_file.call_args.kwargs,
        "upload_from_string": blob.upload_from_string.call_args.kwargs,
        "delete": blob.delete.call_args.kwargs,
    }


def _every_call(store: Any) -> None:
    store.stat("bkt", "obj")
    store.read("bkt", "obj")
    store.read("bkt", "obj", limit=10)
    store.write("bkt", "obj", b"png", content_type="image/png", metadata={}, if_generation_match=0)
    store.delete("bkt", "obj", if_generation_match=9)


def test_a_call_with_3_s_left_retries_and_waits_at_most_3_s() -> None:
    clock = FakeClock()
    client = _client_with_blob()
    store = GcsObjectStore(client).within(Deadline.after(3, clock=clock))
    _every_call(store)
    for method, kwargs in _calls(client).items():
        retry = kwargs["retry"]
        if method == "upload_from_string":  # still retried only with a generation precondition
            assert isinstance(retry, ConditionalRetryPolicy)
            assert retry.get_retry_policy_if_conditions_met(query_params={}) is None
            retry = retry.get_retry_policy_if_conditions_met(query_params={"ifGenerationMatch": 0})
        assert isinstance(retry, Retry), method
        assert retry.timeout is not None and 0 < retry.timeout <= 3, method
        assert 0 < kwargs["timeout"] <= 3, method
        assert retry.timeout + kwargs["timeout"] <= 3, method


def test_a_call_with_plenty_of_time_keeps_the_library_defaults() -> None:
    client = _client_with_blob()
    store = GcsObjectStore(client).within(Deadline.after(285, clock=FakeClock()))
    _every_call(store)
    for kwargs in _calls(client).values():
        retry = kwargs["retry"]
        if isinstance(retry, ConditionalRetryPolicy):
            retry = retry.retry_policy
        assert (kwargs["timeout"], retry.timeout) == (60, 120)


def test_the_time_left_is_read_when_each_call_starts() -> None:
    clock = FakeClock()
    client = _client_with_blob()
    store = GcsObjectStore(client).within(Deadline.after(285, clock=clock))
    store.stat("bkt", "obj")
    assert client.bucket.return_value.get_blob.call_args.kwargs["retry"].timeout == 120
    clock.advance(280)  # 5 s left
    store.stat("bkt", "obj")
    kwargs = client.bucket.return_value.get_blob.call_args.kwargs
    assert kwargs["retry"].timeout + kwargs["timeout"] <= 5


@pytest.mark.parametrize("operation", ["stat", "read", "limited read", "write", "delete"])
def test_a_call_with_no_time_left_raises_without_touching_the_network(operation: str) -> None:
    clock = FakeClock()
    factory = mock.Mock()
    store = GcsObjectStore(client_factory=factory).within(Deadline.after(2, clock=clock))
    clock.advance(2)
    calls = {
        "stat": lambda: store.stat("bkt", "obj"),
        "read": lambda: store.read("bkt", "obj"),
        "limited read": lambda: store.read("bkt", "obj", limit=10),
        "write": lambda: store.write(
            "bkt", "obj", b"x", content_type="image/png", metadata={}, if_generation_match=0
        ),
        "delete": lambda: store.delete("bkt", "obj", if_generation_match=1),
    }
    with pytest.raises(RequestDeadlineError):
        calls[operation]()
    factory.assert_not_called()  # no client, so no request


def test_a_view_shares_its_stores_client_and_leaves_the_store_unbounded() -> None:
    factory = mock.Mock(return_value=_client_with_blob())
    store = GcsObjectStore(client_factory=factory, timeout=5)
    first = store.within(Deadline.after(100, clock=FakeClock()))
    second = store.within(Deadline.after(100, clock=FakeClock()))
    first.stat("bkt", "obj")
    second.stat("bkt", "obj")
    store.stat("bkt", "obj")
    factory.assert_called_once_with()
    assert store.deadline is None
    get_blob = factory.return_value.bucket.return_value.get_blob
    assert get_blob.call_args.kwargs == {"generation": None, "timeout": 5}  # as before


def test_bound_wraps_a_store_without_its_own_view_in_a_guard(store: FakeObjectStore) -> None:
    clock = FakeClock()
    deadline = Deadline.after(1, clock=clock)
    assert bound(store, None) is store
    guarded = bound(store, deadline)
    assert isinstance(guarded, DeadlineGuard)
    store.put("b", "o", b"data")
    assert guarded.read("b", "o") == b"data"
    clock.advance(1)
    with pytest.raises(RequestDeadlineError):
        guarded.read("b", "o")
    assert store.log == [("read", "b", "o")]
    assert isinstance(bound(GcsObjectStore(mock.Mock()), deadline), GcsObjectStore)


# --- the pipeline: one deadline for the whole request ----------------------------------------


def _settings(tmp_path: Path, model_uri: str, timeout: int = 60) -> Settings:
    return Settings(
        output_bucket=OUTPUT_BUCKET,
        model_uri=model_uri,
        input_bucket=INPUT_BUCKET,
        model_cache_dir=str(tmp_path / "model-cache"),
        request_timeout_seconds=timeout,
    )


def _event(size: int) -> Any:
    message = notifications.message(INPUT_BUCKET, NAME, GENERATION, size=size)
    return notifications.eventarc_event(message)


class SlowStore(FakeObjectStore):
    """The fake store on a fake clock: every call takes `seconds`."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def stat(self, *args: Any, **kwargs: Any) -> Any:
        self.clock.advance(self.seconds)
        return super().stat(*args, **kwargs)


def test_a_request_stops_calling_storage_at_its_deadline(
    tmp_path: Path, tiny_model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    store = SlowStore(clock, seconds=30)  # 60 s timeout: 50 s to work, two stats fit
    png = halves_png(32, 32)
    store.put(INPUT_BUCKET, NAME, png, generation=GENERATION)
    with pytest.raises(RequestDeadlineError):
        handle_cloud_event(
            _event(len(png)),
            store=store,
            model=tiny_model,
            settings=_settings(tmp_path, "/unused"),
            clock=clock,
        )
    assert store.mutations == [] and store.log == []  # two stats, then nothing was started
    summary = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line][-1]
    assert summary["outcome"] == "transient_error" and summary["reason"] == "request_deadline"

    store.seconds = 0  # the redelivery, with time to spare, does the job
    result = handle_cloud_event(
        _event(len(png)),
        store=store,
        model=tiny_model,
        settings=_settings(tmp_path, "/unused"),
        clock=clock,
    )
    assert result.outcome is Outcome.MASK_WRITTEN


# --- model loading within the request's deadline ---------------------------------------------


def _publish(store: FakeObjectStore, directory: Path) -> str:
    manifest = json.loads((directory / "manifest.json").read_text())
    version = manifest["version"]
    for file in ("model.tflite", "manifest.json"):
        store.put(MODELS, f"unet/{version}/{file}", (directory / file).read_bytes())
    pointer = contract.latest_pointer(version, f"gs://{MODELS}/unet/{version}", manifest["sha256"])
    store.put(MODELS, "unet/latest.json", json.dumps(pointer).encode())
    return version


def _model_reads(store: FakeObjectStore) -> list[str]:
    return [name for op, bucket, name in store.log if op == "read" and bucket == MODELS]


def test_a_cold_start_load_is_bounded_by_the_request_deadline(
    store: FakeObjectStore, tiny_model_dir: Path, tmp_path: Path
) -> None:
    _publish(store, tiny_model_dir)
    clock = FakeClock()
    models = serving_models(LATEST, store=store, cache_dir=tmp_path, num_threads=1, clock=clock)
    deadline = Deadline.after(10, clock=clock)
    clock.advance(10)
    with pytest.raises(RequestDeadlineError):
        models.select(INPUT_BUCKET, NAME, GENERATION, deadline=deadline)
    assert _model_reads(store) == [] and not models.loaded
    selection = models.select(
        INPUT_BUCKET, NAME, GENERATION, deadline=Deadline.after(10, clock=clock)
    )
    assert selection.model.version and models.loaded


class OutageStore(FakeObjectStore):
    """The fake store with an outage of the buckets in `down` (every call answers 503)."""

    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()

    def stat(self, bucket: str, *args: Any, **kwargs: Any) -> Any:
        self._outage(bucket)
        return super().stat(bucket, *args, **kwargs)

    def read(self, bucket: str, *args: Any, **kwargs: Any) -> bytes:
        self._outage(bucket)
        return super().read(bucket, *args, **kwargs)

    def _outage(self, bucket: str) -> None:
        if bucket in self.down:
            raise StorageUnavailableError(f"gs://{bucket}: 503 (outage)")


def test_a_model_bucket_outage_at_cold_start_is_transient_and_loses_nothing(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Not a ModelError (a configuration error): the upload is redelivered and done later."""
    store = OutageStore()
    _publish(store, tiny_model_dir)
    png = halves_png(32, 32)
    store.put(INPUT_BUCKET, NAME, png, generation=GENERATION)
    models = serving_models(LATEST, store=store, cache_dir=tmp_path / "cache", num_threads=1)
    settings = _settings(tmp_path, LATEST)
    store.down.add(MODELS)
    with pytest.raises(TransientError) as info:
        handle_cloud_event(_event(len(png)), store=store, model=models, settings=settings)
    assert isinstance(info.value, StorageUnavailableError)
    assert not isinstance(info.value, ModelError) and not models.loaded
    assert store.mutations == []

    store.down.clear()  # the outage ends; Pub/Sub redelivers the same message
    result = handle_cloud_event(_event(len(png)), store=store, model=models, settings=settings)
    assert result.outcome is Outcome.MASK_WRITTEN
    assert store.get(OUTPUT_BUCKET, f"masks/{NAME}.png") is not None


def test_a_load_waits_for_another_requests_load_only_until_its_deadline(
    store: FakeObjectStore, tiny_model_dir: Path, tmp_path: Path
) -> None:
    _publish(store, tiny_model_dir)
    stable = StableModel(LATEST, store=store, cache_dir=tmp_path, num_threads=1)
    holding = threading.Event()
    release = threading.Event()

    def other_request() -> None:
        with stable._load_lock:  # another request loading the model
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=other_request)
    thread.start()
    try:
        assert holding.wait(10)
        with pytest.raises(RequestDeadlineError, match="another request"):
            stable.get(Deadline.after(0.05))  # (the real clock: a lock's timeout runs on it)
    finally:
        release.set()
        thread.join(10)
    assert stable.get(Deadline.after(10)).version


def test_a_refresh_reads_within_the_deadline_of_the_request_that_started_it(
    store: FakeObjectStore,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _publish(store, tiny_model_dir)
    clock = FakeClock()
    started: list[Any] = []
    stable = StableModel(
        LATEST,
        store=store,
        cache_dir=tmp_path,
        num_threads=1,
        refresh_seconds=300,
        clock=clock,
        background=started.append,  # run later, by hand
    )
    loaded = stable.get(Deadline.after(60, clock=clock))
    reads = len(_model_reads(store))
    clock.advance(300)  # a refresh is due
    assert stable.get(Deadline.after(60, clock=clock)) is loaded
    [refresh] = started
    clock.advance(60)  # the request's deadline passed before the refresh ran
    refresh()
    assert len(_model_reads(store)) == reads  # latest.json was not read
    assert stable.get() is loaded  # the loaded model keeps serving
    [warning] = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if '"model_refresh_failed"' in line
    ]
    assert "RequestDeadlineError" in warning["error"]
