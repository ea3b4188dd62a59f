"""The local half of the ``vulcan`` table: json, path, log, context, require.

Everything that touches the world (fs, config, cache, models, host tools,
``vulcan.call``) goes through ``ctx.host.dispatch`` as a host request from the
Lua coroutine; these helpers need no permission and run synchronously. Each
returns ``(True, value)`` or ``(False, code, message)`` so no Python exception
ever crosses into Lua.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from skillyard.transports.lua.isolate import ConversionError

if TYPE_CHECKING:
    from skillyard.card import Card
    from skillyard.transports.base import CallContext
    from skillyard.transports.lua.isolate import Isolate

MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
MAX_LOG_CHARS = 8192


class CallState:
    """What the local helpers of one isolate need to know about the call in flight."""

    __slots__ = ("card", "ctx", "errors", "logs", "modules")

    def __init__(
        self,
        card: Card | None = None,
        ctx: CallContext | None = None,
        modules: Callable[[str], tuple[bytes, str]] | None = None,
        logs: list[dict[str, Any]] | None = None,
    ) -> None:
        self.card = card
        self.ctx = ctx
        self.modules = modules
        self.logs = logs
        self.errors: list[BaseException] = []


IDLE = CallState()


def _ok(value: Any) -> tuple[bool, Any]:
    return True, value


def _fail(code: str, message: str) -> tuple[bool, str, str]:
    return False, code, message


class LocalApi:
    """The Python callables the harness binds into ``vulcan`` (one instance per isolate)."""

    def __init__(self) -> None:
        self.iso: Isolate | None = None
        self.state = IDLE

    def functions(self) -> dict[str, Callable[..., Any]]:
        return {
            "json_encode": self.json_encode,
            "json_decode": self.json_decode,
            "path": self.path,
            "log": self.log,
            "context": self.context,
            "module": self.module,
        }

    # -- json ------------------------------------------------------------------------------

    def json_encode(self, value: Any = None) -> tuple[Any, ...]:
        assert self.iso is not None
        try:
            return _ok(orjson.dumps(self.iso.to_py(value)).decode())
        except (ConversionError, TypeError, UnicodeDecodeError) as exc:
            return _fail("invalid_argument", f"vulcan.json.encode: {exc}")

    def json_decode(self, text: Any = None) -> tuple[Any, ...]:
        assert self.iso is not None
        if not isinstance(text, str | bytes):
            return _fail("invalid_argument", "vulcan.json.decode expects a string")
        try:
            return _ok(self.iso.to_lua(orjson.loads(text)))
        except orjson.JSONDecodeError as exc:
            return _fail("invalid_argument", f"vulcan.json.decode: not valid JSON: {exc}")

    # -- path ------------------------------------------------------------------------------

    def path(self, name: str, *args: Any) -> tuple[Any, ...]:
        if not all(isinstance(a, str) for a in args):
            return _fail("invalid_argument", f"vulcan.path.{name} expects strings")
        try:
            if name == "join":
                return _ok(posixpath.join(*args) if args else "")
            (p,) = args
            if name == "basename":
                return _ok(posixpath.basename(p))
            if name == "dirname":
                return _ok(posixpath.dirname(p))
            if name == "extname":
                return _ok(posixpath.splitext(p)[1])
            if name == "stem":
                return _ok(posixpath.splitext(posixpath.basename(p))[0])
            if name == "normalize":
                return _ok(posixpath.normpath(p))
            if name == "is_absolute":
                return _ok(posixpath.isabs(p))
            if name == "split":
                assert self.iso is not None
                return _ok(self.iso.to_lua([part for part in p.split("/") if part]))
        except ValueError:
            return _fail("invalid_argument", f"vulcan.path.{name}: wrong number of arguments")
        return _fail("not_supported", f"vulcan.path.{name} is not supported by skillyard")

    # -- log, context, require ---------------------------------------------------------

    def log(self, level: Any, message: Any) -> tuple[Any, ...]:
        event = {"level": str(level)[:16], "message": str(message)[:MAX_LOG_CHARS]}
        state = self.state
        if state.ctx is not None:
            state.ctx.emit("log", **event)
        elif state.logs is not None:
            state.logs.append(event)
        return _ok(None)

    def context(self) -> Any:
        assert self.iso is not None
        state = self.state
        ctx, card = state.ctx, state.card
        info: dict[str, Any] = {}
        if card is not None:
            info.update(skill_id=card.id, tool=card.name, entry=card.method, version=card.version)
        if ctx is not None:
            info.update(
                call_id=ctx.call_id,
                request_id=ctx.call_id,
                principal=ctx.caller.principal,
                authority=ctx.caller.authority,
                session_id=ctx.caller.session_id,
                depth=ctx.depth,
            )
        return self.iso.to_lua(info)

    def module(self, name: Any) -> tuple[Any, ...]:
        if not isinstance(name, str) or not MODULE_RE.match(name):
            return False, f"require: {name!r} is not a module name", ""
        loader = self.state.modules
        if loader is None:
            return False, f"module {name!r} not found: this code has no skill package", ""
        try:
            code, chunkname = loader(name)
        except LookupError as exc:
            return False, str(exc), ""
        return True, code, "@" + chunkname


__all__ = ["CallState", "LocalApi"]
