"""The message schemas and their examples through python3-jsonschema's Draft7Validator.

tests/unit/test_schemas.c runs the same examples through our C validator (rf_schema), so
the two validators cannot drift apart on our own contract. Run with Debian's python3:
    /usr/bin/python3 -m pytest tests/blackbox/test_schemas.py
"""
import json
import pathlib

import pytest
from jsonschema import Draft7Validator

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
KINDS = ["relfleet.request.v1", "relfleet.rendered.v1", "relfleet.applied.v1",
         "relfleet.command.v1", "relfleet.result.v1", "relfleet.dlq.v1", "relfleet.approval.v1"]


def load(path):
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"{path}: duplicate keys"
        return dict(pairs)
    with open(path, encoding="utf-8") as f:
        return json.load(f, object_pairs_hook=no_duplicates)


def schema(kind):
    return load(SCHEMAS / f"{kind}.json")


def examples(cls):
    out = []
    for kind in KINDS:
        files = sorted((SCHEMAS / "examples" / kind / cls).glob("*.json"))
        assert len(files) >= (3 if cls == "valid" else 7), f"{kind}: too few {cls} examples"
        out += [pytest.param(kind, f, id=f"{kind}/{f.stem}") for f in files]
    return out


def test_schema_files_are_exactly_the_kinds():
    assert sorted(p.stem for p in SCHEMAS.glob("*.json")) == sorted(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_draft7(kind):
    s = schema(kind)
    Draft7Validator.check_schema(s)
    assert s["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert s["$id"] == kind
    assert s["type"] == "object"
    assert s["additionalProperties"] is False
    assert s["properties"]["schema"] == {"const": kind}
    assert "schema" in s["required"]
    assert set(s["required"]) <= set(s["properties"])


@pytest.mark.parametrize("kind", KINDS)
def test_every_string_is_bounded(kind):
    """A string with no maxLength would let a 1 MB value through: every string is bounded
    (by maxLength, or by an enum or const)."""
    unbounded = []

    def walk(node, where):
        if isinstance(node, dict):
            types = node.get("type")
            types = types if isinstance(types, list) else [types]
            if "string" in types and "maxLength" not in node:
                unbounded.append(where)
            for k, v in node.items():
                if k not in ("enum", "const", "required", "examples"):
                    walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}/{i}")
    walk(schema(kind), "#")
    assert unbounded == []


def test_shared_definitions_are_identical():
    """Each file is self-contained; a definition used by several files is the same in all."""
    seen = {}
    for kind in KINDS:
        for name, d in schema(kind).get("definitions", {}).items():
            if name in seen:
                assert d == seen[name][1], f"definition '{name}' differs in {kind} and {seen[name][0]}"
            else:
                seen[name] = (kind, d)
    assert {"uuid", "time", "name", "version", "operator"} <= set(seen)


@pytest.mark.parametrize("kind,path", examples("valid"))
def test_valid_example(kind, path):
    errors = [e.message for e in Draft7Validator(schema(kind)).iter_errors(load(path))]
    assert errors == []


@pytest.mark.parametrize("kind,path", examples("invalid"))
def test_invalid_example(kind, path):
    errors = list(Draft7Validator(schema(kind)).iter_errors(load(path)))
    assert errors, f"{path.name} was accepted"
    # the C validator's reason names the same field as one of python-jsonschema's errors
    reason = path.with_suffix(".reason").read_text(encoding="utf-8").strip()
    if reason.startswith("field '"):
        field = reason[len("field '"):].split("'")[0]
        matches = []
        for e in errors:
            p = ""
            for part in e.absolute_path:
                p += f"[{part}]" if isinstance(part, int) else (f".{part}" if p else str(part))
            # required, additionalProperties and propertyNames point at the parent object,
            # the C validator at the field itself
            child = (e.validator in ("required", "additionalProperties")
                     or "propertyNames" in e.schema_path)
            parent = field.rsplit(".", 1)[0] if "." in field else ""
            matches.append(field == p or (child and parent == p))
        assert any(matches), f"{reason!r} vs {[e.message for e in errors]}"


def test_one_megabyte_string_refused_by_max_length():
    s = schema("relfleet.request.v1")
    doc = load(SCHEMAS / "examples" / "relfleet.request.v1" / "valid" / "minimal-deploy.json")
    doc["description"] = "x" * (1024 * 1024)
    errors = list(Draft7Validator(s).iter_errors(doc))
    assert [e.validator for e in errors] == ["maxLength"]
