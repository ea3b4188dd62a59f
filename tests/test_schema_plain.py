"""The manifest-time schema check's fast path never accepts what the metaschema rejects."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from skillyard.schema import _plainly_valid, schema_problem

CASES: list[Any] = [
    True,
    False,
    {},
    {"type": "object"},
    {"type": "objekt"},
    {"type": ["string", "null"]},
    {"type": ["string", "string"]},
    {"type": []},
    {"required": ["a", "a"]},
    {"required": "a"},
    {"required": [1]},
    {"properties": {"a": {"type": "string"}}},
    {"properties": {"a": 5}},
    {"minLength": -1},
    {"minLength": 1.5},
    {"minLength": True},
    {"minimum": "x"},
    {"enum": 5},
    {"enum": []},
    {"anyOf": []},
    {"anyOf": [{"type": "string"}]},
    {"items": {"type": "integer"}},
    {"items": [{}]},
    {"additionalProperties": False},
    {"title": 5},
    {"format": "date"},
    {"uniqueItems": "yes"},
    {"pattern": "("},
    {"type": "object", "properties": {"x": {"type": "array", "items": {"enum": [1]}}}},
]


@pytest.mark.parametrize("schema", CASES, ids=[str(i) for i in range(len(CASES))])
def test_fast_path_agrees_with_the_metaschema(schema: Any) -> None:
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
        valid = True
    except jsonschema.SchemaError:
        valid = False
    if _plainly_valid(schema):
        assert valid, f"fast path accepted an invalid schema: {schema}"
    assert (schema_problem(schema) is None) == valid
