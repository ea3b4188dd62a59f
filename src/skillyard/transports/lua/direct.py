"""Lua calls on the runtime's flattened path (``Transport.direct``).

When no middleware applies to a card, the runtime calls ``run(args)`` in place of the
pipeline: no call context, no coroutine, no await. A Lua skill needs a context only
when it reaches out: a host call (a yield to the transport), a log line or
``vulcan.context``. Such a run stops before anything leaves the VM and answers
``DEFER``: a host request is never sent, a log line never emitted (the harness trips
the run with an uncatchable ``defer``). The runtime then redoes the call through
:meth:`LuaTransport.call`, and this card's runs defer at once from then on.

A warm card's run takes an isolate from its pool and calls its bound runner; a fresh
card's run makes a VM, loads and runs the entry in one crossing (``H.once``), and frees
it. A fresh run that defers has built a VM for nothing, once per card; in exchange every
other fresh call skips the pipeline's context, result record and coroutine (about 3% of
a fresh call, measured in bench/bench_lua.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from skillyard.errors import SkillError
from skillyard.transports.base import DEFER
from skillyard.transports.lua.isolate import ConversionError

if TYPE_CHECKING:
    from collections.abc import Callable

    from skillyard.card import Card
    from skillyard.transports.lua import LuaTransport


def direct_run(transport: LuaTransport, card: Card) -> Callable[[dict[str, Any]], Any] | None:
    """``run(args)`` for ``card``, or None when its calls must take the full path."""
    plan = transport._plan(card)
    pool = plan.pool
    if plan.bytecode is None or plan.thread:
        return None
    bytecode, rel, key, budget, step = plan.bytecode, plan.rel, plan.fn_key, plan.budget, plan.step
    chunkname = plan.chunkname
    memory, modules, timeout = plan.memory, plan.modules, card.limits.timeout_sec
    token = ~plan.token  # this entry's direct runner, beside the full path's ``plan.token``
    lua_errors = (transport._lua_error, UnicodeDecodeError, ConversionError)
    monotonic = time.monotonic
    table_output, release = transport.table_output, transport.release
    deferred = False

    def run(args: dict[str, Any]) -> Any:
        nonlocal deferred
        if deferred:
            return DEFER
        iso = pool.pop() if pool else transport.new_isolate(memory)
        api = iso.current
        api.state = api.own  # what require() needs: the card's modules (set by ``begin``)
        reusable = False
        try:
            try:
                if pool is None:
                    api.begin(card, None, modules)
                    res = iso.once(
                        bytecode,
                        chunkname,
                        key,
                        iso.to_lua(args),
                        budget,
                        monotonic() + timeout,
                        step,
                        True,
                    )
                else:
                    shapes = iso.runners.get(token)
                    if shapes is None:
                        api.begin(card, None, modules)
                        shapes = iso.bound(token, bytecode, rel, key, budget, step, True)
                    res = iso.call_bound(shapes, monotonic() + timeout, args)
            except lua_errors as exc:
                raise transport._translate(iso, card, None, budget, exc) from exc
            if type(res) is not tuple:  # done, with one table
                output = table_output(iso, card, res)
                reusable = True
                return output
            status = res[0]
            if status == "host" or (status == "limit" and res[1] == "defer"):
                # nothing has left the VM (the harness dropped a pending host request)
                deferred = reusable = True
                return DEFER
            res = transport._check(iso, card, None, res, budget)
            raw = transport._result(iso, card, res[2:])
            reusable = True
            return raw
        except SkillError:
            reusable = True
            raise
        finally:
            release(iso, pool, reusable)

    return run


__all__ = ["direct_run"]
