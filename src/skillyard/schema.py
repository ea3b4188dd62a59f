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


def _uses_2020(schema: Any) -> bool:
    if isinstance(schema, Mapping):
        if _DRAFT_2020_ONLY.intersection(schema):
            return True
        return any(_uses_2020(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_uses_2020(v) for v in schema)
    return False


def pointer(path: Any) -> str:
    """RFC 6901 JSON pointer for a jsonschema error path."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "/" + "/".join(parts) if parts else ""


# Keywords whose meaning differs between Draft-07 and Draft 2020-12: a schema using
# one of them always gets the authoritative 2020-12 meta-schema check.
_DRAFT_SENSITIVE = frozenset({"items", "additionalItems", "dependencies", "$recursiveRef"})
_meta_fast: Callable[[Any], Any] | None = None


def _uses_sensitive(schema: Any) -> bool:
    if isinstance(schema, Mapping):
        if isinstance(schema.get("items"), list) or _DRAFT_SENSITIVE.difference({"items"}) & set(
            schema
        ):
            return True
        return any(_uses_sensitive(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_uses_sensitive(v) for v in schema)
    return False


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` is not a valid Draft 2020-12 schema, or ``None`` if it is.

    The meta-schema check with ``jsonschema`` costs ~5 ms per schema (measured: 26 s to
    load 1,000 packages). Schemas that pass a compiled Draft-07 meta-schema and use no
    keyword whose meaning changed are accepted on that check (~0.1 ms); everything else,
    and every failure, gets the authoritative Draft 2020-12 check and its message.
    """
    global _meta_fast
    if not isinstance(schema, Mapping | bool):
        return f"a schema must be an object or a boolean, not {type(schema).__name__}"
    if not _uses_2020(schema) and not _uses_sensitive(schema):
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

    __slots__ = ("_fast", "_full", "schema")

    def __init__(self, schema: Mapping[str, Any] | bool) -> None:
        self.schema = schema
        self._fast: Callable[[Any], Any] | None = None
        self._full: Any = None
        trivial = _TRIVIAL.get(_trivial_key(schema))
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
