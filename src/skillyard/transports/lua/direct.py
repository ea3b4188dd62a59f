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
    budget, memory, modules, timeout = (
        plan.budget,
        plan.memory,
        plan.modules,
        card.limits.timeout_sec,
    )
    token = ~plan.token  # this entry's direct runner, beside the full path's ``plan.token``
    monotonic = time.monotonic
    enter, table_output, release = transport._enter, transport.table_output, transport.release
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
            if pool is None or token not in iso.runners:  # a new VM, or a first direct run
                api.begin(card, None, modules)
            res = enter(iso, card, None, plan, args, monotonic() + timeout, True)
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
