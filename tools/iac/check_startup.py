"""Render the training VM's startup script exactly as Terraform does, and check it.

``terraform console`` evaluates ``templatefile()`` offline in an empty directory (no provider is
needed), so the script is rendered by Terraform itself rather than by a re-implementation of its
template language. The variables are the keys of ``local.startup_vars`` in infra/training_vm
(what the module passes to templatefile), with sample values; a key the template uses but the
module does not pass makes Terraform fail, which the check reports. The rendered text then goes
through ``bash -n`` and a supply-chain lint (``supply_chain_problems``): every source zip is
checked with ``sha256sum --check`` before it is unpacked, uv comes from its pinned, sha256-checked
PyPI wheel (no ``curl | sh``), the GPU requirements are installed from the hashed lock with
``--require-hashes``, and nothing else is installed. ``uv_pin_problems`` checks that the module's
uv wheel is the uv of requirements/uv.txt and the Makefile (same version, one of its hashes).

Run ``python -m tools.iac.check_startup``.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tools.iac import tools
from tools.iac.hcl import REPO_ROOT, load_config
from tools.iac.locks import LockError, read_lock

TEMPLATE = REPO_ROOT / "infra" / "training_vm" / "startup.sh.tftpl"
MODULE = REPO_ROOT / "infra" / "training_vm"
UV_LOCK = REPO_ROOT / "requirements" / "uv.txt"
GPU_LOCK_ON_VM = 'readonly GPU_LOCK="$WORKDIR/src/model_build/requirements-gpu.txt"'

# A value is a string, or a map of strings (rendered as a Terraform object).
SAMPLE_VALUES: dict[str, str | bool | dict[str, str]] = {
    "models_bucket": "example-models",
    "source_bucket": "example-source",
    "source_objects": {
        "model_build": "training/model_build-0123abcd.zip",
        "segmentation": "training/segmentation-4567cdef.zip",
    },
    "default_run_id": "run-001",
    "epochs": "30",
    "fine_tune_epochs": "",
    "source_sha256": {
        "model_build": "1" * 64,
        "segmentation": "2" * 64,
    },
    "uv_version": "0.13.9",
    "uv_wheel_url": (
        "https://files.pythonhosted.org/packages/3d/aa/0123/"
        "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    ),
    "uv_wheel_sha256": "3" * 64,
    "python_version": "3.12.16",
    "source_commit": "0123456789abcdef0123456789abcdef01234567",
    "move_latest": False,
}


class RenderError(RuntimeError):
    pass


def template_keys(root: Path = REPO_ROOT) -> list[str]:
    """Keys of local.startup_vars in the training_vm module."""
    config = load_config(root)
    module = config.get(root / "infra" / "training_vm")
    if module is None:
        raise RenderError("no infra/training_vm module")
    variables = module.locals().get("startup_vars")
    if not isinstance(variables, dict):
        raise RenderError("infra/training_vm has no local.startup_vars object")
    return sorted(k for k in variables if k != "__is_block__")


def render(template: Path, variables: Mapping[str, str | Mapping[str, str]]) -> str:
    """templatefile(template, variables) evaluated by ``terraform console``."""
    terraform = tools.terraform()
    if terraform is None:
        raise RenderError("terraform is not on PATH")
    args = ", ".join(f"{key} = {json.dumps(value)}" for key, value in variables.items())
    expr = f"base64encode(templatefile({json.dumps(str(template))}, {{ {args} }}))"
    with tempfile.TemporaryDirectory(prefix="tf-console-") as workdir:
        result = subprocess.run(
            [terraform, "console", "-no-color"],
            input=expr + "\n",
            cwd=workdir,
            env=tools.terraform_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    out = result.stdout.strip()
    if result.returncode != 0 or not (out.startswith('"') and out.endswith('"')):
        raise RenderError(f"terraform console failed:\n{result.stdout}\n{result.stderr}")
    return base64.b64decode(json.loads(out)).decode()


def bash_syntax(script: str) -> tuple[bool, str]:
    """(ok, messages) of ``bash -n`` on a script."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh") as handle:
        handle.write(script)
        handle.flush()
        result = subprocess.run(
            ["bash", "-n", handle.name], capture_output=True, text=True, check=False, timeout=30
        )
    return result.returncode == 0, result.stderr


def _first(lines: list[str], pattern: str) -> int | None:
    """Index of the first line whose stripped text matches the pattern."""
    return next((i for i, text in enumerate(lines) if re.search(pattern, text.strip())), None)


def _source_zip_problems(lines: list[str]) -> list[str]:
    """Each source zip: downloaded, then checked against a sha256, then unpacked."""
    problems = []
    for index, line in enumerate(lines):
        fetched = re.search(r'gcloud storage cp .*"(\$WORKDIR/archives/[^"]+\.zip)"$', line)
        if not fetched:
            continue
        archive = re.escape(fetched.group(1))
        check = _first(lines, rf'^echo "[0-9a-f]{{64}}  {archive}" \| sha256sum --check')
        unpack = _first(lines, rf'^unzip .*"{archive}"')
        if check is None:
            problems.append(f"{fetched.group(1)} is not checked against a sha256 (sha256sum)")
        elif unpack is not None and not index < check < unpack:
            problems.append(f"{fetched.group(1)} is unpacked before its sha256 is checked")
    return problems


def _install_commands(lines: list[str]) -> list[str]:
    """Every pip/uv package install or sync, continuation lines joined."""
    commands = []
    for index, line in enumerate(lines):
        if line.lstrip().startswith("#") or not re.search(r"\bpip3? (install|sync)\b", line):
            continue
        command, following = line.rstrip(), index + 1
        while command.endswith("\\") and following < len(lines):
            command = command[:-1] + " " + lines[following].strip()
            following += 1
        commands.append(" ".join(command.split()))
    return commands


def supply_chain_problems(script: str) -> list[str]:
    """What a rendered startup script installs or unpacks without a pin and a hash check."""
    lines = script.splitlines()
    problems = []
    if re.search(r"\|\s*(ba)?sh\b", script) or re.search(r"install\.sh|astral\.sh", script):
        problems.append("runs an install script (curl | sh)")
    problems += _source_zip_problems(lines)
    # uv: the pinned wheel, its sha256 checked before the binary is taken out of it.
    wheel_check = _first(lines, r'^echo "[0-9a-f]{64}  \$UV_WHEEL" \| sha256sum --check')
    extract = _first(lines, r'^unzip -p "\$UV_WHEEL"')
    if wheel_check is None or extract is None or wheel_check > extract:
        problems.append("uv is not taken from its wheel after a sha256 check")
    # Packages: only the hashed GPU lock, with --require-hashes, also for build requirements.
    if GPU_LOCK_ON_VM not in lines:
        problems.append(f"no {GPU_LOCK_ON_VM}")
    installs = _install_commands(lines)
    if len(installs) != 1:
        problems.append(f"expected one package install (the GPU lock), found {len(installs)}")
    for command in installs:
        if "--require-hashes" not in command:
            problems.append(f"installs without --require-hashes: {command}")
        if not command.endswith(' "$GPU_LOCK"'):
            problems.append(f"installs something other than the GPU lock: {command}")
        if '--build-constraints "$GPU_LOCK"' not in command:
            problems.append("source distributions would be built with unpinned build requirements")
    return problems


def uv_pin_problems(root: Path = REPO_ROOT) -> list[str]:
    """The module's default uv wheel is requirements/uv.txt's uv (version and one of its hashes),
    the Makefile's UV_VERSION."""
    config = load_config(root)
    module = config.get(root / MODULE.relative_to(REPO_ROOT))
    if module is None:
        return ["no infra/training_vm module"]
    variables = module.variables()
    defaults = {
        name: (variables.get(name) or {}).get("default")
        for name in ("uv_version", "uv_wheel_url", "uv_wheel_sha256")
    }
    try:
        pinned = read_lock(root / UV_LOCK.relative_to(REPO_ROOT)).get("uv")
    except (OSError, LockError) as exc:
        return [f"requirements/uv.txt: {exc}"]
    if pinned is None:
        return ["requirements/uv.txt does not pin uv"]
    problems = []
    version, url, sha256 = (defaults[k] for k in ("uv_version", "uv_wheel_url", "uv_wheel_sha256"))
    if version != pinned.version:
        problems.append(f"uv_version {version!r} is not requirements/uv.txt's {pinned.version}")
    wheel = str(url).rsplit("/", 1)[-1]
    if not wheel.startswith(f"uv-{pinned.version}-") or "x86_64" not in wheel:
        problems.append(f"uv_wheel_url {wheel!r} is not uv {pinned.version}'s x86_64 wheel")
    if sha256 not in pinned.hashes:
        problems.append(f"uv_wheel_sha256 {sha256!r} is not one of requirements/uv.txt's hashes")
    makefile = root / "Makefile"
    if makefile.exists():
        match = re.search(r"^UV_VERSION\s*:=\s*(\S+)$", makefile.read_text(), re.M)
        if not match or match.group(1) != pinned.version:
            problems.append(f"Makefile UV_VERSION is not requirements/uv.txt's {pinned.version}")
    return problems


def render_repo_script(root: Path = REPO_ROOT, **overrides: str | bool | dict[str, str]) -> str:
    keys = template_keys(root)
    values: dict[str, str | bool | dict[str, str]] = {
        key: SAMPLE_VALUES.get(key, f"sample-{key}") for key in keys
    }
    values.update(overrides)
    return render(root / TEMPLATE.relative_to(REPO_ROOT), values)


def main() -> int:
    try:
        script = render_repo_script()
    except RenderError as exc:
        print(f"startup script: {exc}")
        return 1
    ok, messages = bash_syntax(script)
    print(messages, end="")
    verdict = "ok" if ok else "FAILED"
    print(f"startup script: rendered {len(script.splitlines())} lines, bash -n {verdict}")
    problems = supply_chain_problems(script) + uv_pin_problems()
    for problem in problems:
        print(f"startup script: {problem}")
    print(f"startup script: pins and hash checks {'ok' if not problems else 'FAILED'}")
    return 0 if ok and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
