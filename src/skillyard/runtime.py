"""The runtime: a registry of cards, the middleware chain, and the call pipeline.

The path of one call::

    resolve -> capability -> validate args -> middleware... -> execute -> validate output

Middleware are objects with ``async def on_call(ctx, call_next)``; the gate,
memo and ledger plug in there, so this module knows nothing about them.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from skillyard.card import Card, Limits, Policy
from skillyard.errors import (
    ConfigError,
    GateError,
    InvalidArguments,
    InvalidOutput,
    PermissionDenied,
    SkillNotFound,
    SkillyardError,
    TransportError,
)
from skillyard.manifests import SkillPackage, load_package
from skillyard.roots import LAYERS, Discovery, Home, Problem, RootDirs, discover, visible
from skillyard.schema import Validator, validator_for
from skillyard.store import Store
from skillyard.transports.base import (
    DEFAULT_CALLER,
    DEFER,
    CallContext,
    Caller,
    CallResult,
    DenyAllHost,
    DirectRun,
    EventSink,
    Host,
    RawResult,
    Transport,
    plain_result,
)

if TYPE_CHECKING:
    from skillyard.sessions import SessionManager

_monotonic = time.monotonic
CallNext = Callable[[CallContext], Awaitable[CallResult]]

# Transport kinds and where their implementation lives (imported on first use).
TRANSPORTS: dict[str, str] = {
    "python": "skillyard.transports.python:PythonTransport",
    "process": "skillyard.transports.process:ProcessTransport",
    "lua": "skillyard.transports.lua:LuaTransport",
    "wasm": "skillyard.transports.wasm:WasmTransport",
    "mcp": "skillyard.transports.mcp:McpTransport",
}
MAX_CALL_DEPTH = 16

# Extensions installed into every runtime by open() and memory(), in this order; each is
# "module:function" with ``function(runtime) -> None`` reading its own section of
# ``runtime.config``. The first one installed is the outermost middleware.
EXTENSIONS: list[str] = [
    "skillyard.host:install",
    "skillyard.gate:install",
    "skillyard.transports.mcp_catalog:install",
    "skillyard.memo:install",
]


class Middleware(Protocol):
    """A step around the executor: ``return await call_next(ctx)`` passes the call on.

    ::

        class Timing:
            async def on_call(self, ctx, call_next):
                result = await call_next(ctx)
                print(ctx.tool, result.timing["duration_us"])
                return result
    """

    async def on_call(self, ctx: CallContext, call_next: CallNext) -> CallResult: ...


# A middleware may also define ``applies(card) -> bool``: when it answers False for a card,
# that card's chain skips it (see Runtime._plan_for and refresh_middleware). And it may
# define ``peek(card, args, caller, call_id, sink) -> CallResult | None``: when it is the
# outermost middleware of a card, the runtime asks it first, before any call context
# exists; a result answers the call (nothing else runs), None sends the call down the
# chain as usual, where ``on_call`` must reach the same answer. The memo answers cache
# hits from its in-process copy this way.
Peek = Callable[[Card, dict[str, Any], Caller, str, "EventSink | None"], "CallResult | None"]


def _link(mw: Middleware, call_next: CallNext) -> CallNext:
    on_call = mw.on_call

    async def step(ctx: CallContext) -> CallResult:
        return await on_call(ctx, call_next)

    return step


def _annotate(exc: SkillyardError, tool: str, call_id: str) -> None:
    """Fill in which tool and call an error came from, unless a deeper layer already did."""
    if exc.tool is None:
        exc.tool = tool
    if exc.call_id is None:
        exc.call_id = call_id


def _check_args(tool: str, validator: Validator, args: dict[str, Any]) -> None:
    problem = validator.problem(args)
    if problem is not None:
        ptr, msg = problem
        raise InvalidArguments(f"{tool}: argument {ptr or '(root)'} is invalid: {msg}", pointer=ptr)


def _check_output(card: Card, validator: Validator, output: Any) -> None:
    problem = validator.problem(output)
    if problem is not None:
        ptr, msg = problem
        raise InvalidOutput(
            f"{card.name}: output {ptr or '(root)'} does not match the output schema: {msg}",
            pointer=ptr,
        )


class _Plan:
    """What every call of one card needs, worked out on its first call.

    ``chain`` is the card's middleware chain ending in ``Runtime._execute``. When no
    middleware applies, ``transport`` is set (calls await it directly), and ``run`` too
    if the transport offers a synchronous callable for the card (``direct``): such calls
    skip the chain, the call context and every await. ``peek`` is the outermost
    middleware's synchronous answer, when it has one (a cache hit, say).
    """

    __slots__ = ("card", "chain", "inp", "out", "peek", "public", "run", "transport")

    def __init__(
        self,
        *,
        card: Card,
        chain: CallNext,
        inp: Validator | None,
        out: Validator | None,
        run: DirectRun | None,
        transport: Transport | None,
        peek: Peek | None,
    ) -> None:
        self.card = card
        # Visible to every caller, so the flattened path need not ask ``visible``.
        self.public = not (card.hidden or card.root == "root" or card.capabilities)
        self.chain = chain
        self.inp = inp
        self.out = out
        self.run = run
        self.transport = transport
        self.peek = peek


class Runtime:
    """The async core: holds cards, runs calls through the pipeline.

    Open one with :meth:`open` (a runtime home on disk) or :meth:`memory`
    (nothing on disk; for tests and embedding).
    """

    def __init__(
        self,
        *,
        store: Store,
        home: Home | None = None,
        config: Mapping[str, Any] | None = None,
        middleware: Iterable[Middleware] = (),
        transports: Mapping[str, Transport] | None = None,
    ) -> None:
        self.home = home
        self.store = store
        self.config: dict[str, Any] = dict(config or {})
        self.packages: dict[str, SkillPackage] = {}
        self.problems: list[Problem] = []
        self._cards: dict[str, Card] = {}
        self._transports: dict[str, Transport] = dict(transports or {})
        self._middleware: list[Middleware] = list(middleware)
        self._plans: dict[Card, _Plan] = {}
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(6).hex()
        self.host_factory: Callable[[CallContext], Host] = lambda ctx: DenyAllHost(ctx.tool)
        # Checks a package must pass before it is registered (the host API refuses packages
        # whose required permissions are not granted); each raises a SkillyardError.
        self.admission: list[Callable[[SkillPackage], None]] = []
        # Run on every package as it is registered; may return it with more cards.
        self.package_hooks: list[Callable[[Runtime, SkillPackage], SkillPackage]] = []
        self._closed = False

    # -- construction ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        home: str | Path | None = None,
        *,
        roots: RootDirs | None = None,
        middleware: Iterable[Middleware] = (),
        transports: Mapping[str, Transport] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> Runtime:
        """Open the runtime home (``$SKILLYARD_HOME`` or ``~/.skillyard``) and load its roots.

        ``config`` sections replace the same sections of the home's ``config.toml``.
        """
        h = Home.resolve(home)
        merged = h.config()
        merged.update(config or {})
        store = Store(h.db_path)
        rt = cls(store=store, home=h, config=merged, middleware=middleware, transports=transports)
        rt._install_extensions()
        rt.load_roots(roots if roots is not None else h.root_dirs(merged))
        return rt

    @classmethod
    def memory(
        cls,
        *,
        roots: RootDirs | None = None,
        middleware: Iterable[Middleware] = (),
        transports: Mapping[str, Transport] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> Runtime:
        """A runtime with state in memory only; load ``roots`` if given."""
        rt = cls(
            store=Store(":memory:"), config=config, middleware=middleware, transports=transports
        )
        rt._install_extensions()
        if roots:
            rt.load_roots(roots)
        return rt

    def _install_extensions(self) -> None:
        for target in EXTENSIONS:
            module, func = target.split(":")
            getattr(importlib.import_module(module), func)(self)

    def load_roots(self, roots: RootDirs) -> Discovery:
        """Discover packages under ``roots`` and register them (problems are kept, not raised).

        A runtime with a home keeps a warm index of validated packages (skillyard.index).
        """
        index = None
        if self.home is not None:
            from skillyard.index import PackageIndex

            index = PackageIndex(self.store)
        found = discover(roots, index=index)
        self.problems.extend(found.problems)
        for pkg in list(found.packages.values()):
            try:
                self._admit(pkg)
            except SkillyardError as exc:
                problem = Problem(str(pkg.path), pkg.root, "refused", str(exc), pkg.id, exc)
                found.problems.append(problem)
                self.problems.append(problem)
                del found.packages[pkg.id]
                continue
            self._register(pkg)
        return found

    def _admit(self, pkg: SkillPackage) -> None:
        for check in self.admission:
            check(pkg)

    def add_package(self, path: str | Path, *, root: str = "project") -> SkillPackage:
        """Load one package directory and register it (raises ManifestError when broken)."""
        if root not in (*LAYERS, "memory"):
            raise ConfigError(f"unknown root {root!r}; use root, project, user or memory")
        pkg = load_package(Path(path), root=root)
        current = self.packages.get(pkg.id)
        if current is not None and current.root == "root" and root != "root":
            raise PermissionDenied(f"skill id {pkg.id!r} is owned by the ROOT layer")
        self._admit(pkg)
        self._register(pkg)
        return pkg

    def _register(self, pkg: SkillPackage) -> None:
        for hook in self.package_hooks:
            pkg = hook(self, pkg)
        old = self.packages.get(pkg.id)
        if old is not None:
            for card in old.cards:
                self._cards.pop(card.name, None)
        self.packages[pkg.id] = pkg
        for card in pkg.cards:
            self._cards[card.name] = card

    def add_card(self, card: Card) -> Card:
        """Register a single card (embedding hosts and the ``tool`` decorator use this)."""
        existing = self._cards.get(card.name)
        if existing is not None and existing.root == "root" and card.root != "root":
            raise PermissionDenied(f"tool {card.name!r} is owned by the ROOT layer")
        self._cards[card.name] = card
        return card

    def remove_card(self, name: str) -> None:
        """Unregister a card by tool name (no error when absent)."""
        self._cards.pop(name, None)

    def tool(
        self,
        name: str,
        *,
        description: str = "",
        input_schema: Mapping[str, Any] | None = None,
        output_schema: Mapping[str, Any] | None = None,
        roles: tuple[str, ...] = ("tool",),
        policy: Policy | None = None,
        limits: Limits | None = None,
        permissions: Mapping[str, Any] | None = None,
        hidden: bool = False,
        root: str = "memory",
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register a Python function ``fn(args[, ctx])`` as the tool ``name``."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            from skillyard.transports.python import PythonTransport

            transport = self.transport("python")
            assert isinstance(transport, PythonTransport)
            op = transport.register_function(name, fn)
            skill_id, _, method = name.partition("-")
            self.add_card(
                Card(
                    id=skill_id,
                    name=name,
                    method=method or name,
                    description=description or (inspect.getdoc(fn) or "").split("\n")[0],
                    input_schema=dict(input_schema or {"type": "object"}),
                    output_schema=dict(output_schema) if output_schema else None,
                    roles=roles,
                    policy=policy or Policy(),
                    limits=limits or Limits(),
                    permissions=dict(permissions or {}),
                    hidden=hidden,
                    transport="python",
                    operation=op,
                    root=root,
                )
            )
            return fn

        return register

    # -- middleware and transports -------------------------------------------------------

    @property
    def middleware(self) -> tuple[Middleware, ...]:
        return tuple(self._middleware)

    def use(self, middleware: Middleware, *, first: bool = False) -> None:
        """Add a middleware to the chain (outermost when ``first``)."""
        if first:
            self._middleware.insert(0, middleware)
        else:
            self._middleware.append(middleware)
        self.refresh_middleware()

    def refresh_middleware(self) -> None:
        """Forget the per-card plans; call it when a middleware's ``applies`` answer changes."""
        self._plans.clear()

    def _plan_for(self, card: Card) -> _Plan:
        """Work out once what every call of ``card`` needs (see :class:`_Plan`).

        A middleware with ``applies(card) -> bool`` is left out of the chains of cards it
        does not apply to, so a card no cache or cassette can serve pays nothing for them.
        When no middleware is left and the card's transport can run it inline
        (``Transport.direct``), calls take the flattened path (:meth:`_call_inline`); so do
        calls the outermost middleware answers with its ``peek`` (see :class:`Middleware`).
        """
        chain: CallNext = self._execute
        outermost: Middleware | None = None
        for mw in reversed(self._middleware):
            applies = getattr(mw, "applies", None)
            if applies is None or applies(card):
                chain = _link(mw, chain)
                outermost = mw
        out = card.output_schema
        run = transport = None
        if outermost is None:
            transport = self.transport(card.transport)
            offer = getattr(transport, "direct", None)
            run = offer(card) if offer is not None else None
        inp = validator_for(card.input_schema)
        plan = _Plan(
            card=card,
            chain=chain,
            # Arguments are always a dict by the time they are checked.
            inp=None if inp.any_dict else inp,
            out=None if out is None else validator_for(out),
            run=run,
            transport=transport,
            peek=getattr(outermost, "peek", None),
        )
        self._plans[card] = plan
        return plan

    def transport(self, kind: str) -> Transport:
        """The transport instance for ``kind`` (created on first use)."""
        t = self._transports.get(kind)
        if t is not None:
            return t
        target = TRANSPORTS.get(kind)
        if target is None:
            raise TransportError(
                f"no transport for kind {kind!r}; known: {', '.join(sorted(TRANSPORTS))}"
            )
        module, cls_name = target.split(":")
        try:
            cls = getattr(importlib.import_module(module), cls_name)
        except ImportError as exc:
            raise TransportError(
                f"the {kind!r} transport is not available: {exc}. Install skillyard[all] to get it."
            ) from exc
        t = cls(self)
        self._transports[kind] = t
        return t

    def sessions(self) -> SessionManager:
        """Persistent runtime sessions on Lua VMs (system authority only; see sessions.py)."""
        manager: SessionManager | None = self.__dict__.get("_sessions")
        if manager is None:
            from skillyard.sessions import SessionManager

            manager = self._sessions = SessionManager(self)
        return manager

    def host_for(self, ctx: CallContext) -> Host:
        """The host API bound to one call (deny-all unless a host API is installed)."""
        return self.host_factory(ctx)

    # -- listing -------------------------------------------------------------------------

    def list(self, *, caller: Caller = DEFAULT_CALLER, include_hidden: bool = False) -> list[Card]:
        """Cards visible to ``caller``, sorted by tool name."""
        out = []
        show_hidden = include_hidden and caller.authority == "system"
        for card in self._cards.values():
            if card.hidden and not show_hidden:
                continue
            if visible(card, caller):
                out.append(card)
        return sorted(out, key=lambda c: c.name)

    def card(self, tool: str, *, caller: Caller = DEFAULT_CALLER) -> Card:
        """Resolve a tool name to its card, as ``caller`` sees it."""
        card = self._cards.get(tool)
        if card is None or not visible(card, caller):
            raise SkillNotFound(self._not_found(tool, caller), tool=tool)
        return card

    def _not_found(self, tool: str, caller: Caller) -> str:
        import difflib

        names = [c.name for c in self.list(caller=caller)]
        close = difflib.get_close_matches(tool, names, n=3)
        hint = (
            f"; did you mean {', '.join(close)}?"
            if close
            else "; run `skillyard list` to see the tools"
        )
        return f"no tool named {tool!r}{hint}"

    # -- calling ---------------------------------------------------------------------------

    async def call(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        caller: Caller = DEFAULT_CALLER,
        sink: EventSink | None = None,
        timeout: float | None = None,
        parent: CallContext | None = None,
    ) -> CallResult:
        """Run ``tool`` with ``args`` through the whole pipeline."""
        if parent is None and timeout is None:  # a caller's own timeout needs the full path
            done = self._call_inline(tool, args, caller, sink)
            if done is not None:
                return done
        card = self._cards.get(tool)
        if card is None or not visible(card, caller):
            # Hidden methods (private callbacks) are reachable from another skill only.
            nested_hidden = card is not None and card.hidden and parent is not None
            if (
                card is None
                or not nested_hidden
                or (card.root == "root" and caller.authority != "system")
            ):
                raise SkillNotFound(self._not_found(tool, caller), tool=tool)
        call_id = f"{self._id_prefix}-{next(self._ids)}"
        try:
            if args is None:
                args = {}
            elif type(args) is not dict:
                if not isinstance(args, Mapping):
                    raise InvalidArguments(
                        f"arguments must be a JSON object, got {type(args).__name__}"
                    )
                args = dict(args)
            plan = self._plans.get(card) or self._plan_for(card)
            if plan.inp is not None:
                _check_args(tool, plan.inp, args)
            limit = (
                card.limits.timeout_sec
                if timeout is None
                else min(timeout, card.limits.timeout_sec)
            )
            now = time.monotonic()
            deadline = now + limit
            if parent is not None:
                self._check_nested(card, parent)
                deadline = min(deadline, parent.deadline)
            ctx = CallContext(self, card, args, caller, call_id, deadline, sink, parent, now)
            transport = plan.transport
            if transport is None:
                return await plan.chain(ctx)
            # No middleware: the executor's work, without its coroutine.
            t0 = _monotonic()
            raw = await transport.call(card, args, ctx)
            return self._result(plan, call_id, raw, ctx.events, _monotonic() - t0)
        except SkillyardError as exc:
            _annotate(exc, tool, call_id)
            raise

    def _call_inline(
        self,
        tool: str,
        args: Mapping[str, Any] | None,
        caller: Caller,
        sink: EventSink | None = None,
    ) -> CallResult | None:
        """The flattened path: run ``tool`` right here when its plan allows, else ``None``.

        It serves cards whose transport runs them synchronously with no context and no
        middleware in the way (a sync ``fn(args)`` Python function), and calls the
        outermost middleware answers with its ``peek`` (a cache hit), called with a plain
        dict by a caller who may see them. From :class:`SyncRuntime` no event loop is
        running while such a skill runs. Everything else, and every error of
        resolution, goes the long way through :meth:`call`, which makes the same checks.
        Measured need: each step here is inlined because the whole call is a few
        microseconds (see bench/bench_core.py).
        """
        card = self._cards.get(tool)
        if args is None:
            args = {}
        if card is None or type(args) is not dict:
            return None
        plan = self._plans.get(card)
        if plan is None:
            if not visible(card, caller):
                return None
            try:
                plan = self._plan_for(card)
            except SkillyardError:
                return None  # call() raises it again, with the call's id
        if (plan.run is None and plan.peek is None) or not (plan.public or visible(card, caller)):
            return None
        call_id = f"{self._id_prefix}-{next(self._ids)}"
        try:
            if plan.inp is not None:
                _check_args(tool, plan.inp, args)
            run = plan.run
            if run is None:  # a middleware applies, so its peek is what brought us here
                peek = plan.peek
                assert peek is not None
                return peek(card, args, caller, call_id, sink)
            t0 = _monotonic()
            value = run(args)
            elapsed = _monotonic() - t0
            if value is DEFER:
                return None
            if isinstance(value, RawResult):
                return self._result(plan, call_id, value, (), elapsed)
            if plan.out is not None:
                _check_output(card, plan.out, value)
            return plain_result(tool, call_id, value, elapsed * 1e6)
        except SkillyardError as exc:
            _annotate(exc, tool, call_id)
            raise

    def _check_nested(self, card: Card, parent: CallContext) -> None:
        if parent.depth + 1 >= MAX_CALL_DEPTH:
            raise PermissionDenied(
                f"call depth {MAX_CALL_DEPTH} reached at {card.name!r}", tool=card.name
            )
        node: CallContext | None = parent
        while node is not None:
            if node.card.name == card.name:
                raise PermissionDenied(
                    f"cycle refused: {card.name!r} is already running in this call chain",
                    tool=card.name,
                )
            node = node.parent

    async def _execute(self, ctx: CallContext) -> CallResult:
        card = ctx.card
        transport = self._transports.get(card.transport) or self.transport(card.transport)
        t0 = time.monotonic()
        raw: RawResult = await transport.call(card, ctx.args, ctx)
        elapsed = time.monotonic() - t0
        plan = self._plans.get(card) or self._plan_for(card)
        return self._result(plan, ctx.call_id, raw, ctx.events, elapsed)

    @staticmethod
    def _result(
        plan: _Plan,
        call_id: str,
        raw: RawResult,
        events: Sequence[dict[str, Any]],
        elapsed: float,
    ) -> CallResult:
        """Check a transport's answer against the output schema and make the call's result."""
        if plan.out is not None:
            _check_output(plan.card, plan.out, raw.output)
        return plain_result(
            plan.card.name,
            call_id,
            raw.output,
            elapsed * 1e6,
            raw.content,
            raw.llm_context,
            tuple(events) + raw.events if events else raw.events,
            raw.usage,
        )

    async def resume(
        self, action_id: str, *, wait_ms: int = 0, caller: Caller = DEFAULT_CALLER
    ) -> CallResult:
        """Finish a call the gate held for approval (see the gate middleware)."""
        for mw in self._middleware:
            resume = getattr(mw, "resume", None)
            if resume is not None:
                result: CallResult = await resume(self, action_id, wait_ms=wait_ms, caller=caller)
                return result
        raise GateError(f"cannot resume {action_id!r}: no gate is installed in this runtime")

    # -- lifecycle -------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """Health of every transport started so far."""
        return {kind: await t.health() for kind, t in self._transports.items()}

    async def aclose(self) -> None:
        """Stop transports (workers, VMs, sessions) and close the store."""
        if self._closed:
            return
        self._closed = True
        for t in list(self._transports.values()):
            await t.aclose()
        for mw in self._middleware:
            close = getattr(mw, "aclose", None)
            if close is not None:
                await close()
        self.store.close()

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SyncRuntime:
    """A blocking facade over :class:`Runtime` that owns a private event loop.

    Use it from synchronous code; inside ``async`` code use :class:`Runtime`.
    """

    def __init__(self, runtime: Runtime, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.runtime = runtime
        self._loop = loop or asyncio.new_event_loop()

    @classmethod
    def open(cls, home: str | Path | None = None, **kw: Any) -> SyncRuntime:
        """Like :meth:`Runtime.open`."""
        return cls(Runtime.open(home, **kw))

    @classmethod
    def memory(cls, **kw: Any) -> SyncRuntime:
        """Like :meth:`Runtime.memory`."""
        return cls(Runtime.memory(**kw))

    def run(self, coro: Awaitable[Any]) -> Any:
        """Run a coroutine on this runtime's loop and return its result."""
        return self._loop.run_until_complete(coro)

    def call(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        caller: Caller = DEFAULT_CALLER,
        **kw: Any,
    ) -> CallResult:
        """Like :meth:`Runtime.call`, blocking.

        A sync Python skill with no middleware in its way runs right here, without a trip
        through the event loop (same checks, same result; see ``Runtime._call_inline``).
        """
        if not kw:
            done = self.runtime._call_inline(tool, args, caller)
            if done is not None:
                return done
        return self._loop.run_until_complete(self.runtime.call(tool, args, caller=caller, **kw))

    def resume(self, action_id: str, **kw: Any) -> CallResult:
        """Like :meth:`Runtime.resume`, blocking."""
        return self._loop.run_until_complete(self.runtime.resume(action_id, **kw))

    def list(self, **kw: Any) -> list[Card]:
        return self.runtime.list(**kw)

    def card(self, tool: str, **kw: Any) -> Card:
        return self.runtime.card(tool, **kw)

    def tool(self, name: str, **kw: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.runtime.tool(name, **kw)

    def close(self) -> None:
        """Close the runtime and the loop."""
        if self._loop.is_closed():
            return
        self._loop.run_until_complete(self.runtime.aclose())
        self._loop.close()

    def __enter__(self) -> SyncRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
