"""Parameter checks and error helpers shared by the host API modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skillyard.errors import HostError

_MISSING: Any = object()


def invalid(method: str, message: str) -> HostError:
    """A ``HostError`` with code ``invalid_argument``."""
    return HostError(f"{method}: {message}", code="invalid_argument")


def fail(method: str, code: str, message: str) -> HostError:
    """A ``HostError`` with a stable ``code``."""
    return HostError(f"{method}: {message}", code=code)


def arg(
    params: Mapping[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    method: str,
    *,
    default: Any = _MISSING,
) -> Any:
    """``params[name]`` checked against ``kind`` (booleans are never numbers)."""
    if name not in params or params[name] is None:
        if default is _MISSING:
            raise invalid(method, f"params.{name} is required")
        return default
    value = params[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise invalid(method, f"params.{name} must be {_names(kinds)}, got a boolean")
    if not isinstance(value, kinds):
        raise invalid(method, f"params.{name} must be {_names(kinds)}, got {type(value).__name__}")
    return value


def arg_int(
    params: Mapping[str, Any],
    name: str,
    method: str,
    *,
    default: int,
    lo: int = 0,
    hi: int = 1 << 40,
) -> int:
    """An integer parameter within ``[lo, hi]``."""
    value: int = arg(params, name, int, method, default=default)
    if not lo <= value <= hi:
        raise invalid(method, f"params.{name} must be between {lo} and {hi}, got {value}")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        dict: "an object",
        list: "an array",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def check_keys(params: Mapping[str, Any], allowed: tuple[str, ...], method: str) -> None:
    """Refuse unknown parameters (a typo should fail, not be ignored)."""
    for key in params:
        if key not in allowed:
            raise invalid(
                method, f"unknown parameter {key!r}; expected {', '.join(allowed) or 'none'}"
            )


__all__ = ["arg", "arg_int", "check_keys", "fail", "invalid"]
