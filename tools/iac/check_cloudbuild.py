"""Checks of the Cloud Build configs, offline: cloudbuild.yaml (the test build) and
cloudbuild-deploy.yaml (the deploy build).

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
  only at submit time), no ``serviceAccount`` in a config (its trigger sets the identity, main.tf);
  and per build:
  - the test build runs no deploy command (terraform init/plan/apply, gcloud on resources) and
    declares no deploy substitution: it runs as the ci account, which cannot deploy;
  - the deploy build runs no tests and installs no packages (they would run with the deploy
    identity), ``_APPLY`` and ``_TRAIN`` default to 'false', every ``terraform apply`` sits in a
    script that checks ``_APPLY`` and refuses an empty ``$COMMIT_SHA`` first, and the training
    step is guarded by ``_TRAIN``.

``substitute`` applies Cloud Build's substitutions to a step's text, so that tests can run a
step's script as Cloud Build would (e.g. the apply step without a commit).

Without gcloud on PATH the parser check is skipped, unless the environment variable CI is set
(tools.in_ci): then it fails.

Run ``python -m tools.iac.check_cloudbuild [FILE ...]`` (default: both configs).
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
CLOUDBUILD_DEPLOY = REPO_ROOT / "cloudbuild-deploy.yaml"
# kind -> config: the test build (ci identity) and the deploy build (deployer identity).
CONFIGS = {"test": CLOUDBUILD, "deploy": CLOUDBUILD_DEPLOY}

# Commands that change or read deployed state: never in the test build.
DEPLOY_COMMANDS = re.compile(
    r"\bterraform\s+(init|plan|apply|destroy|import|state|taint|untaint|refresh|output)\b"
    r"|\bgcloud\s+(compute|functions|run|iam|projects|storage|pubsub|services|secrets|kms"
    r"|builds\s+(submit|triggers))\b"
    r"|\bgsutil\b"
)
# Commands that run project or third-party code: never with the deploy identity.
TEST_COMMANDS = re.compile(
    r"\bmake\b|\bpytest\b|\bpip3?\s+install\b|\buv\s+(pip|sync|run|tool)\b"
    r"|\bpython3?\s+-m\b|\bnpm\b|\bapt-get\s+install\b"
)
# Substitutions that only make sense in the deploy build.
DEPLOY_SUBSTITUTIONS = ("_APPLY", "_TRAIN", "_TF_STATE_BUCKET", "_TF_STATE_PREFIX")

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


def substitute(text: str, values: dict[str, str]) -> str:
    """``text`` as Cloud Build runs it: ``$$`` is a literal ``$``, ``$VAR`` / ``${VAR}`` the
    value (an unset one, like $COMMIT_SHA outside a trigger, the empty string)."""

    def value(match: re.Match[str]) -> str:
        return values.get(match.group(1) or match.group(2), "")

    return "$".join(_SUBST_RE.sub(value, part) for part in text.split("$$"))


def kind_of(path: Path) -> str:
    """'deploy' for cloudbuild-deploy.yaml, else 'test'."""
    return "deploy" if path.name == CLOUDBUILD_DEPLOY.name else "test"


def step_command(step: dict[str, Any]) -> str:
    """What a step runs: its entrypoint (or the builder's: terraform, gcloud) and its args."""
    image = str(step.get("name", ""))
    entry = step.get("entrypoint")
    if not entry:
        entry = "terraform" if "terraform" in image else image.rsplit("/", 1)[-1].partition(":")[0]
    return " ".join([str(entry), *_strings(step.get("args") or [])])


def _lint_common(doc: dict[str, Any]) -> list[str]:
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
    if "serviceAccount" in doc:
        problems.append(
            "serviceAccount is set by the build's trigger (main.tf) or --service-account, "
            "not in the config (substitutions do not apply there)"
        )
    return problems


def _lint_test_build(doc: dict[str, Any]) -> list[str]:
    """The test build runs as the ci account: nothing in it may deploy or need deploy rights."""
    problems = []
    for step in doc.get("steps") or []:
        found = DEPLOY_COMMANDS.search(step_command(step))
        if found:
            problems.append(
                f"test build step {step.get('id')!r} runs {found.group(0)!r}: deploy commands "
                "belong to cloudbuild-deploy.yaml (the test identity cannot deploy)"
            )
    for name in DEPLOY_SUBSTITUTIONS:
        if name in (doc.get("substitutions") or {}):
            problems.append(f"the test build declares the deploy substitution {name}")
    if doc.get("availableSecrets") or any(s.get("secretEnv") for s in doc.get("steps") or []):
        problems.append("the test build gets no secrets")
    return problems


def _guarded_apply_problems(step: dict[str, Any]) -> list[str]:
    step_id = step.get("id")
    command = step_command(step)
    if re.match(r"terraform apply\b", command):
        return [f"step {step_id!r} applies without a script that checks _APPLY and $COMMIT_SHA"]
    apply = command.find("terraform apply")
    if apply < 0:
        return []
    problems = []
    apply_check = re.search(r'"\$\{_APPLY\}" != "true"', command)
    if not apply_check or apply_check.start() > apply:
        problems.append(f"step {step_id!r}: terraform apply must be guarded by _APPLY")
    commit_check = re.search(r'-z "\$COMMIT_SHA"', command)
    if not commit_check or commit_check.start() > apply:
        problems.append(
            f"step {step_id!r}: terraform apply must first refuse a build without a commit "
            '(if [ -z "$COMMIT_SHA" ] ... exit 1)'
        )
    return problems


def _lint_deploy_build(doc: dict[str, Any]) -> list[str]:
    """The deploy build runs as the deployer: no test or third-party code, applies only a
    commit, and only when asked to."""
    problems = []
    subs = doc.get("substitutions") or {}
    for name in ("_APPLY", "_TRAIN"):
        if subs.get(name) != "false":
            problems.append(f"{name} must default to 'false' (set it to 'true' on demand)")
    steps = doc.get("steps") or []
    for step in steps:
        found = TEST_COMMANDS.search(step_command(step))
        if found:
            problems.append(
                f"deploy build step {step.get('id')!r} runs {found.group(0)!r}: tests and "
                "package installs belong to cloudbuild.yaml (not with the deploy identity)"
            )
        problems += _guarded_apply_problems(step)
    if not any("terraform apply" in step_command(s) for s in steps):
        problems.append("the deploy build has no terraform apply step")
    train = [s for s in steps if "_TRAIN" in step_command(s)]
    if not train:
        problems.append("no step is guarded by _TRAIN")
    for step in steps:
        if "instances start" in step_command(step) and step not in train:
            problems.append(f"step {step.get('id')!r} starts the VM without checking _TRAIN")
    return problems


def lint(doc: dict[str, Any], kind: str = "test") -> list[str]:
    """Problems of a build config of the given kind ('test' or 'deploy')."""
    problems = _lint_common(doc)
    if kind == "deploy":
        problems += _lint_deploy_build(doc)
    else:
        problems += _lint_test_build(doc)
    return problems


def check_file(path: Path) -> dict[str, tuple[bool, str]]:
    """Every check of one config: name -> (ok, output)."""
    results = {"schema": jsonschema_check(path)}
    if tools.gcloud():
        results["gcloud parse"] = gcloud_parse(path)
    elif tools.in_ci():
        # CI (and Cloud Build's test and iac-checks steps) install the SDK: a missing gcloud
        # there is a broken environment, not a reason to skip the check.
        results["gcloud parse"] = (False, "gcloud not on PATH, and CI is set: it is required\n")
    else:
        print(f"{path.name} gcloud parse: skipped (gcloud not on PATH; set CI=true to require it)")
    problems = lint(load(path), kind_of(path))
    results["lint"] = (not problems, "\n".join(problems) + "\n" if problems else "")
    return results


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(a) for a in args] if args else list(CONFIGS.values())
    ok_all = True
    for path in paths:
        for name, (ok, output) in check_file(path).items():
            if not ok:
                print(output, end="")
            print(f"{path.name} {name}: {'ok' if ok else 'FAILED'}")
            ok_all = ok_all and ok
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
