"""Regenerate the provider schemas that check_schema.py checks the project's .tf files against.

Terraform cannot fetch providers offline (docs/architecture.md, decision 8), so the schemas come
from the prebuilt CDK for Terraform npm packages: the ``.jsii`` assembly of
``@cdktf/provider-google@16.12.1`` describes every resource, data source and the provider block of
google provider 6.50.0 (the version it was generated from; versions.tf pins ``~> 6.50``) as typed
configuration interfaces, and ``@cdktf/provider-archive@11.0.1`` does the same for hashicorp/archive
2.7.1 (``data "archive_file"``). This script downloads each package with ``npm pack`` (only the npm
registry is needed), reads ``package/.jsii`` straight from the tarball and writes
``tools/iac/schema/<provider>.json``:

* ``resource_types`` / ``data_source_types``: the names of *all* resources and data sources of the
  provider, so that an unknown type is told apart from a known type missing from a ``--types``
  subset;
* ``resources`` / ``data_sources``: the argument/block schema of every type (about 1 MB for
  google, one type per line so that a regeneration is a readable diff), or only of ``--types``;
* ``provider``: the schema of the ``provider "<name>"`` block.

Each schema is ``{"attrs": {name: "required"|"optional"}, "blocks": {name: {"min": 0|1,
"max": 1|null, "attrs": ..., "blocks": ...}}, "computed": [name, ...]}``. In the jsii model an
argument whose type is a generated struct (or a list of them) is a nested block; ``optional``
absent means required. Computed-only attributes are not part of the Config interfaces (so they
are rightly not settable); ``computed`` lists them from the resource class and the blocks'
OutputReference getters, to check attribute references (left out when empty). The Terraform
names come from the registry links in the docs (``...#force_destroy``), with a camelCase ->
snake_case fallback.

Usage (bump the versions in PACKAGES together with versions.tf)::

    .venv/bin/python tools/iac/regenerate_schema.py                 # every provider, every type
    .venv/bin/python tools/iac/regenerate_schema.py google --types google_storage_bucket
    .venv/bin/python tools/iac/regenerate_schema.py google --jsii /path/to/package/.jsii
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

# provider name -> (npm package, package version). The google package 16.12.1 was generated from
# google provider 6.50.0 (versions.tf pins ~> 6.50); archive 11.0.1 from hashicorp/archive 2.7.1.
PACKAGES = {
    "google": ("@cdktf/provider-google", "16.12.1"),
    "archive": ("@cdktf/provider-archive", "11.0.1"),
}

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
SCHEMA_DIR = HERE / "schema"

_LINK_RE = re.compile(r"#([A-Za-z0-9_]+) [A-Za-z0-9_]+#[A-Za-z0-9_]+\}")
_TYPE_RE = re.compile(r"/docs/(resources|data-sources)/[a-z0-9_]+\s+([a-z0-9_]+)\}")
_VERSION_RE = re.compile(r"registry\.terraform\.io/providers/hashicorp/([a-z0-9]+)/([0-9.]+)/docs")


def load_jsii_from_npm(package: str, version: str) -> dict[str, Any]:
    """``npm pack`` the package into a temporary directory and read its ``.jsii`` assembly."""
    with tempfile.TemporaryDirectory(prefix="cdktf-provider-") as tmp:
        out = subprocess.run(
            ["npm", "pack", "--silent", f"{package}@{version}"],
            cwd=tmp,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        tarball = Path(tmp) / out.splitlines()[-1]
        with tarfile.open(tarball) as tar:
            member = tar.extractfile("package/.jsii")
            if member is None:
                raise SystemExit(f"{tarball.name} has no package/.jsii")
            return json.load(member)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _tf_name(prop: dict[str, Any]) -> str:
    docs = prop.get("docs", {})
    text = docs.get("remarks", "") + " " + docs.get("summary", "")
    match = _LINK_RE.search(text)
    return match.group(1) if match else _snake(prop["name"])


def _struct_of(type_ref: dict[str, Any], types: dict[str, Any]) -> tuple[str | None, bool]:
    """(struct fqn, is_list) when ``type_ref`` is a generated struct or a list of them."""
    candidates = type_ref.get("union", {}).get("types", [type_ref])
    for cand in candidates:
        fqn = cand.get("fqn")
        if fqn and types.get(fqn, {}).get("datatype"):
            return fqn, False
        elem = cand.get("collection", {}).get("elementtype", {})
        fqn = elem.get("fqn")
        if fqn and types.get(fqn, {}).get("datatype"):
            return fqn, True
    return None, False


_INTERNAL_PROPS = {"internalValue", "fqn", "creationStack", "terraformResourceType"}


def _computed(class_fqn: str, types: dict[str, Any], settable: set[str]) -> list[str]:
    """Readable attributes of a resource class or block OutputReference that cannot be set.

    Getter names are camelCase without a docs link, so the Terraform name is the snake_case form
    (only used to check attribute references such as ``google_x.y.some_attr``).
    """
    cls = types.get(class_fqn)
    if cls is None:
        return []
    names = {
        _snake(p["name"])
        for p in cls.get("properties", [])
        if not p.get("static")
        and not p["name"].endswith("Input")
        and p["name"] not in _INTERNAL_PROPS
    }
    return sorted(names - settable)


def _struct_schema(
    fqn: str, types: dict[str, Any], reader_fqn: str | None = None
) -> dict[str, Any]:
    """Arguments, nested blocks and computed attributes of one jsii struct.

    ``fqn`` is a Config interface or a block's struct; ``reader_fqn`` the class whose getters list
    what can be read (the resource class, or the block's OutputReference by default). Only the
    struct's own properties are read: TerraformMetaArguments (count, for_each, depends_on,
    provider, lifecycle, ...) is an inherited interface that check_schema.py handles.
    """
    attrs: dict[str, str] = {}
    blocks: dict[str, Any] = {}
    for prop in types[fqn].get("properties", []):
        name = _tf_name(prop)
        struct, is_list = _struct_of(prop["type"], types)
        required = not prop.get("optional", False)
        if struct is not None:
            nested = _struct_schema(struct, types)
            nested["min"] = 1 if required else 0
            nested["max"] = None if is_list else 1
            blocks[name] = nested
        else:
            attrs[name] = "required" if required else "optional"
    schema: dict[str, Any] = {
        "attrs": dict(sorted(attrs.items())),
        "blocks": dict(sorted(blocks.items())),
    }
    computed = _computed(reader_fqn or fqn + "OutputReference", types, set(attrs) | set(blocks))
    if computed:
        schema["computed"] = computed
    return schema


def _config_fqn(cls: dict[str, Any]) -> str | None:
    for param in cls.get("initializer", {}).get("parameters", []):
        if param["name"] == "config":
            return param["type"]["fqn"]
    return None


def build_schema(jsii: dict[str, Any], wanted: set[str] | None = None) -> dict[str, Any]:
    """Compact schema; ``wanted`` = type names to include in full (None: all of them)."""
    types = jsii["types"]
    prefix = jsii["name"] + "."
    provider_name = provider_version = ""
    kinds = {"cdktf.TerraformResource": "resources", "cdktf.TerraformDataSource": "data_sources"}
    names: dict[str, list[str]] = {"resources": [], "data_sources": []}
    full: dict[str, dict[str, Any]] = {"resources": {}, "data_sources": {}}
    provider: dict[str, Any] = {}
    for fqn, cls in types.items():
        if not fqn.startswith(prefix) or cls.get("kind") != "class":
            continue
        base = cls.get("base")
        config = _config_fqn(cls)
        summary = cls.get("initializer", {}).get("docs", {}).get("summary", "")
        if base == "cdktf.TerraformProvider" and config:
            provider = _struct_schema(config, types, reader_fqn="")
            version = _VERSION_RE.search(summary)
            if not version:
                raise SystemExit(f"cannot find the provider version in {fqn}")
            provider_name, provider_version = version.groups()
            continue
        if base not in kinds or not config:
            continue
        match = _TYPE_RE.search(summary)
        if not match:
            raise SystemExit(f"cannot find the Terraform type name of {fqn}")
        tf_type = match.group(2)
        kind = kinds[base]
        names[kind].append(tf_type)
        if wanted is None or tf_type in wanted:
            full[kind][tf_type] = _struct_schema(config, types, reader_fqn=fqn)
    if not provider:
        raise SystemExit("no provider class in the assembly")
    return {
        "comment": (
            f"Generated by tools/iac/regenerate_schema.py from {jsii['name']}@{jsii['version']} "
            f"({provider_name} provider {provider_version}). Do not edit by hand."
        ),
        "provider_name": provider_name,
        "provider_version": provider_version,
        "source_package": f"{jsii['name']}@{jsii['version']}",
        "resource_types": sorted(names["resources"]),
        "data_source_types": sorted(names["data_sources"]),
        "provider": provider,
        "resources": dict(sorted(full["resources"].items())),
        "data_sources": dict(sorted(full["data_sources"].items())),
    }


def dump_schema(schema: dict[str, Any]) -> str:
    """JSON with one type per line: small (~1 MB for everything) and reviewable as a diff."""
    lines = ["{"]
    items = list(schema.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if key in ("resources", "data_sources") and value:
            lines.append(f"{json.dumps(key)}: {{")
            entries = list(value.items())
            for j, (name, body) in enumerate(entries):
                sep = "," if j < len(entries) - 1 else ""
                lines.append(f" {json.dumps(name)}: {json.dumps(body, separators=(',', ':'))}{sep}")
            lines.append("}" + comma)
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, separators=(',', ':'))}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "providers", nargs="*", default=sorted(PACKAGES), help="providers (default: all)"
    )
    parser.add_argument("--jsii", type=Path, help="read this .jsii file instead of npm pack")
    parser.add_argument("--types", nargs="*", help="only these types in full (default: all)")
    parser.add_argument("--out-dir", type=Path, default=SCHEMA_DIR)
    args = parser.parse_args(argv)
    if args.jsii and len(args.providers) != 1:
        parser.error("--jsii needs exactly one provider")

    for provider in args.providers:
        package, version = PACKAGES[provider]
        jsii = (
            json.loads(args.jsii.read_text()) if args.jsii else load_jsii_from_npm(package, version)
        )
        schema = build_schema(jsii, set(args.types) if args.types else None)
        if schema["provider_name"] != provider:
            raise SystemExit(f"{package} describes {schema['provider_name']}, not {provider}")
        out = args.out_dir / f"{provider}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(dump_schema(schema))
        print(
            f"wrote {out.name} ({schema['source_package']}, "
            f"provider {schema['provider_version']}): "
            f"{len(schema['resources'])}/{len(schema['resource_types'])} resources, "
            f"{len(schema['data_sources'])}/{len(schema['data_source_types'])} data sources"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
