"""schema_instance: every instance it builds is checked by a real validator (jsonschema_rs, formats on),
for many seeds; what it cannot honour is refused with the keyword named."""

from __future__ import annotations

import random
from typing import Any

import jsonschema_rs
import pytest

from runner.engine.schema_instance import SchemaError, check, conforms, instance

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 12},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4, "uniqueItems": True},
        "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "role": {"enum": ["admin", "user", "guest"]},
        "active": {"type": "boolean"},
        "kind": {"const": "person"},
        "nickname": {"type": ["string", "null"]},
        "note": {"type": "string", "nullable": True},
    },
    "required": ["name", "age", "role", "kind"],
    "additionalProperties": False,
}

# pydantic's output for a model with a nested model, an Optional, a Literal union and a list
PYDANTIC = {
    "$defs": {
        "Address": {"properties": {"street": {"title": "Street", "type": "string"},
                                   "zip": {"title": "Zip", "type": "string", "minLength": 5, "maxLength": 5}},
                    "required": ["street", "zip"], "title": "Address", "type": "object"},
        "Cat": {"properties": {"pet_type": {"const": "cat", "title": "Pet Type", "type": "string"},
                               "meows": {"type": "integer", "minimum": 0}},
                "required": ["pet_type", "meows"], "title": "Cat", "type": "object"},
        "Dog": {"properties": {"pet_type": {"const": "dog", "title": "Pet Type", "type": "string"},
                               "barks": {"type": "number", "multipleOf": 0.5, "minimum": 1}},
                "required": ["pet_type", "barks"], "title": "Dog", "type": "object"},
    },
    "properties": {
        "home": {"$ref": "#/$defs/Address"},
        "work": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}], "default": None},
        "pet": {"oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}],
                "discriminator": {"propertyName": "pet_type"}},
        "born": {"type": "string", "format": "date"},
        "seen": {"type": "string", "format": "date-time"},
        "id": {"type": "string", "format": "uuid"},
        "site": {"type": "string", "format": "uri"},
        "ip": {"type": "string", "format": "ipv4"},
        "ip6": {"type": "string", "format": "ipv6"},
        "host": {"type": "string", "format": "hostname"},
        "at": {"type": "string", "format": "time"},
        "took": {"type": "string", "format": "duration"},
        "labels": {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 2},
        "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False,
                 "minItems": 2},
        "base": {"allOf": [{"$ref": "#/$defs/Address"}], "description": "pydantic <2.9 style"},
        "evens": {"type": "array", "items": {"type": "integer", "multipleOf": 2, "minimum": 10, "maximum": 20}},
    },
    "required": ["home", "pet", "born", "labels", "pair", "base"],
    "title": "Owner",
    "type": "object",
}

TREE = {  # recursive: must end
    "$defs": {"node": {"type": "object", "required": ["value"], "properties": {
        "value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
    "$ref": "#/$defs/node",
}

SMALL = [
    {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
    {"type": "array"}, {"type": "object"}, {}, True,
    {"type": "integer", "minimum": -3, "maximum": -3},
    {"type": "number", "minimum": 0.1, "maximum": 0.2},
    {"type": "integer", "multipleOf": 7, "minimum": 50},
    {"type": "string", "minLength": 40},
    {"type": "string", "maxLength": 0},
    {"enum": [1, "a", None, True]},
    {"type": "string", "enum": [1, "only", None]},
    {"oneOf": [{"type": "integer"}, {"type": "number"}]},  # an integer matches both: a non-integer number
    {"anyOf": [{"type": "string", "pattern": "^x"}, {"type": "integer"}]},  # pattern refused before building
    {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 3, "uniqueItems": True},
    {"type": "object", "required": ["x"]},
    {"type": ["integer", "string"], "minimum": 3},
    {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number", "minimum": 5,
     "exclusiveMinimum": True, "maximum": 6, "exclusiveMaximum": True},
    {"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer", "minimum": 5,
     "exclusiveMinimum": True, "maximum": 7, "exclusiveMaximum": True},
]

# schemas with one value only (or, {"type": "object"}, one chosen: no properties)
ONE_VALUE = [s for s in SMALL if s in (
    {"type": "null"}, {"type": "string", "maxLength": 0}, {"type": "object"},
    {"type": "integer", "minimum": -3, "maximum": -3}, {"type": "number", "minimum": 0.1, "maximum": 0.2},
    {"type": "string", "enum": [1, "only", None]}) or (isinstance(s, dict) and "$schema" in s)]


def _valid(schema: Any, value: Any) -> bool:
    return bool(jsonschema_rs.validator_for(schema, validate_formats=True).is_valid(value))


@pytest.mark.parametrize("schema", [PERSON, PYDANTIC, TREE, *[s for s in SMALL if "pattern" not in str(s)]],
                         ids=lambda s: str(s)[:40])
def test_instances_are_valid_for_many_seeds(schema: Any) -> None:
    check(schema)
    seen = set()
    for seed in range(60):
        value = instance(schema, seed)
        assert _valid(schema, value), (seed, value)
        assert conforms(schema, value, schema), (seed, value)
        seen.add(repr(value))
    assert instance(schema, 5) == instance(schema, 5)  # deterministic
    assert len(seen) > 1 or len(seen) == 1 and schema in ONE_VALUE, "the seed should change the instance"


def test_optional_properties_and_nested_values_appear() -> None:
    value = instance(PERSON, 1)
    assert set(value) == set(PERSON["properties"])  # optional ones too, so they are exercised
    assert value["kind"] == "person" and value["role"] in ("admin", "user", "guest")
    pyd = instance(PYDANTIC, 2)
    assert pyd["pet"]["pet_type"] in ("cat", "dog") and len(pyd["home"]["zip"]) == 5
    assert isinstance(pyd["pair"][0], int) and isinstance(pyd["pair"][1], str) and len(pyd["pair"]) == 2


@pytest.mark.parametrize(("schema", "keyword", "unsupported"), [
    ({"type": "string", "pattern": "^[a-z]+$"}, "pattern", True),
    ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not", True),
    ({"anyOf": [{"type": "string", "pattern": "x"}, {"type": "integer"}]}, "pattern", True),
    ({"if": {"type": "string"}, "then": {"minLength": 2}}, "if", True),
    ({"type": "array", "contains": {"type": "integer"}}, "contains", True),
    ({"type": "object", "patternProperties": {"^x": {}}}, "patternProperties", True),
    ({"type": "string", "format": "iri-reference"}, "format", True),
    ({"type": "array", "items": [{"type": "integer"}]}, "items", True),
    ({"$ref": "https://example.com/schema.json"}, "$ref", True),
    ({"type": "integer", "minimum": 5, "maximum": 1}, "maximum", False),
    ({"type": "integer", "minimum": 1.2, "maximum": 1.8}, "minimum", False),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "maxLength", False),
    ({"type": "array", "minItems": 3, "maxItems": 1}, "maxItems", False),
    ({"enum": ["a", "b"], "type": "integer"}, "enum", False),
    ({"type": "object", "required": ["x"], "additionalProperties": False}, "additionalProperties", False),
    ({"type": "array", "items": {"type": "boolean"}, "minItems": 3, "uniqueItems": True}, "uniqueItems", True),
    ({"type": "string", "minLength": 10_000_000}, "minLength", True),
    ({"$ref": "#/$defs/missing"}, "$ref", False),
    ({"$defs": {"loop": {"$ref": "#/$defs/loop"}}, "$ref": "#/$defs/loop"}, "$ref", True),
    ({"type": "sausage"}, "type", False),
    (False, "false", False),
])
def test_what_cannot_be_honoured_is_refused_naming_the_keyword(schema: Any, keyword: str, unsupported: bool) -> None:
    with pytest.raises(SchemaError) as exc:
        check(schema)
        instance(schema, 0)
    assert exc.value.keyword == keyword and exc.value.unsupported is unsupported


def test_refusal_messages_are_bounded() -> None:
    name = "p" * 10_000
    with pytest.raises(SchemaError) as exc:
        check({"type": "object", "properties": {name: {"pattern": "x"}}})
    assert len(str(exc.value)) < 300 and exc.value.keyword == "pattern"


def test_const_and_enum_together_must_both_hold() -> None:
    assert instance({"const": "b", "enum": ["a", "b"]}, 0) == "b"
    with pytest.raises(SchemaError) as exc:
        instance({"const": 3, "enum": ["x"]}, 0)
    assert exc.value.keyword == "const" and not exc.value.unsupported


def test_instances_too_large_to_build_are_refused_quickly() -> None:
    nested = {"type": "array", "minItems": 1000, "items": {"type": "array", "minItems": 1000,
                                                          "items": {"type": "integer"}}}
    with pytest.raises(SchemaError) as exc:
        instance(nested, 0)
    assert exc.value.keyword == "minItems"
    wide = {"type": "array", "minItems": 1000, "items": {"type": "string", "minLength": 90_000}}
    with pytest.raises(SchemaError) as exc:
        instance(wide, 0)
    assert exc.value.keyword == "minLength"


def _random_schema(r: random.Random, depth: int = 0) -> Any:
    if r.random() < 0.1:
        return r.choice([True, False, 1, "x", None])
    keys = ["type", "properties", "required", "items", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs",
            "minimum", "maximum", "exclusiveMinimum", "multipleOf", "minLength", "maxLength", "format", "minItems",
            "maxItems", "uniqueItems", "additionalProperties", "prefixItems", "nullable", "minProperties",
            "maxProperties", "title"]
    simple = [None, True, False, 0, -1, 1.5, 3, "x", "string", "integer", "object", "array", "#/$defs/a", "#",
              "date", "email", [], ["a"], {}, ["string", "null"], [1, 2], 10**9, 1000, 999]

    def value() -> Any:
        k = r.randrange(len(simple) + (3 if depth < 4 else 0)) - len(simple)
        if k < 0:
            return simple[k]
        if k == 0:
            return _random_schema(r, depth + 1)
        if k == 1:
            return [_random_schema(r, depth + 1), _random_schema(r, depth + 1)]
        return {"a": _random_schema(r, depth + 1), "b": _random_schema(r, depth + 1)}

    return {k: value() for k in r.sample(keys, r.randrange(1, 6))}


def test_random_schemas_are_built_valid_or_refused_never_crash() -> None:
    """Fuzz: junk and odd schemas give SchemaError (or the caller's malformed-schema 400: TypeError,
    ValueError, ...) or an instance a real validator accepts."""
    r = random.Random(13)
    built = 0
    for _ in range(4000):
        schema = _random_schema(r)
        try:
            check(schema)
            value = instance(schema, r.randrange(1000))
        except (SchemaError, TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError):
            continue
        try:
            validator = jsonschema_rs.validator_for(schema, validate_formats=True)
        except Exception:  # noqa: BLE001 - a schema jsonschema_rs cannot compile (e.g. a bad $ref) proves nothing
            continue
        built += 1
        assert validator.is_valid(value), (schema, value)
    assert built > 200  # 280 of 4000 with this seed: the rest were refused or junk
