"""``invoke``: call another skill through the whole runtime pipeline.

The caller's ``[permissions].invoke`` must name the target (tool name or skill id,
globs allowed) and the target's ``can_be_invoked_by`` (when it declares one) must
name the caller. The nested call keeps the original caller's identity, inherits the
remaining time budget, and cycles are refused by :meth:`Runtime.call`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from skillyard.errors import SkillNotFound
from skillyard.host.common import arg
from skillyard.transports.base import SYSTEM

if TYPE_CHECKING:
    from skillyard.card import Card
    from skillyard.host.access import Effective
    from skillyard.host.api import Host


def guard(host: Host, params: dict[str, Any]) -> Card:
    """Both sides' consent: the caller's ``invoke`` list and the target's ``can_be_invoked_by``."""
    tool = arg(params, "tool", str, "invoke")
    arg(params, "args", dict, "invoke", default={})
    try:
        # Looked up with system authority only to read its permissions; the call itself
        # goes through the pipeline with the original caller's visibility.
        target = host.runtime.card(tool, caller=SYSTEM)
    except SkillNotFound:
        target = None
    host.perms.invoke(tool, target.id if target is not None else tool.partition("-")[0])
    if target is None:
        raise SkillNotFound(f"invoke: no tool named {tool!r}", tool=tool)
    target_perms: Effective = host.effective(target)
    target_perms.invokable_by(host.skill, tool)
    return target


async def invoke(host: Host, params: dict[str, Any], target: Card) -> Any:
    result = await host.runtime.call(
        target.name, params.get("args") or {}, caller=host.ctx.caller, parent=host.ctx
    )
    if result.pending:
        return {"pending": True, "action_id": result.decision.action_id}
    return result.output


__all__ = ["guard", "invoke"]
