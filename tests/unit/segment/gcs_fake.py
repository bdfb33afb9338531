"""A google-cloud-storage client shaped fake for the `segment` unit tests: buckets of blobs with
generations, metadata and bytes, and the keyword arguments (retry, timeout) segment passes."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as api_exceptions

_generations = itertools.count(1_700_000_000_000_000)


@dataclass
class FakeBlob:
    bucket_name: str
    name: str
    data: bytes = b""
    metadata: dict[str, str] | None = None
    content_type: str | None = None
    generation: int = field(default_factory=lambda: next(_generations))
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.data)


class FakeBucket:
    def __init__(self, storage: FakeStorage, name: str) -> None:
        self.storage, self.name = storage, name

    def get_blob(self, name: str, **kwargs: Any) -> FakeBlob | None:
        self.storage.calls.append(("get_blob", name, kwargs))
        return self.storage.objects.get((self.name, name))

    def blob(self, name: str, generation: int | None = None) -> _BlobHandle:
        return _BlobHandle(self.storage, self.name, name, generation)


@dataclass
class _BlobHandle:
    storage: FakeStorage
    bucket_name: str
    name: str
    generation: int | None

    def download_as_bytes(self, **kwargs: Any) -> bytes:
        self.storage.calls.append(("download_as_bytes", self.name, kwargs))
        blob = self.storage.objects.get((self.bucket_name, self.name))
        if blob is None or (self.generation is not None and blob.generation != self.generation):
            raise api_exceptions.NotFound(f"{self.name}#{self.generation}")
        return blob.data


class FakeStorage:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], FakeBlob] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def bucket(self, name: str) -> FakeBucket:
        return FakeBucket(self, name)

    def put(
        self, bucket: str, name: str, data: bytes = b"x", metadata: dict[str, str] | None = None
    ) -> FakeBlob:
        blob = FakeBlob(bucket, name, data, metadata)
        self.objects[(bucket, name)] = blob
        return blob
