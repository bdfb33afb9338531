"""A directory that is either local or in Cloud Storage (gs://bucket/prefix).

Checkpoints and published models go through this one small interface, so training on a GPU VM
(gs://) and on a laptop (a path) run the same code. `STORAGE_EMULATOR_HOST` points the Cloud
Storage client at a local emulator, as in the tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path


class ObjectExistsError(FileExistsError):
    """A write that must not overwrite found the object already there."""


class PreconditionFailedError(RuntimeError):
    """A conditional write found the object at another generation than the one it was given."""


# The generation of an object that does not exist (as in Cloud Storage's ifGenerationMatch=0).
ABSENT = "0"
READ_ATTEMPTS = 3


class Location(ABC):
    """A directory of named objects; names are relative paths with '/' separators."""

    uri: str

    @abstractmethod
    def read_bytes(self, name: str) -> bytes: ...

    @abstractmethod
    def write_bytes(
        self, name: str, data: bytes, *, overwrite: bool = True, content_type: str | None = None
    ) -> None:
        """Writes an object; with overwrite=False raises ObjectExistsError if it exists.

        `content_type` is the object's Content-Type in Cloud Storage (a local file has none).
        """

    @abstractmethod
    def read_with_generation(self, name: str) -> tuple[bytes | None, str]:
        """(content, generation) of one consistent version; (None, ABSENT) when absent.

        A generation is an opaque token for `write_if_generation`.
        """

    @abstractmethod
    def write_if_generation(self, name: str, data: bytes, generation: str) -> None:
        """Writes only if the object is still at `generation` (ABSENT: does not exist), atomically
        with the check; otherwise raises PreconditionFailedError."""

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Names under `prefix`, sorted."""

    @abstractmethod
    def delete(self, name: str) -> None: ...

    def child(self, name: str) -> Location:
        return open_location(f"{self.uri.rstrip('/')}/{name.strip('/')}")


def open_location(uri: str) -> Location:
    """A Location for `gs://bucket/prefix` or a local directory path."""
    if uri.startswith("gs://"):
        return GcsLocation(uri)
    return LocalLocation(Path(uri))


class LocalLocation(Location):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"object name {name!r} escapes {self.root}")
        return path

    def read_bytes(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def write_bytes(
        self, name: str, data: bytes, *, overwrite: bool = True, content_type: str | None = None
    ) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not overwrite:
            try:
                with path.open("xb") as handle:
                    handle.write(data)
            except FileExistsError as exc:
                raise ObjectExistsError(f"{path} already exists") from exc
            return
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a reader never sees half a file

    def read_with_generation(self, name: str) -> tuple[bytes | None, str]:
        try:
            with self._path(name).open("rb") as handle:  # writers replace, never rewrite
                return handle.read(), _file_generation(os.fstat(handle.fileno()))
        except FileNotFoundError:
            return None, ABSENT

    def write_if_generation(self, name: str, data: bytes, generation: str) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            fcntl.flock(directory, fcntl.LOCK_EX)  # check and replace as one step
            try:
                current = _file_generation(path.stat())
            except FileNotFoundError:
                current = ABSENT
            if current != generation:
                raise PreconditionFailedError(
                    f"{path} is at generation {current}, expected {generation}"
                )
            self.write_bytes(name, data)
        finally:
            os.close(directory)  # releases the lock

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        names = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(n for n in names if n.startswith(prefix))

    def delete(self, name: str) -> None:
        path = self._path(name)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


class GcsLocation(Location):
    def __init__(self, uri: str, client: object | None = None) -> None:
        from google.cloud import storage  # only gs:// locations need the client

        bucket, _, prefix = uri.removeprefix("gs://").partition("/")
        if not bucket:
            raise ValueError(f"{uri!r} names no bucket")
        self.uri = uri.rstrip("/")
        self.prefix = prefix.strip("/")
        self.client = client or storage.Client()
        self.bucket = self.client.bucket(bucket)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read_bytes(self, name: str) -> bytes:
        from google.api_core.exceptions import NotFound

        try:
            return self.bucket.blob(self._key(name)).download_as_bytes()
        except NotFound as exc:
            raise FileNotFoundError(f"{self.uri}/{name}") from exc

    def write_bytes(
        self, name: str, data: bytes, *, overwrite: bool = True, content_type: str | None = None
    ) -> None:
        from google.api_core.exceptions import PreconditionFailed

        blob = self.bucket.blob(self._key(name))
        typed = {"content_type": content_type} if content_type else {}  # else the client's default
        if overwrite:
            blob.upload_from_string(data, **typed)
            return
        # if_generation_match=0 makes real GCS refuse an existing object; the local emulator
        # ignores preconditions (docs/architecture.md, decision 6), hence the explicit check first.
        if blob.exists():
            raise ObjectExistsError(f"{self.uri}/{name} already exists")
        try:
            blob.upload_from_string(data, if_generation_match=0, **typed)
        except PreconditionFailed as exc:
            raise ObjectExistsError(f"{self.uri}/{name} already exists") from exc

    def read_with_generation(self, name: str) -> tuple[bytes | None, str]:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        for _ in range(READ_ATTEMPTS):
            blob = self.bucket.get_blob(self._key(name))
            if blob is None:
                return None, ABSENT
            generation = blob.generation  # before the download, which may reset it
            try:  # the content of exactly that generation (replaced in between: read again)
                return blob.download_as_bytes(if_generation_match=generation), str(generation)
            except (NotFound, PreconditionFailed):
                continue
        raise PreconditionFailedError(f"{self.uri}/{name} kept changing while it was read")

    def write_if_generation(self, name: str, data: bytes, generation: str) -> None:
        from google.api_core.exceptions import PreconditionFailed

        # Cloud Storage checks ifGenerationMatch atomically; gcp-storage-emulator ignores it
        # (docs/architecture.md, decision 6): tests put tests.fakes.fault_proxy in front.
        blob = self.bucket.blob(self._key(name))
        try:
            blob.upload_from_string(data, if_generation_match=int(generation))
        except PreconditionFailed as exc:
            raise PreconditionFailedError(
                f"{self.uri}/{name} is no longer at generation {generation}"
            ) from exc

    def exists(self, name: str) -> bool:
        return self.bucket.blob(self._key(name)).exists()

    def list(self, prefix: str = "") -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        blobs = self.client.list_blobs(self.bucket, prefix=base + prefix)
        return sorted(blob.name.removeprefix(base) for blob in blobs)

    def delete(self, name: str) -> None:
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self.bucket.blob(self._key(name)).delete()


def _file_generation(stat: os.stat_result) -> str:
    # A replaced file is a new inode; mtime and size tell rewrites of a reused inode apart.
    return f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"
