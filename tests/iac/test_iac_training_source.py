"""The training VM receives every package `python -m model_build` imports: model_build and the
function's `segmentation` package (the model contract: manifest schema, contract, imaging, model).

The root module passes both directories to infra/training_vm (source_packages), the module zips
and uploads each one under a content-hash name, and the startup script, rendered by Terraform,
unpacks each into $WORKDIR/src/<package> before running `python -m model_build` from
$WORKDIR/src. The last test runs the rendered source step itself (with a fake `gcloud`) and
imports `segmentation` from what it unpacked.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from tools.iac import tools
from tools.iac.check_startup import SAMPLE_VALUES, bash_syntax, render_repo_script
from tools.iac.hcl import REPO_ROOT

MODULE_DIR = REPO_ROOT / "infra" / "training_vm"
REQUIRED_PACKAGES = {"model_build", "segmentation"}
HEX64 = re.compile(r"[0-9a-f]{64}")


def _source_packages(repo_config) -> dict[str, str]:
    call = repo_config[REPO_ROOT].module_calls()["training_vm"]
    packages = call.get("source_packages")
    assert isinstance(packages, dict), "main.tf must pass source_packages to training_vm"
    return {k: v for k, v in packages.items() if k != "__is_block__"}


def _resolve(path_expr: str) -> Path:
    assert path_expr.startswith("${path.root}/"), path_expr
    return REPO_ROOT / path_expr.removeprefix("${path.root}/")


def _imports(package_dir: Path) -> set[str]:
    """Absolute module names imported anywhere in a package (`import a.b`, `from a.b import c`)."""
    names: set[str] = set()
    for source in package_dir.rglob("*.py"):
        if "__pycache__" in source.parts:
            continue
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return names


def _first_party_packages() -> set[str]:
    """Package directories of the repository (top level and one below, e.g. functions/x)."""
    found = set()
    for pattern in ("*/__init__.py", "*/*/__init__.py"):
        for init in REPO_ROOT.glob(pattern):
            top = init.relative_to(REPO_ROOT).parts[0]
            if not top.startswith(".") and top not in {"build", "tests"}:
                found.add(init.parent.name)
    return found


# --- root module -------------------------------------------------------------------------------


def test_root_passes_model_build_and_segmentation(repo_config):
    packages = _source_packages(repo_config)
    assert packages.get("model_build") == "${path.root}/model_build"
    assert packages.get("segmentation") == "${path.root}/functions/segmentation"
    for name, path_expr in packages.items():
        directory = _resolve(path_expr)
        assert directory.name == name, f"{name} would be unpacked from {directory}"
        assert (directory / "__init__.py").is_file(), f"{directory} is not a Python package"
    # The model contract model_build validates every manifest against (read as package data).
    assert (_resolve(packages["segmentation"]) / "manifest.schema.json").is_file()


def test_every_first_party_package_model_build_imports_is_shipped(repo_config):
    packages = _source_packages(repo_config)
    imported = _imports(REPO_ROOT / "model_build")
    first_party = _first_party_packages()
    needed = {name.split(".")[0] for name in imported} & first_party
    assert needed <= set(packages), f"the VM would lack {sorted(needed - set(packages))}"
    # Each imported submodule is a file of the directory shipped for its package.
    for name in sorted(imported):
        top, _, rest = name.partition(".")
        if top not in packages or not rest:
            continue
        base = _resolve(packages[top]).joinpath(*rest.split("."))
        assert base.with_suffix(".py").is_file() or (base / "__init__.py").is_file(), (
            f"model_build imports {name}, which {packages[top]} does not contain"
        )


# --- module ------------------------------------------------------------------------------------


def test_module_zips_and_uploads_each_package(repo_config):
    module = repo_config[MODULE_DIR]
    archives = module.data_sources("archive_file")
    assert [b.labels[1] for b in archives] == ["source"]
    assert archives[0].body.get("for_each") == "${var.source_packages}"
    assert archives[0].body.get("source_dir") == "${each.value}"
    upload = module.resource("google_storage_bucket_object", "source")
    assert upload is not None
    assert upload.body.get("for_each") == "${var.source_packages}"
    assert upload.body.get("name") == "${local.source_objects[each.key]}"
    assert upload.body.get("source") == "${data.archive_file.source[each.key].output_path}"
    assert module.locals()["startup_vars"]["source_objects"] == "${local.source_objects}"


def _console(workdir: Path, expression: str, variables: dict[str, object]) -> tuple[str, str]:
    """(stdout, stderr) of `terraform console` evaluating one expression in workdir."""
    args = []
    for key, value in variables.items():
        args += ["-var", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    result = subprocess.run(
        [tools.terraform() or "terraform", "console", "-no-color", *args],
        input=expression + "\n",
        cwd=workdir,
        env=tools.terraform_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout, result.stderr


def _module_locals_root(tmp_path: Path) -> Path:
    """A root module made of the training_vm module's variables and locals (no resources, so no
    provider is needed): terraform console evaluates the validation rules and the locals."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(MODULE_DIR / "variables.tf", root / "variables.tf")
    text = (MODULE_DIR / "main.tf").read_text()
    start = text.index("\nlocals {\n") + 1
    end = text.index("\n}\n", start) + 3
    (root / "locals.tf").write_text(text[start:end])
    return root


REQUIRED_VARIABLES = {
    "project_id": "p",
    "region": "us-central1",
    "zone": "us-central1-a",
    "prefix": "seg",
    "service_account_prefix": "seg-test",
    "models_bucket": "m",
    "source_bucket": "s",
    "archive_output_dir": "build",
}


def _source_objects(root: Path, packages: dict[str, Path]) -> dict[str, str]:
    stdout, stderr = _console(
        root,
        "jsonencode(local.source_objects)",
        REQUIRED_VARIABLES | {"source_packages": {k: str(v) for k, v in packages.items()}},
    )
    assert "Error" not in stderr, stderr
    return json.loads(json.loads(stdout.strip()))


def test_archive_objects_are_named_by_content_hash(terraform_bin: str, tmp_path: Path):
    root = _module_locals_root(tmp_path)
    packages = {}
    for name, source in (
        ("model_build", REPO_ROOT / "model_build"),
        ("segmentation", REPO_ROOT / "functions" / "segmentation"),
    ):
        packages[name] = tmp_path / "src" / name
        shutil.copytree(source, packages[name], ignore=shutil.ignore_patterns("__pycache__"))

    first = _source_objects(root, packages)
    assert set(first) == REQUIRED_PACKAGES
    for name, obj in first.items():
        prefix, digest = f"training/{name}-", obj.removeprefix(f"training/{name}-")
        assert obj.startswith(prefix) and obj.endswith(".zip"), obj
        assert HEX64.fullmatch(digest.removesuffix(".zip")), obj

    # Build litter is not source: the names (so the uploads) stay the same.
    (packages["segmentation"] / "__pycache__").mkdir()
    (packages["segmentation"] / "__pycache__" / "contract.cpython-312.pyc").write_bytes(b"x")
    assert _source_objects(root, packages) == first

    # A changed segmentation file gives the segmentation archive a new name, and only it.
    schema = packages["segmentation"] / "manifest.schema.json"
    schema.write_text(schema.read_text() + "\n")
    second = _source_objects(root, packages)
    assert second["model_build"] == first["model_build"]
    assert second["segmentation"] != first["segmentation"]


@pytest.mark.parametrize(
    ("packages", "message"),
    [
        ({"model_build": "model_build"}, "must include model_build and segmentation"),
        ({"segmentation": "functions/segmentation"}, "must include model_build and segmentation"),
        (
            {"model_build": "model_build", "segmentation": "functions"},
            "must be a Python package",
        ),
        (
            {
                "model_build": "model_build",
                "segmentation": "functions/segmentation",
                "my-pkg": "model_build",
            },
            "must be Python package names",
        ),
    ],
    ids=["no-segmentation", "no-model-build", "not-a-package", "bad-name"],
)
def test_source_packages_validation(
    terraform_bin: str, tmp_path: Path, packages: dict[str, str], message: str
):
    root = _module_locals_root(tmp_path)
    absolute = {k: str(REPO_ROOT / v) for k, v in packages.items()}
    stdout, stderr = _console(
        root, "length(var.source_packages)", REQUIRED_VARIABLES | {"source_packages": absolute}
    )
    output = " ".join((stdout + stderr).split())
    assert "Invalid value for variable" in output, output
    assert message in output, output


def test_source_packages_validation_accepts_the_repository(terraform_bin: str, tmp_path: Path):
    root = _module_locals_root(tmp_path)
    packages = {
        "model_build": str(REPO_ROOT / "model_build"),
        "segmentation": str(REPO_ROOT / "functions" / "segmentation"),
    }
    stdout, stderr = _console(
        root, "length(var.source_packages)", REQUIRED_VARIABLES | {"source_packages": packages}
    )
    assert "Error" not in stderr, stderr
    assert stdout.strip() == "2"


# --- startup script ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def script(terraform_bin: str) -> str:
    return render_repo_script()


def test_rendered_script_unpacks_segmentation_into_src(script: str):
    objects = SAMPLE_VALUES["source_objects"]
    assert isinstance(objects, dict) and set(objects) == REQUIRED_PACKAGES
    run = script.index('cd "$WORKDIR/src"')
    assert script.index('-m model_build "${args[@]}"') > run
    for name, obj in objects.items():
        archive = f'"$WORKDIR/archives/{name}.zip"'
        fetch = f'gcloud storage cp --quiet "gs://$SOURCE_BUCKET/{obj}" {archive}'
        unpack = f'unzip -q -o {archive} -d "$WORKDIR/src/{name}"'
        assert fetch in script
        assert unpack in script
        assert script.index(fetch) < script.index(unpack) < run
    assert 'readonly SOURCE_BUCKET="example-source"' in script


def test_rendered_script_without_segmentation_fails_before_training(terraform_bin: str):
    # Were the segmentation archive ever left out, the script stops before installing anything.
    only_model_build = {"model_build": "training/model_build-0123abcd.zip"}
    script = render_repo_script(source_objects=only_model_build)
    assert "segmentation.zip" not in script
    check = script.index("for package in model_build segmentation; do")
    assert check < script.index('curl -fsSL --retry 3 -o "$UV_WHEEL"')
    assert check < script.index('"$UV" python install')
    assert bash_syntax(script)[0]


def _zip_like_archive_file(directory: Path, target: Path) -> None:
    """The package's files at the zip's root, with the module's excludes."""
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(directory.rglob("*")):
            relative = path.relative_to(directory)
            if (
                path.is_dir()
                or "__pycache__" in relative.parts
                or path.suffix == ".pyc"
                or relative.parts[0].startswith(".")
            ):
                continue
            archive.write(path, relative.as_posix())


FAKE_GCLOUD = """#!/usr/bin/env bash
# gcloud storage cp --quiet gs://BUCKET/OBJECT DEST, served from $FAKE_GCS/BUCKET/OBJECT.
set -euo pipefail
[[ "$1 $2 $3" == "storage cp --quiet" ]] || { echo "unexpected: gcloud $*" >&2; exit 2; }
cp "$FAKE_GCS/${4#gs://}" "$5"
"""

# Only where the machine has no unzip: the same extraction with Python's zipfile.
FAKE_UNZIP = """#!/usr/bin/env bash
# unzip -q -o ARCHIVE -d DEST
set -euo pipefail
exec "{python}" -m zipfile -e "$3" "$5"
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


SOURCE_BUCKET = "example-source"
SOURCE_OBJECTS = {
    "model_build": "training/model_build-1111.zip",
    "segmentation": "training/segmentation-2222.zip",
}


def _fake_gcs(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The two archives as the module uploads them, and their sha256 (Terraform's output_sha256)."""
    gcs = tmp_path / "gcs"
    digests = {}
    for name, directory in (
        ("model_build", REPO_ROOT / "model_build"),
        ("segmentation", REPO_ROOT / "functions" / "segmentation"),
    ):
        target = gcs / SOURCE_BUCKET / SOURCE_OBJECTS[name]
        target.parent.mkdir(parents=True, exist_ok=True)
        _zip_like_archive_file(directory, target)
        digests[name] = hashlib.sha256(target.read_bytes()).hexdigest()
    return gcs, digests


def _run_source_step(
    tmp_path: Path, gcs: Path, digests: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """The rendered source step (fetch, sha256 check, unpack) with a fake gcloud."""
    script = render_repo_script(
        source_bucket=SOURCE_BUCKET, source_objects=SOURCE_OBJECTS, source_sha256=digests
    )
    start, end = script.index("# Source:"), script.index("# Python 3.12")
    step = script[start:end]

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    _executable(fake_bin / "gcloud", FAKE_GCLOUD)
    if shutil.which("unzip") is None:
        _executable(fake_bin / "unzip", FAKE_UNZIP.replace("{python}", sys.executable))
    workdir = tmp_path / "opt"
    prologue = (
        "set -euo pipefail\n"
        f'WORKDIR="{workdir}"\nRUN_DIR="{tmp_path / "run"}"\nSOURCE_BUCKET="{SOURCE_BUCKET}"\n'
    )
    env = dict(os.environ, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}", FAKE_GCS=str(gcs))
    return subprocess.run(
        ["bash", "-c", prologue + step],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_source_archive_that_is_not_the_uploaded_one_is_never_unpacked(
    terraform_bin: str, tmp_path: Path
):
    gcs, digests = _fake_gcs(tmp_path)
    # Someone replaced the segmentation object after the apply.
    tampered = gcs / SOURCE_BUCKET / SOURCE_OBJECTS["segmentation"]
    with zipfile.ZipFile(tampered, "a") as archive:
        archive.writestr("backdoor.py", "raise SystemExit('not the reviewed code')\n")
    result = _run_source_step(tmp_path, gcs, digests)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
    assert f"{SOURCE_OBJECTS['segmentation']} is not the archive Terraform uploaded" in (
        result.stderr
    )
    src = tmp_path / "opt" / "src"
    assert (src / "model_build" / "__main__.py").is_file()  # checked, then unpacked
    assert not (src / "segmentation").exists()


def test_the_vm_source_step_yields_importable_packages(terraform_bin: str, tmp_path: Path):
    gcs, digests = _fake_gcs(tmp_path)
    workdir = tmp_path / "opt"
    # A stale tree from an earlier boot must not survive.
    (workdir / "src" / "stale").mkdir(parents=True)
    result = _run_source_step(tmp_path, gcs, digests)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": OK") == 2  # sha256sum --check, once per archive

    src = workdir / "src"
    assert sorted(p.name for p in src.iterdir()) == ["model_build", "segmentation"]
    assert (src / "model_build" / "__main__.py").is_file()
    assert (src / "model_build" / "requirements-gpu.txt").is_file()
    assert (src / "segmentation" / "manifest.schema.json").is_file()

    # What `python -m model_build` run from $WORKDIR/src imports of segmentation (no TensorFlow
    # needed), including the schema it reads as package data.
    probe = (
        "import json, sys\n"
        "from importlib import resources\n"
        "import segmentation.contract, segmentation.errors, segmentation.manifest\n"
        "from segmentation.contract import SCHEMA_FILE\n"
        "schema = json.loads(resources.files('segmentation').joinpath(SCHEMA_FILE).read_text())\n"
        "print(json.dumps({'file': segmentation.__file__, 'schema': isinstance(schema, dict)}))\n"
    )
    with tempfile.TemporaryDirectory() as home:
        probed = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=src,
            env={"PATH": os.environ["PATH"], "HOME": home},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert probed.returncode == 0, probed.stderr
    found = json.loads(probed.stdout.strip().splitlines()[-1])
    assert Path(found["file"]).resolve().is_relative_to(src.resolve()), found
    assert found["schema"] is True
