from __future__ import annotations

import asyncio

import pytest

from skillyard import (
    Card,
    InvalidArguments,
    InvalidOutput,
    Limits,
    MockTransport,
    PermissionDenied,
    RawResult,
    Runtime,
    SkillNotFound,
    SyncRuntime,
)
from skillyard.errors import GateError, OutputTooLarge, SkillError, SkillTimeout

SCHEMA = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"qty": {"type": "integer"}}},
        },
        "name": {"type": "string"},
    },
    "required": ["name"],
    "additionalProperties": False,
}


def mock_runtime(handler, **card_kw) -> tuple[SyncRuntime, MockTransport]:
    transport = MockTransport(handler)
    rt = SyncRuntime(Runtime.memory(transports={"mock": transport}))
    rt.runtime.add_card(
        Card(id="shop", name="shop-order", method="order", transport="mock", **card_kw)
    )
    return rt, transport


def test_call_goes_through_the_transport_and_returns_a_result():
    rt, transport = mock_runtime(lambda args, ctx: {"ok": args["name"]}, input_schema=SCHEMA)
    result = rt.call("shop-order", {"name": "tea"})
    assert result.output == {"ok": "tea"}
    assert result.tool == "shop-order" and result.call_id
    assert result.decision.outcome == "none" and result.source == "live"
    assert transport.calls == [("shop-order", {"name": "tea"})]


def test_argument_errors_carry_a_json_pointer_and_never_reach_the_transport():
    rt, transport = mock_runtime(lambda args, ctx: {}, input_schema=SCHEMA)
    with pytest.raises(InvalidArguments) as info:
        rt.call("shop-order", {"name": "tea", "items": [{"qty": 1}, {"qty": "many"}]})
    assert info.value.pointer == "/items/1/qty"
    assert "/items/1/qty" in str(info.value)
    assert info.value.tool == "shop-order" and info.value.call_id
    with pytest.raises(InvalidArguments) as info:
        rt.call("shop-order", {"name": "tea", "extra": 1})
    assert "extra" in str(info.value)
    with pytest.raises(InvalidArguments, match="JSON object"):
        rt.call("shop-order", ["not", "an", "object"])  # type: ignore[arg-type]
    assert transport.calls == []


def test_output_schema_is_enforced():
    rt, _ = mock_runtime(
        lambda args, ctx: {"total": "lots"},
        output_schema={"type": "object", "properties": {"total": {"type": "number"}}},
    )
    with pytest.raises(InvalidOutput) as info:
        rt.call("shop-order", {})
    assert info.value.pointer == "/total"


def test_unknown_tool_suggests_close_names():
    rt, _ = mock_runtime(lambda args, ctx: {})
    with pytest.raises(SkillNotFound, match="did you mean shop-order"):
        rt.call("shop-ordr", {})


def test_middleware_wraps_the_executor_in_order():
    seen: list[str] = []

    class Tag:
        def __init__(self, name: str) -> None:
            self.name = name

        async def on_call(self, ctx, call_next):
            seen.append(f"{self.name}>")
            ctx.notes[self.name] = True
            result = await call_next(ctx)
            seen.append(f"<{self.name}")
            return result

    def handler(args, ctx):
        seen.append("run:" + ",".join(sorted(ctx.notes)))
        return {}

    rt, _ = mock_runtime(handler)
    rt.runtime.use(Tag("inner"))
    rt.runtime.use(Tag("outer"), first=True)
    rt.call("shop-order", {})
    assert seen == ["outer>", "inner>", "run:inner,outer", "<inner", "<outer"]


def test_middleware_can_short_circuit():
    from skillyard import CallResult

    class Refuse:
        async def on_call(self, ctx, call_next):
            return CallResult(tool=ctx.tool, call_id=ctx.call_id, output={"refused": True})

    rt, transport = mock_runtime(lambda args, ctx: {})
    rt.runtime.use(Refuse())
    assert rt.call("shop-order", {}).output == {"refused": True}
    assert transport.calls == []


def test_events_reach_the_sink_and_the_result():
    got: list[dict] = []

    def handler(args, ctx):
        ctx.emit("delta", text="a")
        return RawResult(output={"n": 1}, events=({"kind": "usage", "tokens": 3},))

    rt, _ = mock_runtime(handler)
    result = rt.call("shop-order", {}, sink=got.append)
    assert got == [{"kind": "delta", "text": "a"}]
    assert [e["kind"] for e in result.events] == ["delta", "usage"]


def test_resume_without_a_gate_is_a_clear_error():
    rt, _ = mock_runtime(lambda args, ctx: {})
    with pytest.raises(GateError, match="no gate"):
        rt.resume("act-1")


def test_nested_calls_refuse_cycles_and_inherit_the_deadline():
    async def handler(args, ctx):
        if args.get("depth", 0) == 0:
            return (await ctx.runtime.call("shop-order", {"depth": 1}, parent=ctx)).output
        return {}

    rt, _ = mock_runtime(handler)
    with pytest.raises(PermissionDenied, match="cycle refused"):
        rt.call("shop-order", {})


# -- python skills -----------------------------------------------------------------------


def test_python_decorator_sync_async_and_ctx():
    rt = SyncRuntime.memory()

    @rt.tool("calc-add", input_schema={"type": "object", "required": ["a", "b"]})
    def add(args):
        """Add two numbers."""
        return {"sum": args["a"] + args["b"]}

    @rt.tool("calc-whoami")
    async def whoami(args, ctx):
        await asyncio.sleep(0)
        return {"tool": ctx.tool, "principal": ctx.caller.principal}

    @rt.tool("calc-text")
    def text(args):
        return "plain text"

    assert rt.call("calc-add", {"a": 2, "b": 3}).output == {"sum": 5}
    assert rt.card("calc-add").description == "Add two numbers."
    assert rt.call("calc-whoami").output == {"tool": "calc-whoami", "principal": "local"}
    result = rt.call("calc-text")
    assert result.content == "plain text"
    rt.close()


def test_python_errors_timeouts_and_output_cap():
    rt = SyncRuntime.memory()

    @rt.tool("bad-raise")
    def boom(args):
        raise ValueError("nope")

    @rt.tool("bad-slow", limits=Limits(timeout_sec=0.05))
    async def slow(args):
        await asyncio.sleep(10)

    @rt.tool("bad-big", limits=Limits(max_output_bytes=100))
    def big(args):
        return {"x": "y" * 1000}

    @rt.tool("bad-weird")
    def weird(args):
        return {"x": object()}

    with pytest.raises(SkillError, match="ValueError: nope"):
        rt.call("bad-raise")
    with pytest.raises(SkillTimeout):
        rt.call("bad-slow")
    with pytest.raises(OutputTooLarge, match="the limit is 100"):
        rt.call("bad-big")
    with pytest.raises(InvalidOutput, match="JSON"):
        rt.call("bad-weird")
    rt.close()


def test_python_functions_must_take_args_or_args_and_ctx():
    from skillyard.errors import TransportError

    rt = SyncRuntime.memory()
    with pytest.raises(TransportError, match="takes \\(args\\) or \\(args, ctx\\)"):
        rt.tool("x-y")(lambda: None)
    rt.close()


def test_package_python_skill_runs_from_the_examples(tmp_path):
    from pathlib import Path

    examples = Path(__file__).resolve().parent.parent / "examples" / "skills"
    rt = SyncRuntime.memory(roots={"project": [examples]})
    out = rt.call("text-tools-stats", {"text": "One fish. Two fish! Red fish, blue fish?"}).output
    assert out["words"] == 8 and out["sentences"] == 3
    assert out["top_words"][0] == {"word": "fish", "count": 4}
    assert rt.call("text-tools-slugify", {"text": "Ça va, World?"}).output == {
        "slug": "ca-va-world"
    }
    rt.close()


def test_thread_option_runs_blocking_functions_off_the_loop(tmp_path):
    import threading

    rt = SyncRuntime.memory()
    main = threading.get_ident()
    transport = rt.runtime.transport("python")
    op = transport.register_function("t-run", lambda args: {"same": threading.get_ident() == main})  # type: ignore[attr-defined]
    rt.runtime.add_card(
        Card(id="t", name="t-run", method="run", operation=op, options={"thread": True})
    )
    assert rt.call("t-run").output == {"same": False}
    rt.close()


def test_middleware_that_does_not_apply_to_a_card_is_left_out_of_its_chain():
    seen: list[str] = []

    class OnlyOrders:
        enabled_for = {"shop-order"}

        def applies(self, card):
            return card.name in self.enabled_for

        async def on_call(self, ctx, call_next):
            seen.append(ctx.tool)
            return await call_next(ctx)

    rt, _ = mock_runtime(lambda args, ctx: {})
    rt.runtime.add_card(Card(id="shop", name="shop-refund", method="refund", transport="mock"))
    mw = OnlyOrders()
    rt.runtime.use(mw)
    rt.call("shop-order", {})
    rt.call("shop-refund", {})
    assert seen == ["shop-order"]
    mw.enabled_for = {"shop-refund"}
    rt.call("shop-refund", {})
    assert seen == ["shop-order"], "chains are cached per card until refreshed"
    rt.runtime.refresh_middleware()
    rt.call("shop-refund", {})
    assert seen == ["shop-order", "shop-refund"]
