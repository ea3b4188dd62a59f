"""skillyard: a runtime for AI-agent skills.

The public API is what this module exports; everything else is imported from
its own module. Importing skillyard stays light: engines (lupa, wasmtime, mcp,
httpx, cryptography) load when a feature needs them.
"""

from __future__ import annotations

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
