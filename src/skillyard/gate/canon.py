"""Canonical JSON and hashes: the bytes that signatures and the ledger chain commit to.

Canonical JSON here is UTF-8, object keys sorted, no insignificant whitespace,
NaN and Infinity refused. Signers in other languages produce the same bytes for
the payloads skillyard signs (strings, integers, booleans, null, nested objects).
"""

from __future__ import annotations

import hashlib
import math
import time
from datetime import datetime
from typing import Any

import orjson

from skillyard.errors import GateError

_OPTS = orjson.OPT_SORT_KEYS


def _finite(value: Any) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GateError("NaN and Infinity are not JSON; refused")
    elif isinstance(value, dict):
        for v in value.values():
            _finite(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _finite(v)


def canonical(value: Any, *, lenient: bool = False) -> bytes:
    """The canonical JSON bytes of ``value`` (raises GateError for NaN/Infinity or non-JSON).

    ``lenient`` (ledger payloads) writes non-JSON values as their ``repr`` instead of failing,
    so a result that already happened is always recorded.
    """
    try:
        out = orjson.dumps(value, option=_OPTS, default=repr if lenient else None)
    except TypeError as exc:
        raise GateError(f"value is not JSON-serialisable: {exc}") from exc
    if not lenient and b"null" in out:  # orjson writes NaN/Infinity as null: look closer
        _finite(value)
    return out


def digest(value: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``value``."""
    return "sha256:" + hashlib.sha256(canonical(value)).hexdigest()


def digest_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of raw bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def iso(ts: float | None = None) -> str:
    """A UTC ISO-8601 timestamp with milliseconds (``2026-01-02T03:04:05.678Z``)."""
    t = time.time() if ts is None else ts
    whole = int(t)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((t - whole) * 1000):03d}Z"
    )


def parse_iso(text: Any) -> float:
    """Unix seconds from an ISO-8601 timestamp (raises ValueError when it is not one)."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"not a timestamp: {text!r}")
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone; use UTC ('...Z')")
    return dt.timestamp()
