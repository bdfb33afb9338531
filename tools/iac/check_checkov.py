"""checkov over the Terraform configuration, offline, with the skips of .checkov.yaml.

checkov runs from its own virtualenv (.venv-checkov, built by ``make setup`` from
requirements/checkov.txt: its bc-python-hcl2 would shadow python-hcl2 in .venv). Several
directories can be scanned in one run (checkov's start-up dominates its run time); the JSON
report holds one document per directory.

Run ``python -m tools.iac.check_checkov [DIR ...]``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.iac import tools
from tools.iac.hcl import REPO_ROOT

CONFIG = REPO_ROOT / ".checkov.yaml"
_SKIP_LINE_RE = re.compile(r"^\s*-\s*(CKV2?_[A-Z0-9_]+)\s*(?:#\s*(.*))?$")


@dataclass
class Report:
    """One scanned directory: its summary and failed checks."""

    directory: Path
    summary: dict[str, Any]
    failed: list[dict[str, Any]] = field(default_factory=list)
    passed: list[dict[str, Any]] = field(default_factory=list)

    def passed_on(self, resource_suffix: str) -> set[str]:
        """Ids of the checks that passed on resources whose address ends with the suffix."""
        return {p["check_id"] for p in self.passed if p["resource"].endswith(resource_suffix)}


def skipped_checks(config: Path = CONFIG) -> dict[str, str]:
    """{check id: reason} from the skip-check list of the config file (reason = line comment)."""
    skips: dict[str, str] = {}
    in_list = False
    for line in config.read_text().splitlines():
        if re.match(r"^skip-check\s*:", line):
            in_list = True
            continue
        if in_list:
            match = _SKIP_LINE_RE.match(line)
            if match:
                skips[match.group(1)] = (match.group(2) or "").strip()
            elif line.strip() and not line.startswith((" ", "\t", "#")):
                in_list = False
    return skips


def _documents(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    docs, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return docs
        doc, i = decoder.raw_decode(text, i)
        docs.extend(doc if isinstance(doc, list) else [doc])


def run(directories: list[Path], config: Path = CONFIG, timeout: int = 300) -> list[Report]:
    """Scan each directory (one checkov process each, run concurrently); Reports in order.

    One process per directory: checkov 3.3.30 given several --directory options reports the
    first one again instead of the others.
    """
    exe = tools.checkov()
    if exe is None:
        raise FileNotFoundError(f"{tools.CHECKOV} not found: run `make setup`")
    procs = []
    for directory in directories:
        cmd = [str(exe), "--config-file", str(config), "--output", "json", "--skip-download"]
        cmd += ["--directory", str(directory)]
        procs.append(
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT
            )
        )
    reports = []
    for directory, proc in zip(directories, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=timeout)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"checkov failed ({proc.returncode}):\n{stderr[-4000:]}")
        docs = [d for d in _documents(stdout) if d.get("check_type", "terraform") == "terraform"]
        if len(docs) > 1:
            raise RuntimeError(f"checkov returned {len(docs)} terraform reports for {directory}")
        doc = docs[0] if docs else {}
        summary = doc.get("summary", {"passed": 0, "failed": 0, "skipped": 0})
        results = doc.get("results", {})
        reports.append(
            Report(
                directory,
                summary,
                results.get("failed_checks", []),
                results.get("passed_checks", []),
            )
        )
    return reports


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directories = [Path(a).resolve() for a in args] or [REPO_ROOT]
    reports = run(directories)
    for report in reports:
        for failure in report.failed:
            print(
                f"{failure['check_id']} {failure['resource']} "
                f"({failure['file_path']}): {failure['check_name']}"
            )
        s = report.summary
        print(
            f"checkov {report.directory}: passed {s.get('passed')}, failed {s.get('failed')}, "
            f"skipped {s.get('skipped')}; skipped by .checkov.yaml: "
            f"{', '.join(sorted(skipped_checks())) or 'none'}"
        )
    return 1 if any(r.failed for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
