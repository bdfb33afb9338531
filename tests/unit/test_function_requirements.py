"""The hashed locks of what runs in the cloud, compiled by `make lock` within the versions the test
suite runs with (requirements/dev.lock):

* functions/requirements.txt, the deploy unit's full lock: every distribution pinned and hashed
  (pip, which Cloud Functions' build runs, then installs in hash-checking mode), the tested
  versions, and every module functions/ imports provided by it (Cloud Functions installs nothing
  else);
* model_build/requirements-gpu.txt, the training VM's full lock (requirements/gpu.in:
  tensorflow[and-cuda] and model_build's other direct dependencies), every pin hashed (the VM
  installs it with `uv pip sync --require-hashes`), every package dev.lock also has at dev.lock's
  version;
* requirements/uv.txt, the hashed pin of uv itself (Makefile, Cloud Build, the training VM).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from importlib.machinery import ModuleSpec
from importlib.metadata import distributions
from pathlib import Path

import pytest

from tools.iac.locks import LockError, Pin, canonical, parse_lock, read_lock

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
REQUIREMENTS = ROOT / "requirements"
DEPLOY_LOCK = FUNCTIONS / "requirements.txt"
GPU_LOCK = ROOT / "model_build" / "requirements-gpu.txt"
UV_LOCK = REQUIREMENTS / "uv.txt"
DEV_LOCK = REQUIREMENTS / "dev.lock"
HASHED_LOCKS = [DEPLOY_LOCK, GPU_LOCK, UV_LOCK]


def _canonical(name: str) -> str:
    return canonical(name)


def _pins(path: Path) -> dict[str, str]:
    """Name -> version of every pin (LockError on anything but exact pins)."""
    return {name: pin.version for name, pin in read_lock(path).items()}


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
    deployed = _pins(DEPLOY_LOCK)
    tested = _pins(DEV_LOCK)
    assert len(deployed) > 5, "functions/requirements.txt holds only the direct dependencies"
    drift = {n: (v, tested.get(n)) for n, v in deployed.items() if tested.get(n) != v}
    assert not drift, f"deployed vs tested (dev.lock) versions differ, run `make lock`: {drift}"


def test_direct_dependencies_come_from_functions_in() -> None:
    direct = _pins(REQUIREMENTS / "functions.in")
    deployed = _pins(DEPLOY_LOCK)
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
    deployed = set(_pins(DEPLOY_LOCK))
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


# --- hashes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lock", HASHED_LOCKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_pin_has_a_hash(lock: Path) -> None:
    pins = read_lock(lock)
    assert pins, f"{lock} pins nothing"
    unhashed = sorted(name for name, pin in pins.items() if not pin.hashes)
    assert not unhashed, f"{lock.name}: pins without --hash (run `make lock`): {unhashed}"


def test_the_lock_reader_refuses_what_is_not_an_exact_pin() -> None:
    sha = "0" * 64
    pins = parse_lock(f"A_b==1.0 \\\n    --hash=sha256:{sha}\n    # via x\nc[x,y]==2  # via z\n")
    assert pins == {
        "a-b": Pin("a-b", "1.0", (), (sha,)),
        "c": Pin("c", "2", ("x", "y"), ()),
    }
    for text in ("a>=1\n", "a==1 --hash=md5:abc\n", "-r other.txt\n", "a==1\na==2\n"):
        with pytest.raises(LockError):
            parse_lock(text)


# --- the training VM's GPU lock -------------------------------------------------------------------


def test_gpu_lock_has_the_versions_dev_lock_tested() -> None:
    gpu = _pins(GPU_LOCK)
    tested = _pins(DEV_LOCK)
    shared = set(gpu) & set(tested)
    assert len(shared) > 40, f"only {sorted(shared)} shared with dev.lock: not compiled with -c?"
    drift = {n: (gpu[n], tested[n]) for n in sorted(shared) if gpu[n] != tested[n]}
    assert not drift, f"GPU lock vs tested (dev.lock) versions differ, run `make lock`: {drift}"
    # The GPU build of TensorFlow is the release the suite tests as tensorflow-cpu.
    assert gpu["tensorflow"] == tested["tensorflow-cpu"]


def test_gpu_lock_keeps_the_meaning_of_gpu_in() -> None:
    direct = read_lock(REQUIREMENTS / "gpu.in")
    gpu = read_lock(GPU_LOCK)
    assert {n: gpu[n].version for n in direct if n in gpu} == {
        n: pin.version for n, pin in direct.items()
    }
    # tensorflow[and-cuda]: the CUDA libraries come from pip, so the lock holds them.
    assert direct["tensorflow"].extras == ("and-cuda",)
    cuda = {n for n in gpu if n.startswith("nvidia-") and n.endswith("-cu12")}
    for library in ("cublas", "cudnn", "cuda-runtime", "cufft", "cusparse", "nccl"):
        assert f"nvidia-{library}-cu12" in cuda, f"tensorflow[and-cuda] needs nvidia-{library}"
    assert "tensorflow-cpu" not in gpu


def test_gpu_lock_holds_the_build_requirements_of_its_source_distributions() -> None:
    # The VM passes the lock as --build-constraints too, so a source distribution in it (such as
    # promise) is built with these hashed setuptools/wheel, never with an unpinned download.
    gpu = read_lock(GPU_LOCK)
    assert gpu["setuptools"].hashes
    assert gpu["wheel"].hashes


# --- uv ------------------------------------------------------------------------------------------


def test_uv_lock_pins_the_makefile_uv_version() -> None:
    uv = read_lock(UV_LOCK)
    assert set(uv) == {"uv"}
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^UV_VERSION\s*:=\s*(\S+)$", makefile, re.M)
    assert match, "Makefile has no UV_VERSION"
    assert uv["uv"].version == match.group(1)
    assert read_lock(REQUIREMENTS / "uv.in")["uv"].version == match.group(1)


def test_every_deploy_pin_supports_the_function_runtime():
    """pip (the Cloud Functions build) refuses a distribution whose Requires-Python excludes the
    runtime, where uv's resolver tolerates it: backports-strenum 1.3.1 (Requires-Python <3.11)
    passed every local test and would have failed the python312 deploy."""
    from importlib.metadata import distribution

    from packaging.specifiers import SpecifierSet

    runtime = "3.12"  # infra/function: runtime python312
    refused = []
    for pin in parse_lock(DEPLOY_LOCK.read_text()).values():
        installed = distribution(pin.name)
        assert installed.version == pin.version, f"{pin.name}: .venv has {installed.version}"
        requires = installed.metadata.get("Requires-Python")
        if requires and runtime not in SpecifierSet(requires):
            refused.append(f"{pin.name}=={pin.version} (Requires-Python {requires})")
    assert refused == []
