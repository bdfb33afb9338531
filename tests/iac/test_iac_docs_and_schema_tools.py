"""docs/deploy.md tables stay in sync; regenerate_schema reads the jsii model correctly."""

from __future__ import annotations

import json

import pytest

from tools.iac import docs_tables, regenerate_schema
from tools.iac.check_schema import SCHEMA_DIR


@pytest.mark.parametrize("document", docs_tables.DOCUMENTS, ids=lambda p: p.name)
def test_doc_tables_are_current(document):
    current = document.read_text()
    assert docs_tables.render(current, docs_tables.tables()) == current, (
        "run: .venv/bin/python -m tools.iac.docs_tables --write"
    )


@pytest.mark.parametrize("document", docs_tables.DOCUMENTS, ids=lambda p: p.name)
def test_doc_lists_every_root_variable_and_output(document):
    text = document.read_text()
    for needle in ("`project_id`", "`model_version`", "`training_gpu_type`", "`function_url`"):
        assert needle in text
    root = docs_tables.load_config(docs_tables.REPO_ROOT)[docs_tables.REPO_ROOT]
    for name in [*root.variables(), *root.outputs()]:
        assert f"| `{name}` |" in text, name


def test_cli_reports_a_stale_document(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "doc.md"
    markers = "<!-- BEGIN GENERATED: {0} -->\n| old |\n<!-- END GENERATED: {0} -->\n"
    stale.write_text(markers.format("variables") + markers.format("outputs"))
    monkeypatch.setattr(docs_tables, "DOCUMENTS", (stale,))
    monkeypatch.setattr(docs_tables, "REPO_ROOT", tmp_path)
    assert docs_tables.main([]) == 1
    assert "doc.md tables are stale" in capsys.readouterr().out
    assert docs_tables.main(["--write"]) == 0
    assert docs_tables.main([]) == 0
    assert "| `project_id` |" in stale.read_text()


def test_render_requires_markers():
    with pytest.raises(ValueError, match="markers"):
        docs_tables.render("no markers here", {"variables": "| x |"})


def _prop(name, tf_name, type_ref, optional=True, summary=""):
    link = (
        "Docs at Terraform Registry: {@link https://registry.terraform.io/providers/hashicorp/"
        f"demo/1.2.3/docs/resources/thing#{tf_name} Thing#{tf_name}}}"
    )
    prop = {"name": name, "type": type_ref, "docs": {"remarks": link, "summary": summary}}
    if optional:
        prop["optional"] = True
    return prop


SYNTHETIC_JSII = {
    "name": "@cdktf/provider-demo",
    "version": "1.0.0",
    "types": {
        "@cdktf/provider-demo.provider.DemoProvider": {
            "kind": "class",
            "base": "cdktf.TerraformProvider",
            "initializer": {
                "docs": {
                    "summary": "Create a new {@link https://registry.terraform.io/providers/"
                    "hashicorp/demo/1.2.3/docs demo} Resource."
                },
                "parameters": [{"name": "config", "type": {"fqn": "@cdktf/provider-demo.P"}}],
            },
        },
        "@cdktf/provider-demo.P": {"kind": "interface", "datatype": True, "properties": []},
        "@cdktf/provider-demo.thing.Thing": {
            "kind": "class",
            "base": "cdktf.TerraformResource",
            "initializer": {
                "docs": {
                    "summary": "Create a new {@link https://registry.terraform.io/providers/"
                    "hashicorp/demo/1.2.3/docs/resources/thing demo_thing} Resource."
                },
                "parameters": [
                    {"name": "config", "type": {"fqn": "@cdktf/provider-demo.thing.ThingConfig"}}
                ],
            },
            "properties": [
                {"name": "selfLink", "type": {"primitive": "string"}},
                {"name": "nameInput", "type": {"primitive": "string"}},
                {"name": "tfResourceType", "static": True, "type": {"primitive": "string"}},
            ],
        },
        "@cdktf/provider-demo.thing.ThingConfig": {
            "kind": "interface",
            "datatype": True,
            "properties": [
                _prop("name", "name", {"primitive": "string"}, optional=False),
                _prop("forceDestroy", "force_destroy", {"primitive": "boolean"}),
                _prop(
                    "rule",
                    "rule",
                    {
                        "union": {
                            "types": [
                                {"fqn": "cdktf.IResolvable"},
                                {
                                    "collection": {
                                        "kind": "array",
                                        "elementtype": {"fqn": "@cdktf/provider-demo.thing.R"},
                                    }
                                },
                            ]
                        }
                    },
                ),
                _prop("spec", "spec", {"fqn": "@cdktf/provider-demo.thing.S"}, optional=False),
            ],
        },
        "@cdktf/provider-demo.thing.R": {
            "kind": "interface",
            "datatype": True,
            "properties": [_prop("age", "age", {"primitive": "number"}, optional=False)],
        },
        "@cdktf/provider-demo.thing.S": {"kind": "interface", "datatype": True, "properties": []},
    },
}


def test_build_schema_from_jsii():
    schema = regenerate_schema.build_schema(SYNTHETIC_JSII)
    assert schema["provider_name"] == "demo"
    assert schema["provider_version"] == "1.2.3"
    assert schema["resource_types"] == ["demo_thing"]
    thing = schema["resources"]["demo_thing"]
    assert thing["attrs"] == {"force_destroy": "optional", "name": "required"}
    assert thing["blocks"]["rule"]["min"] == 0
    assert thing["blocks"]["rule"]["max"] is None
    assert thing["blocks"]["rule"]["attrs"] == {"age": "required"}
    assert thing["blocks"]["spec"]["min"] == 1
    assert thing["blocks"]["spec"]["max"] == 1
    assert thing["computed"] == ["self_link"]
    assert json.loads(regenerate_schema.dump_schema(schema)) == schema


def test_subset_keeps_every_type_name():
    schema = regenerate_schema.build_schema(SYNTHETIC_JSII, wanted=set())
    assert schema["resource_types"] == ["demo_thing"]
    assert schema["resources"] == {}


def test_committed_schema_was_generated_by_the_script():
    google = json.loads((SCHEMA_DIR / "google.json").read_text())
    assert google["comment"].startswith("Generated by tools/iac/regenerate_schema.py")
    assert len(google["resource_types"]) > 1000
    assert set(google["resources"]) == set(google["resource_types"])
    assert regenerate_schema.PACKAGES["google"] == ("@cdktf/provider-google", "16.12.1")
