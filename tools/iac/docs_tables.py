"""The variables and outputs tables of docs/deploy.md and README.md, generated from the root
module.

The tables sit between ``<!-- BEGIN GENERATED: variables -->`` / ``<!-- END GENERATED: ... -->``
markers; tests/iac fails when they drift from variables.tf / outputs.tf. Only the text between
the markers is rewritten.

    .venv/bin/python -m tools.iac.docs_tables --write     # refresh docs/deploy.md and README.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from tools.iac.hcl import REPO_ROOT, Module, expression, load_config

DEPLOY_DOC = REPO_ROOT / "docs" / "deploy.md"
README = REPO_ROOT / "README.md"
DOCUMENTS = (DEPLOY_DOC, README)


def _hcl_value(value: Any) -> str:
    """A parsed value written back in HCL syntax (for the Default column)."""
    expr = expression(value)
    if expr is not None:
        text = expr
    elif value is None or isinstance(value, bool):
        text = {None: "null", True: "true", False: "false"}[value]
    elif isinstance(value, dict):
        items = ", ".join(f"{k} = {_hcl_value(v)}" for k, v in value.items() if k != "__is_block__")
        text = "{ " + items + " }" if items else "{}"
    elif isinstance(value, list):
        text = "[" + ", ".join(_hcl_value(v) for v in value) + "]"
    elif isinstance(value, str):
        text = json.dumps(value)
    else:
        text = str(value)
    return text


def _type(value: Any) -> str:
    # A type is an expression; python-hcl2 returns bare keywords (string, number) unwrapped.
    return expression(value) or str(value)


def _cell(text: str) -> str:
    """Markdown table cell: pipes escaped, <placeholders> kept visible."""
    return text.replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


def variables_table(module: Module) -> str:
    rows = ["| Name | Type | Default | Description |", "|---|---|---|---|"]
    for name, body in module.variables().items():
        default = f"`{_hcl_value(body['default'])}`" if "default" in body else "**required**"
        rows.append(
            f"| `{name}` | `{_type(body.get('type'))}` | {_cell(default)} "
            f"| {_cell(body.get('description', ''))} |"
        )
    return "\n".join(rows)


def outputs_table(module: Module) -> str:
    rows = ["| Name | Description |", "|---|---|"]
    for name, body in module.outputs().items():
        rows.append(f"| `{name}` | {_cell(body.get('description', ''))} |")
    return "\n".join(rows)


def tables(root: Path = REPO_ROOT) -> dict[str, str]:
    module = load_config(root)[root]
    return {"variables": variables_table(module), "outputs": outputs_table(module)}


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- BEGIN GENERATED: {name} -->\n)(.*?)\n?(<!-- END GENERATED: {name} -->)", re.DOTALL
    )


def render(doc: str, generated: dict[str, str]) -> str:
    for name, table in generated.items():
        pattern = _pattern(name)
        if not pattern.search(doc):
            raise ValueError(f"no GENERATED {name} markers in the document")
        doc = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(3), doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    generated = tables()
    stale = []
    for document in DOCUMENTS:
        current = document.read_text()
        updated = render(current, generated)
        if updated == current:
            continue
        if "--write" in args:
            document.write_text(updated)
        else:
            stale.append(document.relative_to(REPO_ROOT))
    for document in stale:
        print(f"{document} tables are stale: run python -m tools.iac.docs_tables --write")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
