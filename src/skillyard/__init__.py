"""skillyard: a runtime for AI-agent skills.

The public API is what this module exports; everything else is imported from
its own module. Importing skillyard stays light: engines (lupa, wasmtime, mcp,
httpx, cryptography) load when a feature needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skillyard.card import Card, Limits, Policy
    from skillyard.errors import (
        CallFailed,
        InvalidArguments,
        InvalidOutput,
        PermissionDenied,
        SkillNotFound,
        SkillyardError,
        TransportError,
    )
    from skillyard.runtime import Middleware, Runtime, SyncRuntime
    from skillyard.transports.base import (
        SYSTEM,
        CallContext,
        Caller,
        CallResult,
        Decision,
        MockTransport,
        RawResult,
        Transport,
    )

# Public names resolve on first use (PEP 562), so `import skillyard` and
# `skillyard --help` do not pay for asyncio and the runtime until they are needed.
_HOME = {
    "skillyard.card": ("Card", "Limits", "Policy"),
    "skillyard.errors": (
        "CallFailed",
        "InvalidArguments",
        "InvalidOutput",
        "PermissionDenied",
        "SkillNotFound",
        "SkillyardError",
        "TransportError",
    ),
    "skillyard.runtime": ("Middleware", "Runtime", "SyncRuntime"),
    "skillyard.transports.base": (
        "SYSTEM",
        "CallContext",
        "Caller",
        "CallResult",
        "Decision",
        "MockTransport",
        "RawResult",
        "Transport",
    ),
}
_WHERE = {name: module for module, names in _HOME.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'skillyard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "SYSTEM",
    "CallContext",
    "CallFailed",
    "CallResult",
    "Caller",
    "Card",
    "Decision",
    "InvalidArguments",
    "InvalidOutput",
    "Limits",
    "Middleware",
    "MockTransport",
    "PermissionDenied",
    "Policy",
    "RawResult",
    "Runtime",
    "SkillNotFound",
    "SkillyardError",
    "SyncRuntime",
    "Transport",
    "TransportError",
    "__version__",
]
