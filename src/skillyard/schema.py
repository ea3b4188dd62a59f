"""JSON Schema checks, compiled once per schema.

The hot path uses ``fastjsonschema`` (generated Python code, about a microsecond
for a small object); when a value fails, or a schema uses keywords only Draft
2020-12 knows, ``jsonschema`` gives the authoritative answer and the error with
a JSON pointer. Measured need: ``jsonschema``'s ``is_valid`` alone costs more
than the whole in-process call budget (see bench/).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

_DRAFT_2020_ONLY = frozenset(
    {
        "prefixItems",
        "unevaluatedProperties",
        "unevaluatedItems",
        "$dynamicRef",
        "$dynamicAnchor",
        "dependentRequired",
        "dependentSchemas",
        "minContains",
        "maxContains",
        "$vocabulary",
    }
)


def _any_node(schema: Any, test: Callable[[Mapping[str, Any]], bool]) -> bool:
    """True when ``test`` holds for any object nested anywhere in ``schema``."""
    if isinstance(schema, Mapping):
        return test(schema) or any(_any_node(v, test) for v in schema.values())
    if isinstance(schema, list):
        return any(_any_node(v, test) for v in schema)
    return False


def _uses_2020(schema: Any) -> bool:
    return _any_node(schema, lambda node: bool(_DRAFT_2020_ONLY.intersection(node)))


def pointer(path: Any) -> str:
    """RFC 6901 JSON pointer for a jsonschema error path."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "/" + "/".join(parts) if parts else ""


_TYPES = frozenset({"array", "boolean", "integer", "null", "number", "object", "string"})
_TEXT = frozenset({"title", "description", "$comment", "format"})
_SUB = frozenset({"items", "additionalProperties", "not", "contains", "propertyNames"})
_SUB_MAPS = frozenset({"properties", "$defs"})
_SUB_LISTS = frozenset({"anyOf", "oneOf", "allOf"})
_NUMBERS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_COUNTS = frozenset(
    {"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"}
)
_FLAGS = frozenset({"uniqueItems", "readOnly", "writeOnly", "deprecated"})
_ANY = frozenset({"default", "const", "enum", "examples"})


def _plainly_valid(schema: Any) -> bool:
    """True when ``schema`` uses only common keywords, each with a value the metaschema allows.

    A conservative fast path for manifest loading: importing ``jsonschema`` costs more
    than the whole cold start of ``skillyard serve mcp``. Anything unusual returns
    False and gets the full metaschema check.
    """
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, Mapping):
        return False
    for key, value in schema.items():
        if key == "type":
            kinds = value if isinstance(value, list) else [value]
            if not kinds or len(set(map(str, kinds))) != len(kinds):
                return False
            if not all(isinstance(k, str) and k in _TYPES for k in kinds):
                return False
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return False
            if len(set(value)) != len(value):
                return False
        elif key in _TEXT:
            if not isinstance(value, str):
                return False
        elif key in _SUB:
            if not _plainly_valid(value):
                return False
        elif key in _SUB_MAPS:
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and _plainly_valid(v) for k, v in value.items()
            ):
                return False
        elif key in _SUB_LISTS:
            if not isinstance(value, list) or not value:
                return False
            if not all(_plainly_valid(v) for v in value):
                return False
        elif key in _NUMBERS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
        elif key in _COUNTS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return False
        elif key in _FLAGS:
            if not isinstance(value, bool):
                return False
        elif key in _ANY:
            if key in ("enum", "examples") and not isinstance(value, list):
                return False
        else:
            return False
    return True


# Keywords whose meaning differs between Draft-07 and Draft 2020-12: a schema using
# one of them always gets the authoritative 2020-12 meta-schema check.
_DRAFT_SENSITIVE = frozenset({"items", "additionalItems", "dependencies", "$recursiveRef"})
_meta_fast: Callable[[Any], Any] | None = None


def _sensitive_node(node: Mapping[str, Any]) -> bool:
    return isinstance(node.get("items"), list) or bool(
        (_DRAFT_SENSITIVE - {"items"}).intersection(node)
    )


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` is not a valid Draft 2020-12 schema, or ``None`` if it is.

    The meta-schema check with ``jsonschema`` costs ~5 ms per schema (measured: 26 s to
    load 1,000 packages). Three steps, cheapest first: schemas made only of common
    keywords with allowed values are accepted without importing jsonschema
    (``_plainly_valid``); schemas that pass a compiled Draft-07 meta-schema and use no
    keyword whose meaning changed are accepted on that check (~0.1 ms); everything else,
    and every failure, gets the authoritative Draft 2020-12 check and its message.
    """
    global _meta_fast
    if not isinstance(schema, Mapping | bool):
        return f"a schema must be an object or a boolean, not {type(schema).__name__}"
    if _plainly_valid(schema):
        return None
    if not _uses_2020(schema) and not _any_node(schema, _sensitive_node):
        import fastjsonschema

        if _meta_fast is None:
            import jsonschema

            _meta_fast = fastjsonschema.compile(
                jsonschema.Draft7Validator.META_SCHEMA, use_default=False
            )
        try:
            _meta_fast(schema)
            return None
        except fastjsonschema.JsonSchemaException:
            pass
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"{exc.message} (at {pointer(exc.path) or '/'})"
    return None


def _require_object(value: Any) -> None:
    if type(value) is not dict:
        raise ValueError("not an object")


def _accept(value: Any) -> None:
    return None


# The commonest schemas need no compiled code: "anything" and "some object".
_TRIVIAL: dict[Any, Callable[[Any], None]] = {
    True: _accept,
    (): _accept,
    (("type", "object"),): _require_object,
}


def _trivial_key(schema: Any) -> Any:
    if schema is True:
        return True
    if isinstance(schema, Mapping) and len(schema) <= 1:
        key = tuple(schema.items())
        try:
            hash(key)
        except TypeError:
            return None
        return key
    return None


class Validator:
    """A compiled schema: ``problem(value)`` returns ``None`` or ``(pointer, message)``."""

    __slots__ = ("_fast", "_full", "any_dict", "schema")

    def __init__(self, schema: Mapping[str, Any] | bool) -> None:
        self.schema = schema
        self._fast: Callable[[Any], Any] | None = None
        self._full: Any = None
        trivial = _TRIVIAL.get(_trivial_key(schema))
        # True when every dict conforms, so a caller that already knows it holds a dict
        # can skip the check.
        self.any_dict = trivial is not None
        if trivial is not None:
            self._fast = trivial
        elif not _uses_2020(schema):
            import fastjsonschema

            try:
                self._fast = fastjsonschema.compile(
                    dict(schema) if isinstance(schema, Mapping) else schema, use_default=False
                )
            except Exception:  # fastjsonschema cannot handle it: use the full validator
                self._fast = None

    def _full_validator(self) -> Any:
        if self._full is None:
            import jsonschema

            self._full = jsonschema.Draft202012Validator(self.schema)
        return self._full

    def problem(self, value: Any) -> tuple[str, str] | None:
        """``None`` when ``value`` conforms, else ``(json_pointer, message)``."""
        fast = self._fast
        if fast is not None:
            try:
                fast(value)
                return None
            except Exception:
                pass
        import jsonschema

        error = jsonschema.exceptions.best_match(self._full_validator().iter_errors(value))
        if error is None:
            return None
        return pointer(error.absolute_path), error.message


_cache: dict[int, tuple[Any, Validator]] = {}


def validator_for(schema: Mapping[str, Any]) -> Validator:
    """The compiled validator for a schema object (cached by identity)."""
    hit = _cache.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    v = Validator(schema)
    _cache[id(schema)] = (schema, v)
    return v
