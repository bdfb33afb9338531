"""In-memory `ObjectStore` that enforces generation preconditions like Cloud Storage does.

No emulator enforces preconditions (docs/architecture.md, decision 6), so the idempotency rules are
tested against this fake. It raises exactly what `segmentation.storage.GcsObjectStore` maps Google's
404/412 to (`ObjectNotFoundError`, `PreconditionFailedError`). Versioning is off, as on the buckets:
replacing an object makes its old generation unreadable.

Test hooks: `put()` writes unconditionally (an upload), `fail_next()` injects an exception into
the next call of an operation, `before_write` runs just before a write's precondition check (to
simulate a concurrent writer), `log` records every read and mutating call, and `bytes_read`
counts the bytes every read returned.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from segmentation.errors import ObjectNotFoundError, PreconditionFailedError
from segmentation.storage import ObjectInfo


@dataclass
class StoredObject:
    data: bytes
    info: ObjectInfo


@dataclass
class FakeObjectStore:
    objects: dict[tuple[str, str], StoredObject] = field(default_factory=dict)
    log: list[tuple[str, str, str]] = field(default_factory=list)
    before_write: Callable[[str, str], None] | None = None
    bytes_read: int = 0
    _failures: dict[str, list[BaseException]] = field(default_factory=dict)
    _generations: itertools.count = field(default_factory=lambda: itertools.count(1_000_001))

    # --- test helpers ---------------------------------------------------------------------

    def put(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        generation: int | None = None,
    ) -> ObjectInfo:
        """Unconditional upload (optionally at a chosen generation); returns its metadata."""
        info = ObjectInfo(
            bucket=bucket,
            name=name,
            generation=generation if generation is not None else next(self._generations),
            size=len(data),
            content_type=content_type,
            metadata=dict(metadata or {}),
        )
        self.objects[(bucket, name)] = StoredObject(data, info)
        return info

    def get(self, bucket: str, name: str) -> StoredObject | None:
        return self.objects.get((bucket, name))

    def names(self, bucket: str) -> list[str]:
        return sorted(name for (b, name) in self.objects if b == bucket)

    def fail_next(self, operation: str, exc: BaseException, times: int = 1) -> None:
        """The next `times` calls of `operation` (stat/read/write/delete) raise `exc`."""
        self._failures.setdefault(operation, []).extend([exc] * times)

    @property
    def mutations(self) -> list[tuple[str, str, str]]:
        return [entry for entry in self.log if entry[0] in ("write", "delete")]

    # --- ObjectStore ----------------------------------------------------------------------

    def stat(self, bucket: str, name: str, *, generation: int | None = None) -> ObjectInfo | None:
        self._maybe_fail("stat")
        stored = self.objects.get((bucket, name))
        if stored is None or (generation is not None and stored.info.generation != generation):
            return None
        return stored.info

    def read(
        self, bucket: str, name: str, *, generation: int | None = None, limit: int | None = None
    ) -> bytes:
        self._maybe_fail("read")
        self.log.append(("read", bucket, name))
        stored = self.objects.get((bucket, name))
        if stored is None or (generation is not None and stored.info.generation != generation):
            raise ObjectNotFoundError(f"gs://{bucket}/{name}#{generation}: not found")
        data = stored.data if limit is None else stored.data[:limit]
        self.bytes_read += len(data)
        return data

    def write(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str],
        if_generation_match: int,
    ) -> ObjectInfo:
        self._maybe_fail("write")
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook(bucket, name)
        self.log.append(("write", bucket, name))
        current = self.objects.get((bucket, name))
        current_generation = current.info.generation if current else 0
        if current_generation != if_generation_match:
            raise PreconditionFailedError(
                f"gs://{bucket}/{name}: generation {current_generation} != {if_generation_match}"
            )
        return self.put(bucket, name, data, content_type=content_type, metadata=metadata)

    def delete(self, bucket: str, name: str, *, if_generation_match: int) -> None:
        self._maybe_fail("delete")
        self.log.append(("delete", bucket, name))
        current = self.objects.get((bucket, name))
        if current is None:
            raise ObjectNotFoundError(f"gs://{bucket}/{name}: not found")
        if current.info.generation != if_generation_match:
            raise PreconditionFailedError(f"gs://{bucket}/{name}: generation mismatch")
        del self.objects[(bucket, name)]

    def _maybe_fail(self, operation: str) -> None:
        pending = self._failures.get(operation)
        if pending:
            raise pending.pop(0)
