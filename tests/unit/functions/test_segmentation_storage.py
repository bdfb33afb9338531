"""The storage edge: output naming, size-checked download, generation-guarded writes, and the
mapping of google-cloud-storage exceptions."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
import requests
from google.api_core import exceptions as api_exceptions
from hypothesis import given
from hypothesis import strategies as st
from segmentation import storage
from segmentation.errors import (
    EmptyObjectError,
    ImageTooLargeError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoragePermissionError,
    StorageUnavailableError,
    WriteConflictError,
)
from segmentation.storage import GcsObjectStore, ObjectInfo

from tests.fakes.storage import FakeObjectStore

OUT = "demo-seg-output"

# --- naming ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "mask"),
    [
        ("cat.jpg", "masks/cat.jpg.png"),
        ("path/to/name.ext", "masks/path/to/name.ext.png"),
        ("with space/ünïcödé 猫.webp", "masks/with space/ünïcödé 猫.webp.png"),
        ("no-extension", "masks/no-extension.png"),
        ("a//double/slash.png", "masks/a//double/slash.png.png"),
        ("..hidden/..x..", "masks/..hidden/..x...png"),
        ("/leading.png", "masks//leading.png.png"),
    ],
)
def test_names_map_verbatim_when_safe(source: str, mask: str) -> None:
    assert storage.mask_name(source) == mask
    assert storage.error_name(source) == "errors/" + mask[len("masks/") : -len(".png")] + ".json"


@pytest.mark.parametrize("source", ["../escape.png", "a/../../b.png", "./x.png", "a/.", "..", "."])
def test_dot_segments_are_escaped_and_hashed(source: str) -> None:
    name = storage.mask_name(source)
    digest = hashlib.sha256(source.encode()).hexdigest()[:32]
    assert name.startswith("masks/") and name.endswith(f"~{digest}.png")
    assert "%2E" in name
    assert not {".", ".."} & set(name.split("/"))


def test_too_long_names_are_shortened_with_a_hash() -> None:
    source = "dir/" + "é" * 510 + ".jpg"  # 1028 bytes: legal input, too long once prefixed
    name = storage.mask_name(source)
    assert len(name.encode()) <= storage.MAX_OBJECT_NAME_BYTES
    assert name.startswith("masks/dir/éé")
    assert name.endswith("~" + hashlib.sha256(source.encode()).hexdigest()[:32] + ".png")
    assert storage.mask_name(source) == name  # deterministic
    assert storage.mask_name(source[:-1] + "k") != name


def test_name_that_just_fits_is_kept() -> None:
    source = "x" * (1024 - len("masks/") - len(".png"))
    assert storage.mask_name(source) == f"masks/{source}.png"
    assert storage.mask_name(source + "y") != f"masks/{source}y.png"


_segment = st.one_of(
    st.sampled_from([".", "..", "", "a", "ü", "猫", "x y", "a.b"]),
    st.text(st.characters(exclude_characters="/\r\n\x00", exclude_categories=["Cs"]), max_size=40),
)


@given(st.lists(_segment, min_size=1, max_size=40).map("/".join))
def test_every_name_stays_under_its_prefix_and_within_limits(source: str) -> None:
    for prefix, make in (("masks/", storage.mask_name), ("errors/", storage.error_name)):
        name = make(source)
        assert name.startswith(prefix)
        assert len(name.encode()) <= storage.MAX_OBJECT_NAME_BYTES
        assert not {".", ".."} & set(name[len(prefix) :].split("/"))
        assert make(source) == name


@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=1100))
def test_distinct_sources_get_distinct_outputs(source: str) -> None:
    other = source + "x"
    assert storage.mask_name(source) != storage.mask_name(other)


# --- download --------------------------------------------------------------------------------


def test_download_checks_the_notification_size_before_reading(store: FakeObjectStore) -> None:
    info = store.put("in", "big.jpg", b"x" * 10)
    with pytest.raises(ImageTooLargeError, match="11 bytes"):
        storage.download_input(
            store, "in", "big.jpg", generation=info.generation, size=11, max_bytes=10
        )
    with pytest.raises(EmptyObjectError):
        storage.download_input(
            store, "in", "big.jpg", generation=info.generation, size=0, max_bytes=10
        )
    assert not [entry for entry in store.log if entry[0] == "read"]


def test_download_uses_metadata_when_the_size_is_unknown(store: FakeObjectStore) -> None:
    info = store.put("in", "a.png", b"x" * 20)
    with pytest.raises(ImageTooLargeError):
        storage.download_input(
            store, "in", "a.png", generation=info.generation, size=None, max_bytes=10
        )
    data = storage.download_input(
        store, "in", "a.png", generation=info.generation, size=None, max_bytes=20
    )
    assert data == b"x" * 20


def test_download_rechecks_the_bytes_it_got(store: FakeObjectStore) -> None:
    info = store.put("in", "a.png", b"x" * 20)
    with pytest.raises(ImageTooLargeError):
        storage.download_input(
            store, "in", "a.png", generation=info.generation, size=5, max_bytes=10
        )


def test_download_of_a_replaced_or_deleted_generation_is_not_found(store: FakeObjectStore) -> None:
    old = store.put("in", "a.png", b"old")
    store.put("in", "a.png", b"new")
    with pytest.raises(ObjectNotFoundError):
        storage.download_input(
            store, "in", "a.png", generation=old.generation, size=3, max_bytes=10
        )
    with pytest.raises(ObjectNotFoundError):
        storage.download_input(store, "in", "gone.png", generation=1, size=None, max_bytes=10)


# --- generation-guarded writes ---------------------------------------------------------------


def _meta(generation: int) -> dict[str, str]:
    return {storage.META_SOURCE_GENERATION: str(generation)}


def _write(store: FakeObjectStore, generation: int, existing: ObjectInfo | None) -> Any:
    return storage.write_if_newer(
        store,
        OUT,
        "masks/a.png",
        f"gen {generation}".encode(),
        content_type="image/png",
        metadata=_meta(generation),
        source_generation=generation,
        existing=existing,
    )


def test_first_write_requires_absence(store: FakeObjectStore) -> None:
    result = _write(store, 5, None)
    assert result.written and result.info.source_generation == 5
    assert store.get(OUT, "masks/a.png").data == b"gen 5"


def test_newer_generation_replaces_and_same_or_older_do_not(store: FakeObjectStore) -> None:
    first = _write(store, 5, None).info
    assert not _write(store, 5, first).written
    assert not _write(store, 4, first).written
    second = _write(store, 6, first)
    assert second.written and store.get(OUT, "masks/a.png").data == b"gen 6"
    assert len(store.mutations) == 2


def test_concurrent_writer_of_the_same_generation_wins_once(store: FakeObjectStore) -> None:
    store.before_write = lambda bucket, name: store.put(bucket, name, b"other", metadata=_meta(5))
    result = _write(store, 5, None)
    assert not result.written and result.info.source_generation == 5
    assert store.get(OUT, "masks/a.png").data == b"other"


def test_concurrent_newer_writer_is_never_overwritten(store: FakeObjectStore) -> None:
    store.before_write = lambda bucket, name: store.put(bucket, name, b"newer", metadata=_meta(9))
    assert not _write(store, 5, None).written
    assert store.get(OUT, "masks/a.png").data == b"newer"


def test_concurrent_older_writer_is_replaced_on_retry(store: FakeObjectStore) -> None:
    store.before_write = lambda bucket, name: store.put(bucket, name, b"older", metadata=_meta(3))
    result = _write(store, 5, None)
    assert result.written
    assert store.get(OUT, "masks/a.png").data == b"gen 5"


def test_stale_precondition_without_a_winner_is_retried(store: FakeObjectStore) -> None:
    stale = store.put(OUT, "masks/a.png", b"v1", metadata=_meta(1))
    store.put(OUT, "masks/a.png", b"v2", metadata=_meta(2))
    assert _write(store, 5, stale).written


def test_losing_every_race_is_a_transient_conflict(store: FakeObjectStore) -> None:
    store.fail_next("write", PreconditionFailedError("412"), times=storage.WRITE_ATTEMPTS)
    with pytest.raises(WriteConflictError):
        _write(store, 5, None)


def test_delete_if_older(store: FakeObjectStore) -> None:
    info = store.put(OUT, "errors/a.json", b"{}", metadata=_meta(4))
    assert not storage.delete_if_older(store, info, 4)
    assert storage.delete_if_older(store, info, 5)
    assert store.get(OUT, "errors/a.json") is None
    assert not storage.delete_exact(store, info)  # already gone: no error
    replaced = store.put(OUT, "errors/a.json", b"{}", metadata=_meta(1))
    store.put(OUT, "errors/a.json", b"{}", metadata=_meta(1))
    assert not storage.delete_exact(store, replaced)  # generation moved on: no error


def test_object_info_source_generation_tolerates_foreign_metadata() -> None:
    assert ObjectInfo("b", "n", 1, 0).source_generation == 0
    assert ObjectInfo("b", "n", 1, 0, metadata={"source-generation": "x"}).source_generation == 0
    assert ObjectInfo("b", "n", 1, 0, metadata={"source-generation": "42"}).source_generation == 42


# --- GcsObjectStore --------------------------------------------------------------------------


def _blob(**fields: Any) -> SimpleNamespace:
    defaults = {
        "bucket": SimpleNamespace(name="bkt"),
        "name": "obj",
        "generation": 7,
        "size": 3,
        "content_type": "image/png",
        "metadata": {"source-generation": "5"},
    }
    return SimpleNamespace(**{**defaults, **fields})


def _gcs(client: Any) -> GcsObjectStore:
    return GcsObjectStore(client, timeout=5)


def test_gcs_client_is_created_lazily() -> None:
    factory = mock.Mock()
    store = GcsObjectStore(client_factory=factory)
    factory.assert_not_called()
    factory.return_value.bucket.return_value.get_blob.return_value = None
    assert store.stat("b", "n") is None
    assert store.stat("b", "m") is None
    factory.assert_called_once_with()


def test_gcs_stat_read_write_delete_pass_the_right_arguments() -> None:
    client = mock.Mock()
    bucket = client.bucket.return_value
    bucket.get_blob.return_value = _blob()
    info = _gcs(client).stat("bkt", "obj", generation=7)
    bucket.get_blob.assert_called_once_with("obj", generation=7, timeout=5)
    assert info == ObjectInfo("bkt", "obj", 7, 3, "image/png", {"source-generation": "5"})

    bucket.blob.return_value.download_as_bytes.return_value = b"abc"
    assert _gcs(client).read("bkt", "obj", generation=7) == b"abc"
    bucket.blob.assert_called_with("obj", generation=7)

    written = _blob(name="masks/x.png", generation=9, metadata=None, size=None)
    written.upload_from_string = mock.Mock()
    bucket.blob.return_value = written
    info = _gcs(client).write(
        "bkt",
        "masks/x.png",
        b"png",
        content_type="image/png",
        metadata={"k": "v"},
        if_generation_match=0,
    )
    written.upload_from_string.assert_called_once_with(
        b"png", content_type="image/png", if_generation_match=0, timeout=5
    )
    assert written.metadata == {"k": "v"}
    assert info.generation == 9

    written.delete = mock.Mock()
    _gcs(client).delete("bkt", "masks/x.png", if_generation_match=9)
    written.delete.assert_called_once_with(if_generation_match=9, timeout=5)


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (api_exceptions.NotFound("gone"), ObjectNotFoundError),
        (api_exceptions.PreconditionFailed("412"), PreconditionFailedError),
        (api_exceptions.Forbidden("no"), StoragePermissionError),
        (api_exceptions.Unauthorized("no"), StoragePermissionError),
        (api_exceptions.TooManyRequests("slow down"), StorageUnavailableError),
        (api_exceptions.ServiceUnavailable("503"), StorageUnavailableError),
        (api_exceptions.InternalServerError("500"), StorageUnavailableError),
        (api_exceptions.RetryError("deadline", cause=None), StorageUnavailableError),
        (requests.exceptions.ConnectionError("reset"), StorageUnavailableError),
        (requests.exceptions.ReadTimeout("slow"), StorageUnavailableError),
        (TimeoutError("slow"), StorageUnavailableError),
    ],
)
def test_gcs_exceptions_are_mapped(raised: Exception, expected: type[Exception]) -> None:
    client = mock.Mock()
    client.bucket.return_value.blob.return_value.download_as_bytes.side_effect = raised
    with pytest.raises(expected) as info:
        _gcs(client).read("bkt", "obj")
    assert info.value.__cause__ is raised


def test_unknown_exceptions_pass_through_unmapped() -> None:
    client = mock.Mock()
    client.bucket.return_value.get_blob.side_effect = KeyError("bug")
    with pytest.raises(KeyError):
        _gcs(client).stat("bkt", "obj")


# --- bounded reads ---------------------------------------------------------------------------


def _streaming_blob(data: bytes, chunk: int = 7) -> mock.Mock:
    """A blob whose download_to_file writes `data` in chunks, as the library does, and records
    how many bytes it handed over before the writer stopped it."""
    blob = mock.Mock()
    blob.handed = 0

    def download_to_file(file_obj: Any, **kwargs: Any) -> None:
        for start in range(0, len(data), chunk):
            part = data[start : start + chunk]
            blob.handed += len(part)
            file_obj.write(part)

    blob.download_to_file.side_effect = download_to_file
    return blob


@pytest.mark.parametrize(("size", "limit"), [(0, 11), (10, 11), (11, 11), (1000, 11), (5, 1)])
def test_gcs_read_with_a_limit_stops_the_transfer(size: int, limit: int) -> None:
    data = bytes(range(256)) * 4
    data = data[:size]
    client = mock.Mock()
    blob = _streaming_blob(data)
    client.bucket.return_value.blob.return_value = blob
    got = _gcs(client).read("bkt", "obj", generation=7, limit=limit)
    assert got == data[:limit]
    assert blob.handed <= limit + 7  # stopped within one chunk of the limit
    client.bucket.return_value.blob.assert_called_with("obj", generation=7)
    (_, kwargs) = blob.download_to_file.call_args
    assert "start" not in kwargs and "end" not in kwargs  # whole-object checksum still checked
    blob.download_as_bytes.assert_not_called()


def test_gcs_read_with_a_limit_maps_errors() -> None:
    client = mock.Mock()
    client.bucket.return_value.blob.return_value.download_to_file.side_effect = (
        api_exceptions.NotFound("gone")
    )
    with pytest.raises(ObjectNotFoundError):
        _gcs(client).read("bkt", "obj", limit=10)


def test_download_reads_at_most_one_byte_more_than_the_limit(store: FakeObjectStore) -> None:
    info = store.put("in", "a.png", b"x" * 1000)
    with pytest.raises(ImageTooLargeError):
        storage.download_input(
            store, "in", "a.png", generation=info.generation, size=5, max_bytes=10
        )
    assert store.bytes_read == 11
