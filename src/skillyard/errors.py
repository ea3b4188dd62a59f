"""The whole error tree of skillyard.

Every error skillyard raises derives from :class:`SkillyardError`; engine
exceptions (subprocess, lupa, wasmtime, mcp, httpx) are translated at the
boundary that meets them, with ``raise X(...) from exc``.

::

    SkillyardError
    ├── ManifestError            a package on disk is malformed (file, field, what is allowed)
    ├── ConfigError              runtime configuration or a config value is wrong
    ├── SkillNotFound            no card with that tool name is visible to the caller
    ├── PermissionDenied         the caller or the skill may not do this
    ├── InvalidArguments         arguments fail the card's input schema (JSON pointer)
    ├── InvalidOutput            a result fails the card's output schema (JSON pointer)
    ├── GateError                governance refused or could not decide
    │   ├── PolicyDenied
    │   └── ApprovalError        forged, replayed, expired or mismatched approvals
    ├── CassetteMiss             a replay-only cassette has no recording for a call
    ├── SessionError             persistent runtime sessions (stable ``code``)
    ├── HostError                a host API call failed (stable ``code``)
    └── CallFailed               the skill ran and did not produce a result
        ├── SkillError           the skill itself reported an error
        └── TransportError       the machinery running the skill failed
            ├── SkillTimeout
            ├── OutputTooLarge
            ├── LimitExceeded    memory, instructions, CPU or another hard limit
            ├── SkillCrashed     the process or VM died
            ├── ProtocolError    the skill spoke garbage on its channel
            └── NotSupported     a feature this runtime does not provide

Every error has a stable ``code`` (snake case) used in JSON output, RPC replies
and the ledger, and carries context where it has it (``tool``, ``call_id``).
"""

from __future__ import annotations

from typing import Any


class SkillyardError(Exception):
    """Base class of every error skillyard raises."""

    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        tool: str | None = None,
        call_id: str | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.tool = tool
        self.call_id = call_id
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = dict(details or {})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-shaped description of the error (no traceback, no secrets)."""
        out: dict[str, Any] = {
            "code": self.code,
            "type": type(self).__name__,
            "message": self.message,
        }
        if self.tool is not None:
            out["tool"] = self.tool
        if self.call_id is not None:
            out["call_id"] = self.call_id
        if self.details:
            out["details"] = self.details
        return out


class ManifestError(SkillyardError):
    """A skill package on disk is malformed."""

    code = "manifest_invalid"

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None) -> None:
        where = ""
        if file and field:
            where = f"{file}: {field}: "
        elif file:
            where = f"{file}: "
        elif field:
            where = f"{field}: "
        super().__init__(where + message, details={"file": file, "field": field})
        self.file = file
        self.field = field
        self.reason = message


class ConfigError(SkillyardError):
    """Runtime configuration (or a per-skill config value) is wrong."""

    code = "config_invalid"


class SkillNotFound(SkillyardError):
    """No card with that tool name is visible to the caller."""

    code = "skill_not_found"


class PermissionDenied(SkillyardError):
    """The caller, or the skill on the caller's behalf, may not do this."""

    code = "permission_denied"


class InvalidArguments(SkillyardError):
    """Arguments do not satisfy the card's input schema."""

    code = "invalid_arguments"

    def __init__(self, message: str, *, pointer: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.pointer = pointer
        self.details.setdefault("pointer", pointer)


class InvalidOutput(SkillyardError):
    """A skill's result does not satisfy the card's output schema."""

    code = "invalid_output"

    def __init__(self, message: str, *, pointer: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.pointer = pointer
        self.details.setdefault("pointer", pointer)


class GateError(SkillyardError):
    """Governance refused the call or could not decide."""

    code = "gate_error"


class PolicyDenied(GateError):
    """A policy rule (or the absence of one) denied the call."""

    code = "policy_denied"


class ApprovalError(GateError):
    """An approval decision was forged, replayed, expired or does not match."""

    code = "approval_invalid"


class CassetteMiss(SkillyardError):
    """A replay-only cassette holds no recording for this call."""

    code = "cassette_miss"


class SessionError(SkillyardError):
    """A persistent runtime session operation failed; ``code`` says how."""

    code = "session_error"


class HostError(SkillyardError):
    """A host API call made by a skill failed; ``code`` says how."""

    code = "host_error"


class CallFailed(SkillyardError):
    """The skill ran but did not produce a result."""

    code = "call_failed"


class SkillError(CallFailed):
    """The skill itself reported an error."""

    code = "skill_error"


class TransportError(CallFailed):
    """The machinery running the skill failed."""

    code = "transport_error"


class SkillTimeout(TransportError):
    """The call ran past its wall-clock limit and was stopped."""

    code = "timeout"


class OutputTooLarge(TransportError):
    """The skill produced more output than its limit allows."""

    code = "output_too_large"


class LimitExceeded(TransportError):
    """A hard resource limit (memory, instructions, CPU time) was hit."""

    code = "limit_exceeded"


class SkillCrashed(TransportError):
    """The process or VM running the skill died."""

    code = "crashed"


class ProtocolError(TransportError):
    """The skill wrote something that is not the protocol on its channel."""

    code = "protocol_error"


class NotSupported(TransportError):
    """The skill asked for a feature this runtime does not provide."""

    code = "not_supported"


__all__ = [
    "ApprovalError",
    "CallFailed",
    "CassetteMiss",
    "ConfigError",
    "GateError",
    "HostError",
    "InvalidArguments",
    "InvalidOutput",
    "LimitExceeded",
    "ManifestError",
    "NotSupported",
    "OutputTooLarge",
    "PermissionDenied",
    "PolicyDenied",
    "ProtocolError",
    "SessionError",
    "SkillCrashed",
    "SkillError",
    "SkillNotFound",
    "SkillTimeout",
    "SkillyardError",
    "TransportError",
]
