"""segment.models: promote's generation precondition and verification (behind the storage fake
that enforces preconditions), rollback through latest.json's history, listing, compare's
arithmetic, and the `segment models` command lines."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from segmentation import contract
from segmentation.errors import PreconditionFailedError

from model_build import publish as publish_lib
from segment import cli, clients, models
from tests.fakes.storage import FakeObjectStore
from tests.unit.model_build.fabricate import model_dir

BUCKET = "prod-seg-models"
REPO = Path(__file__).resolve().parents[3]


class ListingStore(FakeObjectStore):
    """The precondition-enforcing fake, plus the listing the registry needs."""

    def list_names(self, bucket: str, prefix: str) -> list[str]:
        return [name for name in self.names(bucket) if name.startswith(prefix)]


def _at(day: int) -> datetime:
    return datetime(2026, 12, day, 9, 0, tzinfo=UTC)


def _put_version(
    store: ListingStore, tmp_path: Path, day: int, flip: bool = False, **extra: bytes
) -> str:
    payload = f"model of day {day}".encode()
    path, manifest = model_dir(tmp_path / f"v{day}", payload, _at(day), test_time_flip=flip)
    version = manifest["version"]
    for file in ("model.tflite", "manifest.json"):
        store.put(BUCKET, f"prod/unet/{version}/{file}", (path / file).read_bytes())
    for file, data in extra.items():
        store.put(BUCKET, f"prod/unet/{version}/{file}", data)
    return version


@pytest.fixture
def store() -> ListingStore:
    return ListingStore()


@pytest.fixture
def registry(store: ListingStore) -> models.Registry:
    return models.store_registry(store, BUCKET, "prod")


@pytest.fixture
def versions(store: ListingStore, registry: models.Registry, tmp_path: Path) -> list[str]:
    """Three published versions (oldest first); latest names the first."""
    names = [_put_version(store, tmp_path, day) for day in (1, 2, 3)]
    models.promote(registry, names[0])
    return names


def _latest(store: ListingStore) -> dict[str, Any]:
    return json.loads(store.get(BUCKET, "prod/unet/latest.json").data)


def test_the_family_is_model_build_publish_s() -> None:
    from model_build import publish as publish_lib

    assert models.MODEL_FAMILY is publish_lib.MODEL_FAMILY is contract.MODEL_FAMILY


# --- promote ---------------------------------------------------------------------------------


def test_promote_moves_latest_with_history(
    store: ListingStore, registry: models.Registry, versions: list[str]
) -> None:
    first, second, third = versions
    pointer = _latest(store)
    assert pointer["version"] == first and pointer["previous"] == []
    assert pointer["path"] == f"gs://{BUCKET}/prod/unet/{first}"
    move = models.promote(registry, third, now=_at(9))
    assert (move.moved, move.from_version, move.to_version) == (True, first, third)
    pointer = _latest(store)
    assert pointer["version"] == third and pointer["previous"] == [first]
    assert pointer["published"] == "2026-12-09T09:00:00Z"
    manifest = json.loads(store.get(BUCKET, f"prod/unet/{third}/manifest.json").data)
    assert pointer["sha256"] == manifest["sha256"]
    models.promote(registry, second)
    assert _latest(store)["previous"] == [third, first]
    # The function resolves what promote wrote.
    assert contract.parse_latest_pointer(_latest(store)).version == second


def test_promoting_the_latest_version_writes_nothing(
    store: ListingStore, registry: models.Registry, versions: list[str]
) -> None:
    writes = list(store.mutations)
    move = models.promote(registry, versions[0])
    assert not move.moved and store.mutations == writes


def test_promote_loses_a_race_cleanly(
    store: ListingStore, registry: models.Registry, versions: list[str]
) -> None:
    _first, second, third = versions

    def concurrent_publish(bucket: str, name: str) -> None:  # between our read and our write
        pointer = contract.latest_pointer(third, f"gs://{BUCKET}/prod/unet/{third}", "a" * 64)
        store.put(bucket, name, json.dumps(pointer).encode())

    store.before_write = concurrent_publish
    with pytest.raises(models.LatestMovedError, match="changed while the promote") as exc:
        models.promote(registry, second)
    assert "nothing was written" in str(exc.value)
    assert _latest(store)["version"] == third  # the winner's pointer stands


def test_promote_creates_latest_only_if_it_is_still_absent(
    store: ListingStore, registry: models.Registry, tmp_path: Path
) -> None:
    version = _put_version(store, tmp_path, 4)
    store.before_write = lambda bucket, name: store.put(bucket, name, b"{}")
    with pytest.raises(models.LatestMovedError):
        models.promote(registry, version)
    store.objects.pop((BUCKET, "prod/unet/latest.json"))
    assert models.promote(registry, version).from_version is None
    assert _latest(store)["version"] == version


def _tamper(store: ListingStore, version: str, file: str, change: Any) -> None:
    stored = store.get(BUCKET, f"prod/unet/{version}/{file}")
    store.put(BUCKET, f"prod/unet/{version}/{file}", change(stored.data))


def _manifest_change(**changes: Any) -> Any:
    def change(data: bytes) -> bytes:
        document = json.loads(data)
        document.update(changes)
        return json.dumps(document).encode()

    return change


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        ("model.tflite", lambda data: data[:-1] + b"X", "has sha256"),
        ("model.tflite", lambda data: data + b"X", "bytes, its manifest says"),
        ("manifest.json", _manifest_change(version="20261231-000000-deadbeef"), "names version"),
        ("manifest.json", _manifest_change(schema_version=2), "schema_version"),
        ("manifest.json", lambda data: b"not json", "manifest.json"),
    ],
)
def test_promote_only_moves_to_a_verified_version(
    store: ListingStore,
    registry: models.Registry,
    versions: list[str],
    file: str,
    change: Any,
    message: str,
) -> None:
    target = versions[1]
    _tamper(store, target, file, change)
    writes = list(store.mutations)
    with pytest.raises(models.VerificationError, match=message):
        models.promote(registry, target)
    assert store.mutations == writes and _latest(store)["version"] == versions[0]


@pytest.mark.parametrize("version", ["20270101-000000-00000000", "latest", "../x", "a/b"])
def test_promote_refuses_what_is_not_a_published_version(
    registry: models.Registry, versions: list[str], version: str
) -> None:
    with pytest.raises(models.VerificationError):
        models.promote(registry, version)


def test_promote_refuses_an_incomplete_version(
    store: ListingStore, registry: models.Registry, versions: list[str]
) -> None:
    store.put(BUCKET, "prod/unet/20261205-000000-0badc0de/model.tflite", b"half a publish")
    with pytest.raises(models.VerificationError, match="does not exist"):
        models.promote(registry, "20261205-000000-0badc0de")


def test_promote_replaces_an_invalid_pointer(
    store: ListingStore, registry: models.Registry, versions: list[str]
) -> None:
    store.put(BUCKET, "prod/unet/latest.json", b"{broken")
    models.promote(registry, versions[1])
    assert _latest(store)["version"] == versions[1] and _latest(store)["previous"] == []


# --- rollback --------------------------------------------------------------------------------


def test_rollback_walks_back_through_the_history(
    store: ListingStore, registry: models.Registry, versions: list[str]
) -> None:
    first, second, third = versions
    models.promote(registry, second)
    models.promote(registry, third)
    assert _latest(store)["previous"] == [second, first]
    move = models.rollback(registry)
    assert (move.from_version, move.to_version) == (third, second)
    assert _latest(store)["version"] == second and _latest(store)["previous"] == [first]
    models.rollback(registry)
    assert _latest(store)["version"] == first and _latest(store)["previous"] == []
    with pytest.raises(models.RegistryError, match="records no previous version"):
        models.rollback(registry)


def test_rollback_verifies_and_keeps_the_precondition(
    store: ListingStore, registry: models.Registry, versions: list[str]
) -> None:
    first, second, _third = versions
    models.promote(registry, second)
    _tamper(store, first, "model.tflite", lambda data: b"evil" + data)
    with pytest.raises(models.VerificationError):
        models.rollback(registry)
    assert _latest(store)["version"] == second
    _tamper(store, first, "model.tflite", lambda data: data[len(b"evil") :])
    store.before_write = lambda bucket, name: store.put(bucket, name, b"{}")
    with pytest.raises(models.LatestMovedError, match="rollback"):
        models.rollback(registry)


def test_rollback_without_a_pointer(registry: models.Registry) -> None:
    with pytest.raises(models.RegistryError, match="does not exist"):
        models.rollback(registry)


def test_publish_keeps_the_history_rollback_uses(tmp_path: Path) -> None:
    base = tmp_path / "registry"
    base.mkdir()
    published = []
    for day in (1, 2):
        path, manifest = model_dir(tmp_path / f"m{day}", f"day {day}".encode(), _at(day))
        publish_lib.publish(path, str(base))
        published.append(manifest["version"])
    pointer = json.loads((base / "unet" / "latest.json").read_text())
    assert pointer["version"] == published[1] and pointer["previous"] == [published[0]]
    registry = models.open_registry(str(base), gcs_client=lambda: pytest.fail("no GCS"))
    move = models.rollback(registry)
    assert move.to_version == published[0]
    pointer = json.loads((base / "unet" / "latest.json").read_text())
    assert pointer["version"] == published[0] and pointer["previous"] == []
    assert pointer["path"] == str(base.resolve() / "unet" / published[0])


def test_the_local_store_enforces_preconditions(tmp_path: Path) -> None:
    store = models.LocalRegistryStore(tmp_path)
    first = store.write(
        "", "unet/latest.json", b"1", content_type="", metadata={}, if_generation_match=0
    )
    with pytest.raises(PreconditionFailedError):
        store.write(
            "", "unet/latest.json", b"2", content_type="", metadata={}, if_generation_match=0
        )
    second = store.write(
        "",
        "unet/latest.json",
        b"22",
        content_type="",
        metadata={},
        if_generation_match=first.generation,
    )
    assert second.generation != first.generation and second.generation > 0
    with pytest.raises(PreconditionFailedError):
        store.write(
            "",
            "unet/latest.json",
            b"3",
            content_type="",
            metadata={},
            if_generation_match=first.generation,
        )
    assert store.read("", "unet/latest.json") == b"22"
    assert store.list_names("", "unet/") == ["unet/latest.json"]


# --- list ------------------------------------------------------------------------------------


def test_list_shows_metrics_latest_history_and_pictures(
    store: ListingStore, registry: models.Registry, tmp_path: Path
) -> None:
    first = _put_version(store, tmp_path, 1)
    pictures = {"quality.png": b"png", "training-curve.png": b"p"}
    second = _put_version(store, tmp_path, 2, flip=True, **pictures)
    store.put(BUCKET, "prod/unet/20261203-000000-0badc0de/model.tflite", b"half a publish")
    models.promote(registry, first)
    models.promote(registry, second)
    state = models.read_pointer(registry)
    entries = models.list_versions(registry)
    assert [e.version for e in entries] == [first, second, "20261203-000000-0badc0de"]

    document = models.list_json(registry, state, entries)
    assert document["latest"]["version"] == second
    by_version = {v["version"]: v for v in document["versions"]}
    assert by_version[second]["latest"] and not by_version[first]["latest"]
    assert by_version[first]["history_index"] == 0
    assert by_version[second]["miou"] == pytest.approx(0.795)
    assert by_version[second]["pixel_accuracy"] == pytest.approx(0.9)
    assert by_version[second]["quantization"] == "int8"
    assert by_version[second]["test_time_flip"] and not by_version[first]["test_time_flip"]
    assert by_version[second]["created"] == "2026-12-02T09:00:00Z"
    assert by_version[second]["pictures"] == {
        "quality": f"gs://{BUCKET}/prod/unet/{second}/quality.png",
        "training_curve": f"gs://{BUCKET}/prod/unet/{second}/training-curve.png",
    }
    assert not by_version["20261203-000000-0badc0de"]["complete"]
    json.dumps(document)

    text = models.list_text(registry, state, entries)
    assert f"latest: {second}" in text and f"rollback goes to {first}" in text
    assert f"* {second}" in text and "previous 1" in text and "0.7950" in text
    rows = {line[2:].split()[0]: line for line in text.splitlines() if line[:2] in ("* ", "  ")}
    assert "flip-averaged" in rows[second]  # its metrics and its cost differ: say so
    assert "flip-averaged" not in rows[first]
    assert f"quality: gs://{BUCKET}/prod/unet/{second}/quality.png" in text
    assert "incomplete: no manifest.json" in text


# --- compare ---------------------------------------------------------------------------------


def _mask_meta(track: str | None, version: str, confidence: float, low: float, pet: float) -> dict:
    metadata = {
        "model-version": version,
        "quality-mean-confidence": f"{confidence:.4f}",
        "quality-low-confidence-fraction": f"{low:.4f}",
        "quality-fraction-pet": f"{pet:.4f}",
        "quality-fraction-background": f"{1 - pet - 0.1:.4f}",
        "quality-fraction-border": "0.1000",
    }
    if track is not None:
        metadata["model-track"] = track
    return metadata


def test_compare_arithmetic() -> None:
    comparison = models.summarise(
        [
            _mask_meta("stable", "v1", 0.9, 0.02, 0.3),
            _mask_meta("stable", "v1", 0.8, 0.10, 0.5),
            _mask_meta("stable", "v2", 0.7, 0.30, 0.4),  # a promoted canary's masks are stable
            _mask_meta("canary", "v2", 0.6, 0.40, 0.2),
            _mask_meta("canary", "v2", 0.8, 0.20, 0.4),
            _mask_meta(None, "v0", 0.1, 0.9, 0.9),  # from before tracks existed
            {"model-track": "canary", "model-version": "v2"},  # no quality signals
        ]
    )
    assert (comparison.untracked, comparison.without_signals) == (1, 1)
    stable, canary = comparison.stable, comparison.canary
    assert stable.count == 3 and dict(stable.versions) == {"v1": 2, "v2": 1}
    assert stable.mean_confidence == pytest.approx(0.8)
    assert stable.low_confidence_share == pytest.approx(0.14)
    assert stable.class_shares["pet"] == pytest.approx(0.4)
    assert stable.class_shares["background"] == pytest.approx(0.5)
    assert canary.count == 2 and canary.mean_confidence == pytest.approx(0.7)
    assert canary.low_confidence_share == pytest.approx(0.3)
    difference = comparison.difference()
    assert difference["mean_confidence"] == pytest.approx(-0.1)
    assert difference["low_confidence_share"] == pytest.approx(0.16)
    assert difference["class_shares"]["pet"] == pytest.approx(-0.1)
    assert difference["class_shares"]["border"] == pytest.approx(0.0)
    document = models.compare_json(comparison, output_bucket="out")
    assert document["tracks"]["canary"]["versions"] == {"v2": 2}
    assert document["tracks"]["stable"]["mean_confidence"] == 0.8
    text = models.compare_text(comparison, "gs://out/masks/")
    assert "3 stable, 2 canary, 1 without a track, 1 without quality signals" in text
    assert "-0.1000" in text and "stable versions: v1 (2), v2 (1)" in text


def test_compare_without_canary_masks_has_no_difference() -> None:
    comparison = models.summarise([_mask_meta("stable", "v1", 0.9, 0.0, 0.5)])
    assert comparison.difference() is None
    assert comparison.canary.mean_confidence is None
    assert models.compare_json(comparison)["canary_minus_stable"] is None
    models.compare_text(comparison, "x")


class StubStorage:
    """list_blobs only, as segment calls it (with segment's retry and timeout)."""

    def __init__(self, blobs: list[SimpleNamespace]) -> None:
        self.blobs, self.calls = blobs, []

    def list_blobs(self, bucket: str, *, prefix: str, retry: Any, timeout: Any) -> list:
        self.calls.append((bucket, prefix, retry, timeout))
        return [blob for blob in self.blobs if blob.name.startswith(prefix)]


def test_compare_reads_the_masks_metadata_with_prefix_and_since(clean_env, monkeypatch, capsys):
    now = datetime.now(UTC)
    blobs = [
        SimpleNamespace(
            name="masks/up/a.png.png", metadata=_mask_meta("stable", "v1", 0.9, 0, 0.5), updated=now
        ),
        SimpleNamespace(
            name="masks/up/b.png.png", metadata=_mask_meta("canary", "v2", 0.7, 0, 0.5), updated=now
        ),
        SimpleNamespace(
            name="masks/up/old.png.png",
            metadata=_mask_meta("canary", "v2", 0.1, 0, 0.5),
            updated=now - timedelta(days=2),
        ),
        SimpleNamespace(
            name="masks/other/c.png.png",
            metadata=_mask_meta("stable", "v1", 0.1, 0, 0.5),
            updated=now,
        ),
    ]
    storage = StubStorage(blobs)
    monkeypatch.setattr(clients, "storage_client", lambda endpoints: storage)
    since = (now - timedelta(days=1)).isoformat()
    argv = ["models", "compare", "--output-bucket", "out", "--prefix", "up/", "--since", since]
    assert cli.main([*argv, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert storage.calls[0][:2] == ("out", "masks/up/")
    assert storage.calls[0][2] is clients.storage_retry()
    assert document["tracks"]["stable"]["count"] == 1
    assert document["tracks"]["canary"]["count"] == 1
    assert document["canary_minus_stable"]["mean_confidence"] == pytest.approx(-0.2)
    assert cli.main(argv) == 0
    assert "1 stable, 1 canary" in capsys.readouterr().out


# --- the command lines -----------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    for variable in (*set(cli.ENV_DEFAULTS.values()), "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def local_registry(tmp_path: Path) -> tuple[Path, list[str]]:
    base = tmp_path / "registry"
    base.mkdir()
    names = []
    for day in (1, 2):
        path, manifest = model_dir(tmp_path / f"m{day}", f"day {day}".encode(), _at(day))
        publish_lib.publish(path, str(base), move_latest=day == 1)
        names.append(manifest["version"])
    return base, names


def test_models_commands_on_a_local_registry(clean_env, local_registry, capsys) -> None:
    base, (first, second) = local_registry
    assert cli.main(["models", "list", "--registry", str(base), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["latest"]["version"] == first
    assert [v["version"] for v in document["versions"]] == [first, second]

    assert cli.main(["models", "promote", second, "--registry", str(base)]) == 0
    out = capsys.readouterr().out
    assert f"now names {second}" in out and f"rollback would go to {first}" in out
    assert cli.main(["models", "promote", second, "--registry", str(base)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert cli.main(["models", "rollback", "--registry", str(base)]) == 0
    assert f"now names {first}" in capsys.readouterr().out
    assert cli.main(["models", "list", "--registry", str(base)]) == 0
    assert f"* {first}" in capsys.readouterr().out


def test_registry_failures_are_one_line_exit_1(clean_env, local_registry, capsys) -> None:
    base, (first, _second) = local_registry
    assert cli.main(["models", "rollback", "--registry", str(base)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("segment: ") and err.count("\n") == 1 and "no previous version" in err
    model = base / "unet" / first / "model.tflite"
    model.write_bytes(b"DAY 1")  # the same size, other bytes
    assert cli.main(["models", "promote", first, "--registry", str(base)]) == 1
    err = capsys.readouterr().err
    assert "has sha256" in err and hashlib.sha256(b"DAY 1").hexdigest() in err
    assert cli.main(["models", "list", "--registry", str(base / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_the_registry_comes_from_its_variable(clean_env, local_registry, monkeypatch, capsys):
    base, _ = local_registry
    with pytest.raises(SystemExit) as exc:
        cli.main(["models", "list"])
    assert exc.value.code == 2
    assert "--registry is required (or set SEGMENT_MODEL_REGISTRY)" in capsys.readouterr().err
    args = cli.build_parser({"SEGMENT_MODEL_REGISTRY": str(base)}).parse_args(["models", "list"])
    assert args.registry == str(base)
    assert cli.main(["models", "list", "--json", "--registry", str(base)]) == 0
