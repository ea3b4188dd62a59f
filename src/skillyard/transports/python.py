"""In-process Python skills: registered functions and ``module.py:function`` entries.

A skill function takes ``(args)`` or ``(args, ctx)``, may be sync or async, and
returns a JSON value (the output), a string (output and text content) or a
:class:`~skillyard.transports.base.RawResult`. Python skills run inside the
runtime's process: their permissions bind what they do through ``ctx.host``,
but nothing stops Python code from importing ``os`` (see docs/security.md).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from skillyard.errors import (
    InvalidOutput,
    OutputTooLarge,
    SkillError,
    SkillTimeout,
    SkillyardError,
    TransportError,
)
from skillyard.transports.base import CallContext, DirectRun, RawResult

if TYPE_CHECKING:
    from skillyard.card import Card
    from skillyard.runtime import Runtime

_Fn = tuple[Callable[..., Any], int, bool]  # function, arity (1 or 2), is async


def _describe(fn: Callable[..., Any], where: str) -> _Fn:
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError) as exc:
        raise TransportError(f"{where}: cannot inspect the skill function: {exc}") from exc
    if len(params) not in (1, 2):
        raise TransportError(
            f"{where}: a skill function takes (args) or (args, ctx); this one takes {len(params)} parameters"
        )
    return fn, len(params), inspect.iscoroutinefunction(fn)


def _failure(card: Card, exc: Exception) -> Exception:
    """The error a skill function's exception becomes (skillyard errors pass unchanged)."""
    if isinstance(exc, SkillyardError):
        return exc
    if isinstance(exc, TimeoutError):
        return SkillTimeout(f"{card.name}: timed out after {card.limits.timeout_sec:g}s")
    return SkillError(f"{card.name} raised {type(exc).__name__}: {exc}")


def _checked(card: Card, value: Any) -> Any:
    """A skill function's return value, checked for JSON and size.

    Returns the output itself, or a RawResult when there is more than an output (the
    function returned one, or a string, which is both the output and the text content).
    """
    if isinstance(value, RawResult):
        output = value.output
    elif isinstance(value, str):
        output, value = value, RawResult(output=value, content=value)
    else:
        output = value
    try:
        size = len(orjson.dumps(output))
    except TypeError as exc:
        raise InvalidOutput(f"{card.name}: output is not JSON-serialisable: {exc}") from exc
    if size > card.limits.max_output_bytes:
        raise OutputTooLarge(
            f"{card.name}: output is {size} bytes; the limit is {card.limits.max_output_bytes}"
        )
    return value


class PythonTransport:
    """Runs Python functions in the runtime's own process."""

    kind = "python"

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.runtime = runtime
        self._registered: dict[str, _Fn] = {}
        self._resolved: dict[Card, _Fn] = {}

    def register_function(self, name: str, fn: Callable[..., Any]) -> str:
        """Register ``fn`` for tool ``name``; returns the card operation naming it."""
        op = f"memory:{name}"
        self._registered[op] = _describe(fn, name)
        return op

    def _load(self, card: Card) -> _Fn:
        op = card.operation
        if op.startswith("memory:"):
            fn = self._registered.get(op)
            if fn is None:
                raise TransportError(
                    f"{card.name}: no function is registered for it in this runtime"
                )
            self._resolved[card] = fn
            return fn
        if not card.source:
            raise TransportError(f"{card.name}: operation {op!r} has no package directory")
        file_rel, _, func = op.rpartition(":")
        path = Path(card.source) / file_rel
        mod_name = f"_skillyard_pkg_{card.id.replace('-', '_')}_{card.digest[-12:]}_{path.stem}"
        module = sys.modules.get(mod_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise TransportError(f"{card.name}: cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(mod_name, None)
                raise TransportError(
                    f"{card.name}: importing {file_rel} failed: {type(exc).__name__}: {exc}"
                ) from exc
        target = getattr(module, func, None)
        if not callable(target):
            raise TransportError(f"{card.name}: {file_rel} has no function {func!r}")
        described = _describe(target, card.name)
        self._resolved[card] = described
        return described

    async def call(self, card: Card, args: dict[str, Any], ctx: CallContext) -> RawResult:
        loaded = self._resolved.get(card)
        fn, arity, is_async = loaded if loaded is not None else self._load(card)
        try:
            if is_async:
                async with asyncio.timeout(ctx.remaining):
                    value = await (fn(args) if arity == 1 else fn(args, ctx))
            elif card.options.get("thread"):
                value = await asyncio.wait_for(
                    asyncio.to_thread(fn, *((args,) if arity == 1 else (args, ctx))), ctx.remaining
                )
            else:
                value = fn(args) if arity == 1 else fn(args, ctx)
        except Exception as exc:
            raise _failure(card, exc) from exc
        value = _checked(card, value)
        return value if isinstance(value, RawResult) else RawResult(output=value)

    def direct(self, card: Card) -> DirectRun | None:
        """Sync ``fn(args)`` functions run inline need no coroutine: offer the flattened path."""
        loaded = self._resolved.get(card)
        fn, arity, is_async = loaded if loaded is not None else self._load(card)
        if is_async or arity != 1 or card.options.get("thread"):
            return None

        limit = card.limits.max_output_bytes
        dumps = orjson.dumps

        def run(args: dict[str, Any]) -> Any:
            try:
                value = fn(args)
            except Exception as exc:
                raise _failure(card, exc) from exc
            if type(value) is dict:  # the common case, _checked inlined
                try:
                    size = len(dumps(value))
                except TypeError:
                    return _checked(card, value)  # raises the InvalidOutput
                if size <= limit:
                    return value
            return _checked(card, value)

        return run

    async def health(self) -> dict[str, Any]:
        return {"ok": True, "functions": len(self._registered), "modules": len(self._resolved)}

    async def aclose(self) -> None:
        self._resolved.clear()
