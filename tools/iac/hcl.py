"""Loading Terraform configurations with python-hcl2 for the offline checks.

Why offline: docs/architecture.md, decision 8.

python-hcl2 8.x is used with ``strip_string_quotes`` (string literals come back without their
quotes, expressions as ``"${...}"``) and its ``__is_block__`` markers, which tell a nested block
(``versioning { ... }``) from an object-valued argument (``labels = { ... }``).

A configuration is a ``dict`` of module directory -> :class:`Module`. The checks work on that
structure only, so tests can load the repository's configuration, deep-copy it, break one thing
and assert that the right check flags it.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
from hcl2.utils import SerializationOptions

REPO_ROOT = Path(__file__).resolve().parents[2]

_OPTIONS = SerializationOptions(
    strip_string_quotes=True,
    with_comments=False,
    preserve_heredocs=False,
    explicit_blocks=True,
)

# Directories never scanned for .tf files.
_SKIP_DIRS = {".terraform", "build", "node_modules", "__pycache__"}

BLOCK_MARK = "__is_block__"


@dataclass
class Block:
    """One top-level block: ``kind`` (resource, data, variable, ...), its labels and body."""

    kind: str
    labels: tuple[str, ...]
    body: dict[str, Any]
    file: Path

    @property
    def address(self) -> str:
        if self.kind == "resource":
            return ".".join(self.labels)
        return ".".join((self.kind, *self.labels))


@dataclass
class Module:
    """Every top-level block of the .tf files of one directory (one Terraform module)."""

    path: Path
    blocks: list[Block] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Block]:
        return [b for b in self.blocks if b.kind == kind]

    def resources(self, rtype: str | None = None) -> list[Block]:
        return [b for b in self.of_kind("resource") if rtype is None or b.labels[0] == rtype]

    def data_sources(self, dtype: str | None = None) -> list[Block]:
        return [b for b in self.of_kind("data") if dtype is None or b.labels[0] == dtype]

    def resource(self, rtype: str, name: str) -> Block | None:
        for block in self.resources(rtype):
            if block.labels[1] == name:
                return block
        return None

    def variables(self) -> dict[str, dict[str, Any]]:
        return {b.labels[0]: b.body for b in self.of_kind("variable")}

    def locals(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for block in self.of_kind("locals"):
            merged.update(attributes(block.body))
        return merged

    def outputs(self) -> dict[str, dict[str, Any]]:
        return {b.labels[0]: b.body for b in self.of_kind("output")}

    def module_calls(self) -> dict[str, dict[str, Any]]:
        return {b.labels[0]: b.body for b in self.of_kind("module")}


# Blocks whose bodies are keyed by this many labels.
_LABELS = {
    "resource": 2,
    "data": 2,
    "module": 1,
    "variable": 1,
    "output": 1,
    "provider": 1,
    "check": 1,
    "removed": 0,
    "import": 0,
    "moved": 0,
    "locals": 0,
    "terraform": 0,
}


_PARSED: dict[str, dict[str, Any]] = {}


def parse_text(text: str) -> dict[str, Any]:
    """Parse HCL text (memoized by content: tests re-parse many near-identical copies)."""
    if text not in _PARSED:
        _PARSED[text] = hcl2.loads(text, serialization_options=_OPTIONS)
    return copy.deepcopy(_PARSED[text])


def _split(kind: str, entry: dict[str, Any], depth: int, labels: tuple[str, ...], file: Path):
    if depth == 0:
        yield Block(kind, labels, entry, file)
        return
    for label, inner in entry.items():
        if label == BLOCK_MARK:
            continue
        yield from _split(kind, inner, depth - 1, (*labels, label), file)


def blocks_of(doc: dict[str, Any], file: Path) -> Iterator[Block]:
    """Top-level blocks of one parsed file."""
    for kind, entries in doc.items():
        if kind == BLOCK_MARK:
            continue
        depth = _LABELS.get(kind)
        if depth is None:
            yield Block(kind, (), {"__unknown__": True}, file)
            continue
        for entry in entries:
            yield from _split(kind, entry, depth, (), file)


def iter_tf_files(root: Path) -> Iterator[Path]:
    """The .tf files under ``root`` (hidden, build and .terraform directories skipped)."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".") and d not in _SKIP_DIRS]
        found += [Path(directory) / f for f in files if f.endswith(".tf")]
    yield from sorted(found)


def load_tf(path: Path) -> dict[str, Any]:
    return parse_text(path.read_text())


def load_config(root: Path = REPO_ROOT, extra_files: dict[str, str] | None = None):
    """Parse every module under ``root``: {module directory: Module}.

    ``extra_files`` maps a path relative to ``root`` to .tf text parsed as if it were there
    (e.g. backend.tf from backend.tf.example).
    """
    modules: dict[Path, Module] = {}
    sources: list[tuple[Path, str]] = [(p, p.read_text()) for p in iter_tf_files(root)]
    for rel, text in (extra_files or {}).items():
        sources.append((root / rel, text))
    for path, text in sources:
        module = modules.setdefault(path.parent, Module(path.parent))
        module.blocks.extend(blocks_of(parse_text(text), path))
    return modules


# --- values --------------------------------------------------------------------------------------


def is_block_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and v.get(BLOCK_MARK) for v in value)
    )


def attributes(body: dict[str, Any]) -> dict[str, Any]:
    """The arguments (``name = value``) of a block body."""
    return {
        k: v for k, v in body.items() if k not in (BLOCK_MARK, "dynamic") and not is_block_list(v)
    }


def nested_blocks(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The literal nested blocks of a body: {type: [body, ...]} (dynamic blocks excluded)."""
    return {k: v for k, v in body.items() if k != "dynamic" and is_block_list(v)}


def dynamic_blocks(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``dynamic "x" { content { ... } }`` blocks: {x: [content body, ...]}."""
    result: dict[str, list[dict[str, Any]]] = {}
    for entry in body.get("dynamic", []):
        for name, dyn in entry.items():
            if name == BLOCK_MARK:
                continue
            contents = dyn.get("content", [])
            result.setdefault(name, []).extend(contents or [{}])
    return result


def all_blocks(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Literal and dynamic blocks of type ``name`` (for dynamic ones: the content body)."""
    return nested_blocks(body).get(name, []) + dynamic_blocks(body).get(name, [])


def first_block(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    blocks = all_blocks(body, name)
    return blocks[0] if blocks else None


_EXPR_RE = re.compile(r"^\$\{(.*)\}$", re.DOTALL)


def expression(value: Any) -> str | None:
    """The expression text of a pure ``"${...}"`` value, else None."""
    if isinstance(value, str):
        match = _EXPR_RE.match(value)
        if match and "${" not in match.group(1):
            return match.group(1).strip()
    return None


def interpolations(value: Any) -> Iterator[str]:
    """Every ``${...}`` expression inside a value (strings, lists and maps walked)."""
    if isinstance(value, str):
        yield from _interpolations_in(value)
    elif isinstance(value, list):
        for item in value:
            yield from interpolations(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key != BLOCK_MARK:
                yield from interpolations(key)
                yield from interpolations(item)


def _interpolations_in(text: str) -> Iterator[str]:
    i = 0
    while True:
        start = text.find("${", i)
        if start < 0:
            return
        depth, j = 0, start + 1
        while j < len(text):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        yield text[start + 2 : j]
        i = j + 1


def resolve(value: Any, module: Module) -> Any:
    """A value with a whole-value ``${var.x}`` replaced by the variable's default (one level)."""
    expr = expression(value)
    if expr:
        match = re.fullmatch(r"var\.([A-Za-z_][A-Za-z0-9_-]*)", expr)
        if match:
            variable = module.variables().get(match.group(1))
            if variable is not None and "default" in variable:
                return variable["default"]
    return value
