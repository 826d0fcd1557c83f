"""The accept-only check of a call's params against the common flat schema, ahead of jsonschema.

jsonschema costs about 100 µs a call; most capabilities take a flat object of typed properties, which one
predicate built here checks in a few. It accepts only what jsonschema would accept: anything else, including
every invalid value, goes through the full validator, which also writes the error message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["fast_params_check"]


# Keywords the fast params check understands. Annotations (title, description, default, examples, format:
# jsonschema does not assert formats without a format checker) never reject a value.
_FAST_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "format", "$comment", "deprecated",
                               "readOnly", "writeOnly"})
_FAST_PROP_KEYS = _FAST_ANNOTATIONS | {"type", "enum", "const", "minimum", "maximum", "minLength", "maxLength"}
_FAST_OBJ_KEYS = _FAST_ANNOTATIONS | {"type", "properties", "required", "additionalProperties", "$schema"}
# JSON type name -> the Python types (compared with `type(v) in`, so bool is never an integer) it accepts.
_FAST_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
}


def _fast_prop_check(schema: Any) -> Callable[[Any], bool] | None:
    """One predicate for a property schema, or None when it needs jsonschema.

    Built as a single function without generators: it runs for every param of every call.
    """
    if schema is True or schema == {}:
        return lambda v: True
    if not isinstance(schema, dict) or not set(schema) <= _FAST_PROP_KEYS:
        return None
    types: frozenset[type] | None = None
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not all(isinstance(n, str) and n in _FAST_TYPES for n in names):
            return None
        types = frozenset(t for n in names for t in _FAST_TYPES[n])
    members: frozenset[str] | None = None
    for key in ("enum", "const"):
        if key in schema:
            allowed = schema[key] if key == "enum" else [schema[key]]
            if not isinstance(allowed, list) or not all(type(a) is str for a in allowed):
                return None  # bool/number equality has JSON Schema subtleties: leave those to jsonschema
            members = frozenset(allowed) if members is None else members & frozenset(allowed)
    bounds = {k: schema[k] for k in ("minimum", "maximum", "minLength", "maxLength") if k in schema}
    if not all(type(b) in (int, float) for b in bounds.values()):
        return None
    lo = bounds.get("minimum")
    hi = bounds.get("maximum")
    lo_len = bounds.get("minLength")
    hi_len = bounds.get("maxLength")
    if members is None and lo is None and hi is None and lo_len is None and hi_len is None:
        if types is None:
            return lambda v: True
        return lambda v: type(v) in types  # the common case: a plain type

    def check(v: Any) -> bool:
        t = type(v)
        if types is not None and t not in types:
            return False
        if members is not None and (t is not str or v not in members):
            return False
        if t is int or t is float:
            if lo is not None and v < lo:
                return False
            if hi is not None and v > hi:
                return False
        elif t is str:
            if lo_len is not None and len(v) < lo_len:
                return False
            if hi_len is not None and len(v) > hi_len:
                return False
        return True

    return check


def fast_params_check(schema: dict[str, Any]) -> Callable[[Any], bool] | None:
    """A quick accept-only check for the common flat params schema, or None when the schema is not that.

    It returns True only for values jsonschema would accept too; anything else (including every invalid
    value) goes through the full validator, which also writes the error message. This keeps the ~100 µs
    of jsonschema off the hot path of ordinary calls.
    """
    if not set(schema) <= _FAST_OBJ_KEYS or schema.get("type") != "object":
        return None
    props = schema.get("properties", {})
    required = schema.get("required", [])
    extra = schema.get("additionalProperties", True)
    if not isinstance(props, dict) or not isinstance(required, list) or extra not in (True, False):
        return None
    prop_checks: dict[str, Callable[[Any], bool]] = {}
    for name, sub in props.items():
        check = _fast_prop_check(sub)
        if check is None:
            return None
        prop_checks[name] = check
    req = tuple(required)
    closed = extra is False

    def fast(params: Any) -> bool:
        if type(params) is not dict:
            return False
        for name in req:
            if name not in params:
                return False
        for key, value in params.items():
            check = prop_checks.get(key)
            if check is None:
                if closed:
                    return False
            elif not check(value):
                return False
        return True

    return fast
