"""The flattened call path must behave exactly like the middleware chain it skips.

A sync ``fn(args)`` Python skill with no middleware in its way runs inline
(``Runtime._call_inline``). Every case here runs twice: on a bare runtime (flattened)
and on one with a pass-through middleware (the full chain), through both the async
and the blocking API, and the results or errors must match.
"""

from __future__ import annotations

import asyncio
import dataclasses
from types import MappingProxyType
from typing import Any

import pytest

from skillyard import Caller, Limits, RawResult, Runtime, SkillyardError, SyncRuntime
from skillyard.transports.base import DEFER, CallResult, plain_result

SCHEMA = {
    "type": "object",
    "properties": {
        "n": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["n"],
}
OUT = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


class PassThrough:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_call(self, ctx: Any, call_next: Any) -> Any:
        self.seen.append(ctx.tool)
        return await call_next(ctx)


def build(*, middleware: bool) -> tuple[SyncRuntime, PassThrough]:
    rt = SyncRuntime.memory()
    mw = PassThrough()
    if middleware:
        rt.runtime.use(mw)
    rt.tool("t-inc", input_schema=SCHEMA, output_schema=OUT)(lambda a: {"n": a["n"] + 1})
    rt.tool("t-text")(lambda a: "plain text")
    rt.tool("t-raw")(
        lambda a: RawResult(output={"k": 1}, content="c", llm_context="l", usage={"tokens": 3})
    )
    rt.tool("t-raise")(lambda a: 1 / 0)
    rt.tool("t-timeout")(lambda a: (_ for _ in ()).throw(TimeoutError()))
    rt.tool("t-bad-out", output_schema=OUT)(lambda a: {"n": "one"})
    rt.tool("t-unjson")(lambda a: {"x": {1, 2}})
    rt.tool("t-big", limits=Limits(max_output_bytes=50))(lambda a: {"x": "y" * 100})
    rt.tool("t-big-text", limits=Limits(max_output_bytes=50))(lambda a: "z" * 100)
    rt.tool("t-list")(lambda a: [1, 2, 3])
    rt.tool("t-hidden", hidden=True)(lambda a: {"secret": True})
    rt.tool("t-root", root="root")(lambda a: {"root": True})
    return rt, mw


def outcome(call: Any) -> tuple[Any, ...]:
    try:
        r = call()
    except SkillyardError as exc:
        return (
            type(exc).__name__,
            str(exc).replace(exc.call_id or "-", "<id>"),
            exc.pointer if hasattr(exc, "pointer") else None,
            exc.tool,
            bool(exc.call_id),
        )
    return ("ok", r.tool, r.output, r.content, r.llm_context, r.events, r.usage, r.source)


CASES: list[tuple[str, Any, dict[str, Any]]] = [
    ("t-inc", {"n": 1}, {}),
    ("t-inc", {"n": "x"}, {}),
    ("t-inc", {"tags": ["a", 2], "n": 1}, {}),
    ("t-inc", MappingProxyType({"n": 5}), {}),
    ("t-inc", ["not", "an", "object"], {}),
    ("t-inc", None, {}),
    ("t-text", {}, {}),
    ("t-raw", {}, {}),
    ("t-raise", {}, {}),
    ("t-timeout", {}, {}),
    ("t-bad-out", {}, {}),
    ("t-unjson", {}, {}),
    ("t-big", {}, {}),
    ("t-big-text", {}, {}),
    ("t-list", {}, {}),
    ("t-nope", {}, {}),
    ("t-hidden", {}, {}),
    ("t-hidden", {}, {"caller": Caller(authority="system")}),
    ("t-root", {}, {}),
    ("t-root", {}, {"caller": Caller(authority="system")}),
]


@pytest.mark.parametrize(
    ("tool", "args", "kw"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_flattened_and_chained_calls_agree(tool: str, args: Any, kw: dict[str, Any]) -> None:
    flat, _ = build(middleware=False)
    chained, mw = build(middleware=True)
    try:
        for _ in range(2):  # the first call plans the card, the second uses the plan
            want = outcome(lambda: chained.call(tool, args, **kw))
            assert outcome(lambda: flat.call(tool, args, **kw)) == want
            assert outcome(lambda: flat.run(flat.runtime.call(tool, args, **kw))) == want
        if want[0] == "ok":
            assert mw.seen, "the chained runtime really ran its middleware"
    finally:
        flat.close()
        chained.close()


def test_the_flattened_path_skips_the_transport_coroutine_and_the_chain(monkeypatch) -> None:
    rt, _ = build(middleware=False)
    transport = rt.runtime.transport("python")

    async def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("the coroutine path was taken")

    monkeypatch.setattr(transport, "call", refuse)
    assert rt.call("t-inc", {"n": 1}).output == {"n": 2}
    assert rt.run(rt.runtime.call("t-inc", {"n": 2})).output == {"n": 3}
    rt.close()


def test_middleware_added_later_sees_every_following_call() -> None:
    rt, _ = build(middleware=False)
    assert rt.call("t-inc", {"n": 1}).output == {"n": 2}  # planned flattened
    mw = PassThrough()
    rt.runtime.use(mw)
    rt.call("t-inc", {"n": 1})
    rt.run(rt.runtime.call("t-inc", {"n": 1}))
    assert mw.seen == ["t-inc", "t-inc"]
    rt.close()


def test_context_async_and_threaded_skills_keep_the_full_path() -> None:
    rt = SyncRuntime.memory()
    rt.tool("k-ctx")(lambda a, ctx: {"tool": ctx.tool, "loop": _loop_running()})
    rt.tool("k-thread")(lambda a: {"ok": True})

    @rt.tool("k-async")
    async def k_async(a: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"ok": True}

    rt.runtime.add_card(dataclasses.replace(rt.card("k-thread"), options={"thread": True}))
    for tool in ("k-ctx", "k-async", "k-thread"):
        card = rt.card(tool)
        assert rt.runtime.transport("python").direct(card) is None  # type: ignore[attr-defined]
    assert rt.call("k-ctx").output == {"tool": "k-ctx", "loop": True}
    assert rt.call("k-async").output == {"ok": True}
    assert rt.call("k-thread").output == {"ok": True}
    rt.close()


def test_capabilities_are_checked_on_the_flattened_path() -> None:
    from skillyard import Card, SkillNotFound

    rt = SyncRuntime.memory()
    rt.tool("c-open")(lambda a: {"ok": True})
    rt.runtime.add_card(dataclasses.replace(rt.card("c-open"), capabilities=("payments",)))
    with pytest.raises(SkillNotFound):
        rt.call("c-open", {})
    allowed = Caller(capabilities=frozenset({"payments"}))
    for _ in range(2):
        assert rt.call("c-open", {}, caller=allowed).output == {"ok": True}
        with pytest.raises(SkillNotFound):
            rt.call("c-open", {})
    assert isinstance(rt.card("c-open", caller=allowed), Card)
    rt.close()


def test_blocking_calls_of_plain_skills_run_with_no_event_loop() -> None:
    rt = SyncRuntime.memory()
    rt.tool("l-probe")(lambda a: {"loop": _loop_running()})
    assert rt.call("l-probe").output == {"loop": False}
    assert rt.run(rt.runtime.call("l-probe")).output == {"loop": True}
    rt.close()


def test_plain_result_sets_every_field_like_the_constructor() -> None:
    fast = plain_result("a-b", "id-1", {"x": 1}, 12.5)
    slow = CallResult(tool="a-b", call_id="id-1", output={"x": 1}, timing={"duration_us": 12.5})
    for f in dataclasses.fields(CallResult):
        assert getattr(fast, f.name) == getattr(slow, f.name), f.name
    assert fast == slow
    assert fast.usage is not plain_result("a-b", "id-2", None, 1.0).usage


def test_async_runtime_call_uses_the_flattened_path_too() -> None:
    async def main() -> None:
        async with Runtime.memory() as rt:
            rt.tool("a-inc")(lambda a: {"n": a["n"] + 1})
            results = [await rt.call("a-inc", {"n": i}) for i in range(3)]
            assert [r.output for r in results] == [{"n": 1}, {"n": 2}, {"n": 3}]
            assert len({r.call_id for r in results}) == 3
            assert all(r.timing["duration_us"] >= 0 for r in results)

    asyncio.run(main())


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Deferring:
    """A transport whose direct path gives up on calls that ask for the host."""

    kind = "deferring"

    def __init__(self) -> None:
        self.direct_runs: list[dict[str, Any]] = []
        self.full_calls: list[dict[str, Any]] = []

    def direct(self, card: Any) -> Any:
        def run(args: dict[str, Any]) -> Any:
            self.direct_runs.append(args)
            return DEFER if args.get("host") else {"via": "direct"}

        return run

    async def call(self, card: Any, args: dict[str, Any], ctx: Any) -> RawResult:
        self.full_calls.append(args)
        return RawResult(output={"via": "full", "call_id": ctx.call_id})

    async def health(self) -> dict[str, Any]:
        return {"ok": True}

    async def aclose(self) -> None:
        return None


def test_a_deferred_direct_run_is_finished_by_the_full_path() -> None:
    from skillyard import Card

    transport = Deferring()
    rt = SyncRuntime(Runtime.memory(transports={"deferring": transport}))
    rt.runtime.add_card(Card(id="d", name="d-run", method="run", transport="deferring"))
    assert rt.call("d-run", {}).output == {"via": "direct"}
    result = rt.call("d-run", {"host": True})
    assert result.output == {"via": "full", "call_id": result.call_id}
    result = rt.run(rt.runtime.call("d-run", {"host": True}))
    assert result.output["via"] == "full"
    assert transport.full_calls == [{"host": True}, {"host": True}]
    assert repr(DEFER) == "DEFER"
    rt.close()
