"""Deploy-shaped virtualenvs: what a Cloud Functions build installs, for both paths.

* `project`:    functions/requirements.txt, the deploy unit's full lock, exactly as deployed.
* `tensorflow`: the same direct dependencies (requirements/functions.in) with tensorflow-cpu in
                place of ai-edge-litert, resolved within requirements/dev.lock so every shared
                package has the version the project tests and deploys.

The footprint is each virtualenv's size after the install minus before (no bytecode, as `uv pip
install` leaves it). Then the install is byte-compiled (`compileall`, what pip and the Python
buildpack do on a real deployment) and the cold start runs in these interpreters: the deployed
set of packages, nothing from the developer virtualenv (which also holds grpcio, TensorFlow, the
test tools...). Built once per requirements hash under the bench cache and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.models import REPO_ROOT

PY = sys.executable
TENSORFLOW_REQUIREMENT = "tensorflow-cpu==2.21.0"
LITERT_DISTRIBUTION = "ai-edge-litert"
DEPLOY_LOCK = REPO_ROOT / "functions" / "requirements.txt"
DIRECT = REPO_ROOT / "requirements" / "functions.in"
TESTED_LOCK = REPO_ROOT / "requirements" / "dev.lock"
DONE_FILE = "bench-venv.json"
NAMES = ("project", "tensorflow")


class VenvError(RuntimeError):
    """A deploy-shaped virtualenv could not be built (no index and no uv cache, say)."""


@dataclass(frozen=True)
class DeployVenv:
    name: str
    root: Path
    facts: dict[str, Any]

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"


def requirement_texts() -> dict[str, tuple[str, list[str]]]:
    """name -> (requirements text, extra uv args)."""
    tensorflow = "\n".join(
        TENSORFLOW_REQUIREMENT if is_requirement(line, LITERT_DISTRIBUTION) else line
        for line in DIRECT.read_text().splitlines()
    )
    return {
        "project": (DEPLOY_LOCK.read_text(), []),
        "tensorflow": (tensorflow, ["-c", str(TESTED_LOCK.relative_to(REPO_ROOT))]),
    }


def requirement_lines(text: str) -> list[str]:
    """The requirements of a requirements file: no comments, hash options or continuations."""
    lines = (line.strip().removesuffix("\\").strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith(("#", "--"))]


def is_requirement(line: str, distribution: str) -> bool:
    name = re.split(r"[=<>!~\[; ]", line.strip(), maxsplit=1)[0]
    return name.lower().replace("_", "-") == distribution


def ensure_venvs(cache_dir: Path, log: Callable[[str], None]) -> dict[str, DeployVenv]:
    uv = shutil.which("uv", path=str(Path(PY).parent)) or shutil.which("uv")
    if uv is None:
        raise VenvError("uv not found next to the interpreter")
    texts = requirement_texts()
    digest = hashlib.sha256(
        json.dumps([texts, TESTED_LOCK.read_text(), sys.version]).encode()
    ).hexdigest()[:16]
    base = cache_dir / "venvs" / digest
    venvs = {}
    for name in NAMES:
        root = base / name
        done = root / DONE_FILE
        if not done.is_file():
            log(f"venvs: installing the {name} requirements into a fresh virtualenv")
            shutil.rmtree(root, ignore_errors=True)
            text, extra = texts[name]
            facts = _build(uv, root, text, extra)
            done.write_text(json.dumps(facts, indent=2) + "\n")
        venvs[name] = DeployVenv(name, root, json.loads(done.read_text()))
    _prune(base)
    return venvs


def _build(uv: str, root: Path, text: str, extra: list[str]) -> dict[str, Any]:
    root.parent.mkdir(parents=True, exist_ok=True)
    _uv(uv, ["venv", "--quiet", "--python", PY, str(root)])
    python = str(root / "bin" / "python")
    before = tree_bytes(root)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.write(text + "\n")
    try:
        started = time.perf_counter()
        _uv(uv, ["pip", "install", "--quiet", "--python", python, "-r", req.name, *extra])
        install_s = time.perf_counter() - started
    finally:
        os.unlink(req.name)
    installed = tree_bytes(root) - before
    subprocess.run(  # what pip / the buildpack leave on a deployment: compiled bytecode
        [python, "-m", "compileall", "-q", "-j", "0", str(_site_packages(root))],
        capture_output=True,
        check=False,
        timeout=1800,
    )
    freeze = _uv(uv, ["pip", "freeze", "--python", python])
    return {
        "requirements": requirement_lines(text),
        "uv_args": extra,
        "installed_mib": round(installed / 2**20, 1),
        "with_bytecode_mib": round((tree_bytes(root) - before) / 2**20, 1),
        "distributions": len([ln for ln in freeze.splitlines() if "==" in ln]),
        "install_s": round(install_s, 1),
        "tool": _uv(uv, ["--version"]).strip(),
    }


def _site_packages(root: Path) -> Path:
    return next((root / "lib").glob("python*/site-packages"))


def _uv(uv: str, args: list[str]) -> str:
    def run(extra: list[str]) -> str:
        return subprocess.run(
            [uv, *args, *extra],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=900,
        ).stdout

    try:
        return run([])
    except subprocess.CalledProcessError as exc:
        if "install" not in args:
            raise VenvError(f"uv {' '.join(args[:2])} failed: {exc.stderr.strip()[-300:]}") from exc
        try:  # no index reachable: the uv cache may still hold every wheel
            return run(["--offline"])
        except subprocess.CalledProcessError as offline:
            raise VenvError(f"uv pip install failed: {offline.stderr.strip()[-300:]}") from offline


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def _prune(keep: Path) -> None:
    """Virtualenvs of older requirement sets (about 1.7 GiB each pair) go."""
    for other in keep.parent.iterdir():
        if other != keep and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)
