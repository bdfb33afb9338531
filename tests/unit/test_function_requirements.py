"""functions/requirements.txt is the deploy unit's full lock: every distribution pinned, the same
versions the test suite runs with (requirements/dev.lock), and every module functions/ imports
provided by it (Cloud Functions installs nothing else)."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from importlib.machinery import ModuleSpec
from importlib.metadata import distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s#;]+)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = PIN.match(stripped)
        assert match, f"{path.name}: not an exact pin: {line!r}"
        pins[_canonical(match.group(1))] = match.group(2)
    return pins


def _imported_top_level_modules() -> set[str]:
    local = {p.stem for p in FUNCTIONS.glob("*.py")} | {
        p.name for p in FUNCTIONS.iterdir() if (p / "__init__.py").exists()
    }
    modules: set[str] = set()
    for path in FUNCTIONS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module)
                # `from google.cloud import storage`: the namespace's member is what is needed.
                modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {
        m
        for m in modules
        if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] not in local
    }


def test_every_distribution_is_pinned_to_the_tested_version() -> None:
    deployed = _pins(FUNCTIONS / "requirements.txt")
    tested = _pins(ROOT / "requirements" / "dev.lock")
    assert len(deployed) > 5, "functions/requirements.txt holds only the direct dependencies"
    drift = {n: (v, tested.get(n)) for n, v in deployed.items() if tested.get(n) != v}
    assert not drift, f"deployed vs tested (dev.lock) versions differ, run `make lock`: {drift}"


def test_direct_dependencies_come_from_functions_in() -> None:
    direct = _pins(ROOT / "requirements" / "functions.in")
    deployed = _pins(FUNCTIONS / "requirements.txt")
    assert {n: deployed.get(n) for n in direct} == direct


def _spec(name: str) -> ModuleSpec | None:
    try:
        return importlib.util.find_spec(name)
    except ImportError:  # `package.attribute` from `from package import attribute`
        return None


def _distribution_of(spec: ModuleSpec) -> str | None:
    """The distribution whose RECORD lists the module's own file (namespace packages such as
    `google` are shared by many distributions, so the top-level name is not enough)."""
    if spec.origin in (None, "built-in", "frozen"):
        return None
    origin = Path(spec.origin).resolve()
    for entry in map(Path, sys.path):
        try:
            relative = origin.relative_to(entry.resolve()).as_posix()
        except (ValueError, OSError):
            continue
        for dist in distributions(path=[str(entry)]):
            if f"\n{relative}," in "\n" + (dist.read_text("RECORD") or ""):
                return _canonical(dist.metadata["Name"])
    return None


def test_every_module_functions_imports_is_in_the_lock() -> None:
    deployed = set(_pins(FUNCTIONS / "requirements.txt"))
    missing = {}
    for module in sorted(_imported_top_level_modules()):
        # The tflite_runtime fallback is imported in try/except; the default runtime is pinned.
        if module.split(".")[0] == "tflite_runtime":
            continue
        spec = _spec(module)
        if spec is None and "." in module and _spec(module.rsplit(".", 1)[0]):
            continue  # `from package import name`: an attribute of a module checked on its own
        if spec is not None and spec.origin is None and spec.submodule_search_locations:
            continue  # a namespace package (`google.cloud`): its modules are checked
        owner = _distribution_of(spec) if spec else None
        if owner not in deployed:
            missing[module] = owner or "(not installed here)"
    assert not missing, f"imported by functions/ but not in functions/requirements.txt: {missing}"
