"""Reading the project's pip requirement locks (``uv pip compile`` output, `make lock`).

A lock is a requirements file of exact pins, ``name[extras]==version``, each optionally followed
by ``--hash=sha256:<hex>`` options (``--generate-hashes``); ``\\`` continues a line, ``#`` starts
a comment (uv's ``# via`` annotations). Anything else (ranges, URLs, ``-r``/``-c`` includes,
other options) is not a lock and raises LockError.

Used by tests/unit/test_function_requirements.py (functions/requirements.txt, the GPU lock
model_build/requirements-gpu.txt, requirements/dev.lock) and tools/iac/check_startup.py (the uv
wheel the training VM installs must be one of requirements/uv.txt's hashes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[([A-Za-z0-9._,\s-]*)\])?==([^\s;]+)$")
_HASH = re.compile(r"^--hash=sha256:([0-9a-f]{64})$")
_COMMENT = re.compile(r"(^|\s)#.*$")


class LockError(ValueError):
    pass


@dataclass(frozen=True)
class Pin:
    name: str  # canonical (PEP 503) name
    version: str
    extras: tuple[str, ...]
    hashes: tuple[str, ...]  # sha256 hex digests


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = _COMMENT.sub("", raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            lines.append(line)
    if pending.strip():
        lines.append(pending.strip())
    return lines


def parse_lock(text: str, where: str = "lock") -> dict[str, Pin]:
    """Pins by canonical name; LockError on anything that is not an exact, optionally hashed pin."""
    pins: dict[str, Pin] = {}
    for line in _logical_lines(text):
        requirement, *options = line.split()
        match = _PIN.match(requirement)
        if not match:
            raise LockError(f"{where}: not an exact pin: {requirement!r}")
        hashes = []
        for option in options:
            found = _HASH.match(option)
            if not found:
                raise LockError(f"{where}: {requirement}: unexpected {option!r}")
            hashes.append(found.group(1))
        name = canonical(match.group(1))
        if name in pins:
            raise LockError(f"{where}: {name} is pinned twice")
        extras = tuple(sorted(e.strip() for e in (match.group(2) or "").split(",") if e.strip()))
        pins[name] = Pin(name, match.group(3), extras, tuple(hashes))
    return pins


def read_lock(path: Path) -> dict[str, Pin]:
    return parse_lock(path.read_text(), path.name)
