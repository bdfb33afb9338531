"""terraform.tfvars.example says every value it shows but project_id is the default: keep it so."""

from __future__ import annotations

from typing import Any

from tools.iac.hcl import BLOCK_MARK, REPO_ROOT, load_config, parse_text

EXAMPLE = REPO_ROOT / "terraform.tfvars.example"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != BLOCK_MARK}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def example_mismatches() -> dict[str, tuple[Any, Any]]:
    """{name: (example value, default)} of every example value that is not the default."""
    variables = load_config(REPO_ROOT)[REPO_ROOT].variables()
    example = parse_text(EXAMPLE.read_text())
    mismatches = {}
    for name, value in example.items():
        if name.startswith("__") or name == "project_id":
            continue
        default = _plain(variables[name].get("default")) if name in variables else "<undeclared>"
        if _plain(value) != default:
            mismatches[name] = (_plain(value), default)
    return mismatches


def test_example_shows_the_defaults():
    assert example_mismatches() == {}


def test_example_sets_only_declared_variables():
    variables = load_config(REPO_ROOT)[REPO_ROOT].variables()
    example = parse_text(EXAMPLE.read_text())
    assert {k for k in example if not k.startswith("__")} <= set(variables)
