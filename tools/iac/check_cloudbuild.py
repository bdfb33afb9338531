"""Checks of cloudbuild.yaml, offline.

* ``check-jsonschema --builtin-schema vendor.cloudbuild`` (the SchemaStore schema of a build
  config, vendored in check-jsonschema);
* gcloud's own parser: ``gcloud builds submit --config=F --no-source`` reads and validates the
  file (unknown fields, bad substitution keys, YAML errors) *before* it needs credentials. With a
  throwaway CLOUDSDK_CONFIG, GCE metadata credentials disabled and the Cloud Build endpoint
  pointed at a closed local port, a valid file ends with "You do not currently have an active
  account selected" and nothing can ever be submitted; an invalid one ends with "parsing ...",
  "interpreting ... as build config" or "validating ... as build config";
* a lint of what neither catches: step ids present and unique, ``waitFor`` naming earlier steps,
  builder images from an allow-list with pinned terraform, every ``$_VAR`` / ``${_VAR}`` used is
  declared in ``substitutions`` and every declared one is used (Cloud Build rejects unknown ones
  only at submit time), and the training step guarded by ``_TRAIN`` defaulting to 'false'.

Without gcloud on PATH the parser check is skipped, unless the environment variable CI is set
(tools.in_ci): then it fails.

Run ``python -m tools.iac.check_cloudbuild [FILE]``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tools.iac import tools
from tools.iac.hcl import REPO_ROOT

CLOUDBUILD = REPO_ROOT / "cloudbuild.yaml"

# Real builder images (Docker Hub official images and Google's builders), pinned where it matters.
ALLOWED_IMAGES = (
    re.compile(r"^gcr\.io/cloud-builders/(gcloud|docker|git|gsutil)(:[\w.-]+)?$"),
    re.compile(r"^gcr\.io/google\.com/cloudsdktool/(google-)?cloud-sdk(:[\w.-]+)?$"),
    re.compile(r"^hashicorp/terraform:1\.11\.4$"),
    re.compile(r"^python:3\.12(\.\d+)?(-slim)?(-bookworm)?$"),
)

# https://cloud.google.com/build/docs/configuring-builds/substitute-variable-values
BUILTIN_SUBSTITUTIONS = frozenset(
    {
        "PROJECT_ID",
        "PROJECT_NUMBER",
        "BUILD_ID",
        "LOCATION",
        "TRIGGER_NAME",
        "TRIGGER_BUILD_CONFIG_PATH",
        "SERVICE_ACCOUNT_EMAIL",
        "SERVICE_ACCOUNT",
        "COMMIT_SHA",
        "SHORT_SHA",
        "REVISION_ID",
        "REPO_NAME",
        "REPO_FULL_NAME",
        "BRANCH_NAME",
        "TAG_NAME",
        "REF_NAME",
        "_HEAD_BRANCH",
        "_BASE_BRANCH",
        "_HEAD_REPO_URL",
        "_PR_NUMBER",
    }
)

_SUBST_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")
_PARSE_ERROR_RE = re.compile(
    r"ERROR: \(gcloud\.builds\.submit\) (parsing|interpreting|validating|.*build config)"
)
_CREDENTIALS_RE = re.compile(r"do not currently have an active account|gcloud auth login")


def load(path: Path = CLOUDBUILD) -> dict[str, Any]:
    return YAML(typ="safe").load(path.read_text())


def jsonschema_check(path: Path = CLOUDBUILD) -> tuple[bool, str]:
    """(ok, output) of check-jsonschema with the vendored Cloud Build schema."""
    exe = tools.venv_tool("check-jsonschema")
    if exe is None:
        return False, "check-jsonschema not found"
    result = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.cloudbuild", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return result.returncode == 0, result.stdout + result.stderr


def gcloud_parse(path: Path = CLOUDBUILD) -> tuple[bool, str]:
    """(ok, output): does gcloud parse and accept the file (up to the credentials check)?"""
    gcloud = tools.gcloud()
    if gcloud is None:
        return False, "gcloud not on PATH"
    with tempfile.TemporaryDirectory(prefix="gcloud-config-") as config_dir:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CLOUDSDK_", "GOOGLE_")) and k != "BOTO_CONFIG"
        }
        env.update(
            {
                "CLOUDSDK_CONFIG": config_dir,
                "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
                "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
                "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
                "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
                # Even if credentials turned up, nothing could reach the real API.
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBUILD": "http://127.0.0.1:9/",
            }
        )
        result = subprocess.run(
            [
                gcloud,
                "builds",
                "submit",
                f"--config={path}",
                "--no-source",
                "--project=offline-check",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=config_dir,
            check=False,
            timeout=120,
        )
    output = result.stdout + result.stderr
    if _PARSE_ERROR_RE.search(output):
        return False, output
    if result.returncode != 0 and _CREDENTIALS_RE.search(output):
        return True, output
    return (
        False,
        "unexpected gcloud outcome (neither a parse error nor the credentials error):\n" + output,
    )


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    return []


def used_substitutions(doc: dict[str, Any]) -> set[str]:
    """Names of the $VAR / ${VAR} substitutions a build config uses ($$ is a literal $)."""
    parts = {k: v for k, v in doc.items() if k != "substitutions"}
    texts = _strings(parts) + _strings(doc.get("substitutions") or {})
    used = set()
    for text in texts:
        for match in _SUBST_RE.finditer(text.replace("$$", "")):
            used.add(match.group(1) or match.group(2))
    return used


def lint(doc: dict[str, Any]) -> list[str]:
    problems = []
    steps = doc.get("steps") or []
    seen: list[str] = []
    for index, step in enumerate(steps):
        step_id = step.get("id")
        if not step_id:
            problems.append(f"step {index} has no id")
        elif step_id in seen:
            problems.append(f"duplicate step id {step_id!r}")
        for dep in step.get("waitFor") or []:
            if dep != "-" and dep not in seen:
                problems.append(f"step {step_id!r} waits for unknown or later step {dep!r}")
        image = step.get("name", "")
        if not any(p.match(image) for p in ALLOWED_IMAGES):
            problems.append(f"step {step_id!r}: builder image {image!r} not in the allow-list")
        if step_id:
            seen.append(step_id)
    declared = set((doc.get("substitutions") or {}).keys())
    used = used_substitutions(doc)
    for name in sorted(used - declared - BUILTIN_SUBSTITUTIONS):
        problems.append(f"substitution ${name} is used but not declared")
    for name in sorted(declared - used):
        problems.append(f"substitution {name} is declared but never used")
    if (doc.get("substitutions") or {}).get("_TRAIN") != "false":
        problems.append("_TRAIN must default to 'false' (training runs only on demand)")
    train = [s for s in steps if "_TRAIN" in " ".join(_strings(s))]
    if not train:
        problems.append("no step is guarded by _TRAIN")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else CLOUDBUILD
    results = {"schema": jsonschema_check(path)}
    if tools.gcloud():
        results["gcloud parse"] = gcloud_parse(path)
    elif tools.in_ci():
        # CI (and Cloud Build's test and iac-checks steps) install the SDK: a missing gcloud
        # there is a broken environment, not a reason to skip the check.
        results["gcloud parse"] = (False, "gcloud not on PATH, and CI is set: it is required\n")
    else:
        print("cloudbuild gcloud parse: skipped (gcloud not on PATH; set CI=true to require it)")
    problems = lint(load(path))
    results["lint"] = (not problems, "\n".join(problems) + "\n" if problems else "")
    for name, (ok, output) in results.items():
        if not ok:
            print(output, end="")
        print(f"cloudbuild {name}: {'ok' if ok else 'FAILED'}")
    return 0 if all(ok for ok, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
