"""GcsObjectStore.read(limit=...) through the real google-cloud-storage library against the
storage emulator: the download stops at the limit whatever the object's size, a smaller object
comes back whole, and download_input turns a lying size into image_too_large."""

from __future__ import annotations

import pytest
from segmentation import storage
from segmentation.errors import ImageTooLargeError
from segmentation.storage import GcsObjectStore

pytestmark = pytest.mark.integration


def test_a_limited_read_stops_at_the_limit(gcs, bucket) -> None:
    big = bytes(range(256)) * 4096 * 8  # 8 MiB, many library chunks
    blob = bucket.blob("big.png")
    blob.upload_from_string(big)
    store = GcsObjectStore(gcs)
    generation = int(bucket.get_blob("big.png").generation)
    assert store.read(bucket.name, "big.png", generation=generation, limit=100_001) == big[:100_001]
    assert store.read(bucket.name, "big.png", limit=len(big) + 1) == big
    with pytest.raises(ImageTooLargeError):
        storage.download_input(
            store, bucket.name, "big.png", generation=generation, size=10, max_bytes=100_000
        )


def test_a_limited_read_of_a_small_or_empty_object_is_whole(gcs, bucket) -> None:
    bucket.blob("small.png").upload_from_string(b"tiny")
    bucket.blob("empty.png").upload_from_string(b"")
    store = GcsObjectStore(gcs)
    assert store.read(bucket.name, "small.png", limit=11) == b"tiny"
    assert store.read(bucket.name, "empty.png", limit=11) == b""
