"""Content fingerprints of training data, so two models trained on different data can never
claim the same data.

The fingerprint is the sha256 over the sorted lines `<name>\\0<sha256 of the file's bytes>\\n`,
one per file used, with names relative to the dataset root: renaming, adding, removing or
changing any file changes it; the order files are read in does not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(root: Path, files: Iterable[Path]) -> str:
    """`sha256:<hex>` over the files (paths under `root`)."""
    lines = sorted(
        f"{path.relative_to(root).as_posix()}\0{file_sha256(path)}\n" for path in set(files)
    )
    digest = hashlib.sha256("".join(lines).encode())
    return f"sha256:{digest.hexdigest()}"
