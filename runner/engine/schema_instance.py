"""JSON Schema -> one deterministic instance valid against it (the simulated backend's structured output).

The simulated backend has no model to constrain, so it builds the answer from the schema: the same
schema and seed give the same instance, another seed another one. It honours the keywords a
structured-output schema uses (OpenAI's strict subset and pydantic's output):

  type (one or a list), enum, const, properties, required, additionalProperties, min/maxProperties,
  items, prefixItems, min/maxItems, uniqueItems, min/maxLength, format (date-time, date, time,
  email, hostname, ipv4, ipv6, uri, uuid, duration), minimum, maximum, exclusiveMinimum/Maximum
  (number or draft-4 boolean), multipleOf, anyOf / oneOf (the first option that works; for oneOf
  one that matches no other option), allOf (merged), $ref into the same document ($defs,
  definitions, any local pointer), nullable (OpenAPI; the instance is never null for it, so it is
  valid whether a validator reads nullable or not).

A keyword that constrains the instance in a way this module does not build (pattern, not,
if/then/else, contains, propertyNames, ...) raises SchemaError naming it, as does a schema nothing
satisfies (contradictory bounds, an enum no value of which fits). Annotations (title,
description, default, examples, ...) and unknown keywords change nothing, as for a validator.

`conforms()` is a checker for exactly the honoured keywords: it picks enum values and oneOf options
and keeps uniqueItems, so whatever `instance()` returns it has checked where a guess could fail.
"""

from __future__ import annotations

import math
import random
import uuid
from typing import Any

import orjson

from runner.errors import clip

# Keywords that constrain an instance but are not built here: a schema using one is refused.
REFUSED = frozenset({
    "pattern", "patternProperties", "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
    "dependencies", "propertyNames", "contains", "minContains", "maxContains", "unevaluatedProperties",
    "unevaluatedItems", "additionalItems", "$dynamicRef", "$recursiveRef", "contentSchema",
})
# Formats built here; other formats a validator checks are refused; unknown ones are annotations.
FORMATS = ("date-time", "date", "time", "email", "hostname", "ipv4", "ipv6", "uri", "uuid", "duration")
_KNOWN_FORMATS = frozenset(FORMATS) | {"idn-email", "idn-hostname", "iri", "iri-reference", "uri-reference",
                                       "uri-template", "json-pointer", "relative-json-pointer", "regex"}
# Sub-schemas the refused-keyword walk descends into.
_MAP_KEYS = ("properties", "$defs", "definitions")
_LIST_KEYS = ("anyOf", "oneOf", "allOf", "prefixItems")
_ONE_KEYS = ("items", "additionalProperties")

# Bounds on what one instance may hold: a schema asking for more is refused, not built (nested
# minItems would otherwise multiply into an answer no engine step should spend its time on).
MAX_ITEMS = 1000
MAX_LENGTH = 100_000
MAX_VALUES = 20_000  # values in one instance
MAX_CHARS = 1_000_000  # string characters in one instance
MAX_DEPTH = 32
# Past this depth optional properties and extra items are left out, so recursive schemas end.
_SHALLOW = 6

_WORDS = ("alpha", "bright", "cloud", "delta", "ember", "field", "glass", "harbor", "island", "jade",
          "kite", "lemon", "meadow", "north", "ocean", "paper", "quiet", "river", "stone", "tiger",
          "umber", "violet", "willow", "yellow", "zephyr", "amber", "birch", "cedar", "dune", "fern")


class SchemaError(Exception):
    """The schema cannot be honoured: `keyword` at `path` (a JSON pointer into the schema)."""

    def __init__(self, keyword: str, path: str, reason: str, *, unsupported: bool = True) -> None:
        self.keyword = clip(keyword, 40)
        self.path = clip(path or "/", 120)
        self.reason = reason
        self.unsupported = unsupported  # False: the schema is wrong (nothing satisfies it), not merely unbuilt
        super().__init__(f"{self.reason} (keyword '{self.keyword}' at '{self.path}')")


def _bad(keyword: str, path: str, reason: str) -> SchemaError:
    return SchemaError(keyword, path, reason, unsupported=False)


# -- the refused-keyword walk (once per schema) ------------------------------------------------------


def check(schema: Any, path: str = "") -> None:
    """SchemaError for the first refused keyword anywhere in `schema` (also in unused branches, so a
    schema is refused or taken whatever the seed)."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise _bad("type", path, "a schema must be an object or a boolean")
    for key in schema:
        if key in REFUSED:
            raise SchemaError(key, path, f"the simulated backend cannot honour JSON Schema keyword '{key}'")
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _KNOWN_FORMATS and fmt not in FORMATS:
        raise SchemaError("format", path, f"the simulated backend cannot build format '{clip(fmt, 30)}'")
    items = schema.get("items")
    if isinstance(items, list):
        raise SchemaError("items", path, "items as a list (draft-4 tuples) is not supported; use prefixItems")
    for key in _MAP_KEYS:
        sub = schema.get(key)
        if isinstance(sub, dict):
            for name, s in sub.items():
                check(s, f"{path}/{key}/{_escape(name)}")
        elif sub is not None:
            raise _bad(key, path, f"'{key}' must be an object")
    for key in _LIST_KEYS:
        sub = schema.get(key)
        if isinstance(sub, list) and sub:
            for i, s in enumerate(sub):
                check(s, f"{path}/{key}/{i}")
        elif sub is not None:
            raise _bad(key, path, f"'{key}' must be a non-empty list")
    for key in _ONE_KEYS:
        if key in schema:
            check(schema[key], f"{path}/{key}")


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


# -- building ----------------------------------------------------------------------------------------


def instance(schema: Any, seed: int) -> Any:
    """A value valid against `schema`, the same for the same (schema, seed). SchemaError if none can
    be built. Call check() on the schema first."""
    return _Builder(schema, seed).build(schema, "", 0)


_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")


class _Builder:
    def __init__(self, root: Any, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.values = 0
        self.chars = 0

    # schemas with $ref and allOf become one flat schema before building
    def flat(self, schema: Any, path: str, depth: int) -> dict[str, Any]:
        if schema is True:
            return {}
        if schema is False:
            raise _bad("false", path, "the schema 'false' allows no value")
        if depth > MAX_DEPTH:
            raise SchemaError("$ref", path, f"the schema nests deeper than {MAX_DEPTH} levels (a recursion "
                                            "that never ends?)")
        out = dict(schema)
        ref = out.pop("$ref", None)
        if ref is not None:
            out = _merge(self.flat(resolve(self.root, ref, path), path + "/$ref", depth + 1), out, path, "$ref")
        all_of = out.pop("allOf", None)
        if all_of:
            for i, s in enumerate(all_of):
                out = _merge(out, self.flat(s, f"{path}/allOf/{i}", depth + 1), path, "allOf")
        return out

    def build(self, schema: Any, path: str, depth: int) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise SchemaError("minItems", path, f"the instance would hold over {MAX_VALUES} values")
        s = self.flat(schema, path, depth)
        for key in ("anyOf", "oneOf"):
            options = s.get(key)
            if options:
                return self.pick(s, key, options, path, depth)
        if "const" in s:
            return self.fitting(s, [s["const"]], "const", path, depth)
        if "enum" in s:
            enum = s["enum"]
            if not isinstance(enum, list) or not enum:
                raise _bad("enum", path, "'enum' must be a non-empty list")
            start = self.rng.randrange(len(enum))
            return self.fitting(s, enum[start:] + enum[:start], "enum", path, depth)
        errors: list[SchemaError] = []
        for t in self.types(s, path):
            try:
                return getattr(self, "_" + t)(s, path, depth)
            except SchemaError as e:
                errors.append(e)
        raise errors[0]

    def types(self, s: dict[str, Any], path: str) -> list[str]:
        t = s.get("type")
        if t is None:
            # no type: the one the other keywords speak of, else a string
            if "properties" in s or "required" in s or "additionalProperties" in s:
                return ["object"]
            if "items" in s or "prefixItems" in s or "minItems" in s:
                return ["array"]
            if any(k in s for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
                return ["number"]
            return ["string"]
        types = [t] if isinstance(t, str) else t
        if not isinstance(types, list) or not types or any(x not in _TYPES for x in types):
            raise _bad("type", path, f"'type' must be one of {', '.join(_TYPES)} or a list of them")
        # null only when nothing else works: a nullable field still shows its content
        return [x for x in types if x != "null"] + [x for x in types if x == "null"]

    def pick(self, s: dict[str, Any], key: str, options: list[Any], path: str, depth: int) -> Any:
        rest = {k: v for k, v in s.items() if k not in ("anyOf", "oneOf")}
        other = "oneOf" if key == "anyOf" else "anyOf"
        first: SchemaError | None = None
        for i, option in enumerate(options):
            where = f"{path}/{key}/{i}"
            try:
                merged = _merge(rest, self.flat(option, where, depth + 1), where, key)
                if s.get(other):  # both anyOf and oneOf: build for one, check the other
                    merged[other] = s[other]
                value = self.build(merged, where, depth + 1)
            except SchemaError as e:
                first = first or e
                continue
            if key == "oneOf" and any(j != i and conforms(o, value, self.root)
                                      for j, o in enumerate(options)):
                first = first or SchemaError("oneOf", where, "the value built for this option matches "
                                             "another option too")
                continue
            return value
        assert first is not None
        raise first

    def fitting(self, s: dict[str, Any], values: list[Any], key: str, path: str, depth: int) -> Any:
        rest = {k: v for k, v in s.items() if k != key}  # with const and enum both, a value must fit both
        for v in values:
            if conforms(rest, v, self.root):
                return v
        raise _bad(key, path, f"no value of '{key}' satisfies the rest of the schema")

    # -- per type ------------------------------------------------------------------------------------
    def _null(self, s: dict[str, Any], path: str, depth: int) -> None:
        return None

    def _boolean(self, s: dict[str, Any], path: str, depth: int) -> bool:
        return self.rng.random() < 0.5

    def _object(self, s: dict[str, Any], path: str, depth: int) -> dict[str, Any]:
        props = s.get("properties") or {}
        required = s.get("required") or []
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise _bad("required", path, "'required' must be a list of property names")
        extra = s.get("additionalProperties", True)
        lo = _count(s, "minProperties", path, 0)
        hi = _count(s, "maxProperties", path, None)
        names = list(dict.fromkeys(required))
        if hi is not None and len(names) > hi:
            raise _bad("maxProperties", path, "more properties are required than maxProperties allows")
        if depth < _SHALLOW or len(names) < lo:
            for name in props:
                if name not in names and (hi is None or len(names) < hi) and (depth < _SHALLOW or len(names) < lo):
                    names.append(name)
        out: dict[str, Any] = {}
        for name in names:
            sub = props.get(name, extra)
            if sub is False:
                raise _bad("additionalProperties", path, f"required property '{clip(name, 40)}' is not "
                           "allowed by additionalProperties: false")
            out[name] = self.build(sub, f"{path}/properties/{_escape(name)}", depth + 1)
        i = 0
        while len(out) < lo:
            if extra is False:
                raise _bad("minProperties", path, "minProperties asks for more properties than the schema allows")
            i += 1
            name = f"extra_{i}"
            if name not in out:
                out[name] = self.build(extra, f"{path}/additionalProperties", depth + 1)
        return out

    def _array(self, s: dict[str, Any], path: str, depth: int) -> list[Any]:
        prefix = s.get("prefixItems") or []
        items = s.get("items", True)
        lo = _count(s, "minItems", path, 0)
        hi = _count(s, "maxItems", path, None)
        if lo > MAX_ITEMS:
            raise SchemaError("minItems", path, f"minItems over {MAX_ITEMS} is not built")
        if hi is not None and hi < lo:
            raise _bad("maxItems", path, "maxItems is below minItems")
        cap = len(prefix) if items is False else None
        if cap is not None and lo > cap:
            raise _bad("minItems", path, "minItems asks for more items than prefixItems with items: false allow")
        want = lo if depth >= _SHALLOW else max(lo, 1 + self.rng.randrange(3))
        n = min(x for x in (want, hi, cap) if x is not None)
        unique = s.get("uniqueItems") is True
        out: list[Any] = []
        seen: set[bytes] = set()
        for i in range(n):
            sub = prefix[i] if i < len(prefix) else items
            where = f"{path}/prefixItems/{i}" if i < len(prefix) else f"{path}/items"
            v = self.build(sub, where, depth + 1)
            if unique:  # another draw until it differs from the items before it
                for _attempt in range(32):
                    key = _canon(v)
                    if key not in seen:
                        break
                    v = self.build(sub, where, depth + 1)
                else:
                    raise SchemaError("uniqueItems", path, "could not build enough distinct items")
                seen.add(key)
            out.append(v)
        return out

    def _string(self, s: dict[str, Any], path: str, depth: int) -> str:
        lo = _count(s, "minLength", path, 0)
        hi = _count(s, "maxLength", path, None)
        if lo > MAX_LENGTH:
            raise SchemaError("minLength", path, f"minLength over {MAX_LENGTH} is not built")
        if hi is not None and hi < lo:
            raise _bad("maxLength", path, "maxLength is below minLength")
        fmt = s.get("format")
        if fmt in FORMATS:
            text = self.formatted(fmt)
            if len(text) < lo or (hi is not None and len(text) > hi):
                raise SchemaError("format", path, f"a '{fmt}' value does not fit minLength/maxLength")
            return text
        self.chars += lo
        if self.chars > MAX_CHARS:
            raise SchemaError("minLength", path, f"the instance would hold over {MAX_CHARS} characters")
        r = self.rng
        text = " ".join(r.choice(_WORDS) for _ in range(1 + r.randrange(3)))
        if len(text) < lo:
            text = (text + " ") * (lo // (len(text) + 1) + 1)
        return text[:hi] if hi is not None else text

    def formatted(self, fmt: str) -> str:
        r = self.rng
        y, mo, d, h, mi, sec = (2020 + r.randrange(6), 1 + r.randrange(12), 1 + r.randrange(28),
                                r.randrange(24), r.randrange(60), r.randrange(60))
        word = r.choice(_WORDS)
        if fmt == "date-time":
            return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{sec:02d}Z"
        if fmt == "date":
            return f"{y:04d}-{mo:02d}-{d:02d}"
        if fmt == "time":
            return f"{h:02d}:{mi:02d}:{sec:02d}Z"
        if fmt == "email":
            return f"{word}@example.com"
        if fmt == "hostname":
            return f"{word}.example.com"
        if fmt == "ipv4":
            return f"192.0.2.{r.randrange(256)}"
        if fmt == "ipv6":
            return f"2001:db8::{r.randrange(65536):x}"
        if fmt == "uri":
            return f"https://example.com/{word}"
        if fmt == "uuid":
            return str(uuid.UUID(int=r.getrandbits(128), version=4))
        return f"P{1 + r.randrange(9)}D"  # duration

    def _integer(self, s: dict[str, Any], path: str, depth: int) -> int:
        lo, hi, lo_x, hi_x = _bounds(s, path)
        step = _multiple(s, path)
        m = step if step is not None and float(step).is_integer() else None
        if step is not None and m is None:
            raise SchemaError("multipleOf", path, "a non-integer multipleOf on an integer is not built")
        m = int(m or 1)
        first = _ceil_int(lo, lo_x) if lo is not None else None
        last = _floor_int(hi, hi_x) if hi is not None else None
        k_lo = None if first is None else -((-first) // m)
        k_hi = None if last is None else last // m
        if k_lo is not None and k_hi is not None and k_lo > k_hi:
            raise _bad("minimum", path, "no integer lies within the bounds")
        k = _choose(self.rng, k_lo, k_hi)
        return k * m

    def _number(self, s: dict[str, Any], path: str, depth: int) -> float | int:
        step = _multiple(s, path)
        if step is not None:
            lo, hi, lo_x, hi_x = _bounds(s, path)
            k_lo = None if lo is None else math.floor(lo / step)
            k_hi = None if hi is None else math.ceil(hi / step)
            k = _choose(self.rng, k_lo, k_hi)
            for kk in (k, k + 1, k - 1):  # the bounds divided by step may round either way
                v = kk * step
                if _in_bounds(v, lo, hi, lo_x, hi_x) and _is_multiple(v, step):
                    return v
            raise _bad("multipleOf", path, "no multiple of multipleOf lies within the bounds")
        lo, hi, lo_x, hi_x = _bounds(s, path)
        base = self._integer({k: v for k, v in s.items() if k != "multipleOf"}, path, depth) if (
            _ceil_int(lo, lo_x) if lo is not None else -math.inf) <= (
            _floor_int(hi, hi_x) if hi is not None else math.inf) else None
        if base is None:  # no integer inside: the midpoint of the (narrow) interval
            assert lo is not None and hi is not None
            v = (lo + hi) / 2
            if not _in_bounds(v, lo, hi, lo_x, hi_x):
                raise _bad("minimum", path, "no number lies within the bounds")
            return v
        v = base + 0.5
        return v if _in_bounds(v, lo, hi, lo_x, hi_x) else base


# -- helpers -----------------------------------------------------------------------------------------


def resolve(root: Any, ref: Any, path: str) -> Any:
    """The target of a local $ref ('#', '#/$defs/X', any '#/...' pointer) inside `root`."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise SchemaError("$ref", path, "only local references ('#/...') are supported")
    node = root
    pointer = ref[1:]
    if pointer:
        if not pointer.startswith("/"):
            raise SchemaError("$ref", path, "anchors ('#name') are not supported; use a '#/...' pointer")
        from urllib.parse import unquote

        for part in pointer[1:].split("/"):
            part = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise _bad("$ref", path, f"reference '{clip(ref, 60)}' points at nothing")
    return node


def _merge(a: dict[str, Any], b: dict[str, Any], path: str, keyword: str) -> dict[str, Any]:
    """Both schemas at once, where they do not set one keyword two ways."""
    out = dict(a)
    for k, v in b.items():
        if k not in out or out[k] == v or k in _ANNOTATIONS:
            out.setdefault(k, v)
        elif k == "required":
            out[k] = list(dict.fromkeys(out[k] + v))
        elif k == "properties" and isinstance(v, dict) and isinstance(out[k], dict):
            props = dict(out[k])
            for name, sub in v.items():
                props[name] = {"allOf": [props[name], sub]} if name in props and props[name] != sub else sub
            out[k] = props
        else:
            raise SchemaError(keyword, path, f"the parts of '{keyword}' set '{clip(k, 30)}' differently "
                                             "and are not merged")
    return out


_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "$schema", "$id",
                          "deprecated", "readOnly", "writeOnly", "nullable", "$defs", "definitions"})


def _count(s: dict[str, Any], key: str, path: str, default: int | None) -> Any:
    v = s.get(key, default)
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise _bad(key, path, f"'{key}' must be a non-negative integer")
    return v


def _num(s: dict[str, Any], key: str, path: str) -> float | int | None:
    v = s.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise _bad(key, path, f"'{key}' must be a number")
    return v


def _bounds(s: dict[str, Any], path: str) -> tuple[Any, Any, bool, bool]:
    """(low, high, low exclusive, high exclusive), from draft-6+ numbers or draft-4 booleans."""
    lo, hi = _num(s, "minimum", path), _num(s, "maximum", path)
    lo_x = hi_x = False
    xlo, xhi = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
    if isinstance(xlo, bool):
        lo_x = xlo and lo is not None
    elif xlo is not None:
        v = _num(s, "exclusiveMinimum", path)
        if lo is None or v >= lo:  # type: ignore[operator]
            lo, lo_x = v, True
    if isinstance(xhi, bool):
        hi_x = xhi and hi is not None
    elif xhi is not None:
        v = _num(s, "exclusiveMaximum", path)
        if hi is None or v <= hi:  # type: ignore[operator]
            hi, hi_x = v, True
    if lo is not None and hi is not None and (lo > hi or (lo == hi and (lo_x or hi_x))):
        raise _bad("maximum", path, "the bounds leave no number (maximum below minimum)")
    return lo, hi, lo_x, hi_x


def _multiple(s: dict[str, Any], path: str) -> float | int | None:
    m = _num(s, "multipleOf", path)
    if m is not None and m <= 0:
        raise _bad("multipleOf", path, "'multipleOf' must be greater than 0")
    return m


def _is_multiple(v: float, m: float) -> bool:
    q = v / m
    return math.isfinite(q) and float(q).is_integer()


def _in_bounds(v: float, lo: Any, hi: Any, lo_x: bool, hi_x: bool) -> bool:
    return ((lo is None or (v > lo if lo_x else v >= lo))
            and (hi is None or (v < hi if hi_x else v <= hi)))


def _ceil_int(x: float, exclusive: bool) -> int:
    c = math.ceil(x)
    return c + 1 if exclusive and c == x else c


def _floor_int(x: float, exclusive: bool) -> int:
    f = math.floor(x)
    return f - 1 if exclusive and f == x else f


def _choose(rng: random.Random, lo: int | None, hi: int | None) -> int:
    if lo is not None and hi is not None:
        return lo + rng.randrange(min(hi - lo, 1000) + 1)
    if lo is not None:
        return lo + rng.randrange(100)
    if hi is not None:
        return hi - rng.randrange(100)
    return rng.randrange(100)


def _canon(v: Any) -> bytes:
    """A key equal for JSON-equal values (1 and 1.0 alike, true and 1 not)."""
    return orjson.dumps(_norm(v), option=orjson.OPT_SORT_KEYS)


def _norm(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, list):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v


# -- checking ----------------------------------------------------------------------------------------


def _type_ok(t: str, v: Any) -> bool:
    if t == "null":
        return v is None
    if t == "boolean":
        return isinstance(v, bool)
    if t == "string":
        return isinstance(v, str)
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return t == "number" or isinstance(v, int) or float(v).is_integer()


def conforms(schema: Any, v: Any, root: Any, depth: int = 0) -> bool:
    """Whether `v` is valid against `schema`, for the keywords this module honours (a refused keyword
    raises SchemaError: the caller cannot tell)."""
    if schema is True or schema == {}:
        return True
    if schema is False:
        return False
    if depth > MAX_DEPTH:
        raise SchemaError("$ref", "", f"the schema nests deeper than {MAX_DEPTH} levels")
    s = schema
    for key in s:
        if key in REFUSED:
            raise SchemaError(key, "", f"the simulated backend cannot check JSON Schema keyword '{key}'")
    if "$ref" in s and not conforms(resolve(root, s["$ref"], ""), v, root, depth + 1):
        return False
    t = s.get("type")
    if t is not None and not any(_type_ok(x, v) for x in ([t] if isinstance(t, str) else t)):
        return False
    if "const" in s and _canon(s["const"]) != _canon(v):
        return False
    if "enum" in s and _canon(v) not in {_canon(x) for x in s["enum"]}:
        return False
    for sub in s.get("allOf") or ():
        if not conforms(sub, v, root, depth + 1):
            return False
    if s.get("anyOf") and not any(conforms(o, v, root, depth + 1) for o in s["anyOf"]):
        return False
    if s.get("oneOf") and sum(conforms(o, v, root, depth + 1) for o in s["oneOf"]) != 1:
        return False
    if isinstance(v, dict):
        props = s.get("properties") or {}
        if any(r not in v for r in s.get("required") or ()):
            return False
        extra = s.get("additionalProperties", True)
        for k, x in v.items():
            if not conforms(props[k] if k in props else extra, x, root, depth + 1):
                return False
        if len(v) < s.get("minProperties", 0) or len(v) > s.get("maxProperties", math.inf):
            return False
    elif isinstance(v, list):
        prefix = s.get("prefixItems") or []
        items = s.get("items", True)
        for i, x in enumerate(v):
            if not conforms(prefix[i] if i < len(prefix) else items, x, root, depth + 1):
                return False
        if len(v) < s.get("minItems", 0) or len(v) > s.get("maxItems", math.inf):
            return False
        if s.get("uniqueItems") is True and len({_canon(x) for x in v}) != len(v):
            return False
    elif isinstance(v, str):
        if len(v) < s.get("minLength", 0) or len(v) > s.get("maxLength", math.inf):
            return False
        fmt = s.get("format")
        if fmt in FORMATS and not _format_ok(fmt, v):
            return False
    elif isinstance(v, int | float) and not isinstance(v, bool):
        try:
            lo, hi, lo_x, hi_x = _bounds(s, "")
        except SchemaError:
            return False
        if not _in_bounds(v, lo, hi, lo_x, hi_x):
            return False
        m = s.get("multipleOf")
        if m and not _is_multiple(v, m):
            return False
    return True


def _format_ok(fmt: str, v: str) -> bool:
    """A value of one of FORMATS (strictly enough for enum/const values against it)."""
    import ipaddress
    import re
    from datetime import date

    try:
        if fmt == "date-time":
            return re.fullmatch(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)", v) is not None \
                and _format_ok("date", v[:10])
        if fmt == "date":
            return re.fullmatch(r"\d{4}-\d\d-\d\d", v) is not None and bool(date.fromisoformat(v))
        if fmt == "time":
            return re.fullmatch(r"\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)", v) is not None
        if fmt == "email":
            return re.fullmatch(r"[^@\s]+@[^@\s]+", v) is not None
        if fmt == "hostname":
            return re.fullmatch(r"(?!-)[A-Za-z0-9-]{1,63}(\.(?!-)[A-Za-z0-9-]{1,63})*", v) is not None
        if fmt == "ipv4":
            ipaddress.IPv4Address(v)
            return True
        if fmt == "ipv6":
            ipaddress.IPv6Address(v)
            return True
        if fmt == "uri":
            return re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S*", v) is not None
        if fmt == "uuid":
            return len(v) == 36 and bool(uuid.UUID(v))
        return re.fullmatch(r"P(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?", v) is not None and v != "P"
    except ValueError:
        return False
