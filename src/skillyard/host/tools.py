"""``tools.*``: host tools the embedding application registers for skills to use.

::

    rt.runtime.host_tools.register("search.web", lambda args, caller: search(args["q"]))

A skill sees (``tools.list``), probes (``tools.has``) and calls (``tools.call``)
only the tools its ``[permissions].tools`` names or globs match.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from skillyard.errors import HostError, PermissionDenied, SkillyardError
from skillyard.host.common import arg, fail

if TYPE_CHECKING:
    from skillyard.host.api import Host

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")
_log = logging.getLogger("skillyard.host.tools")
ToolFn = Callable[[dict[str, Any], dict[str, Any]], Any]


class ToolRegistry:
    """Host tools by name (``runtime.host_tools``)."""

    def __init__(self) -> None:
        self._tools: dict[str, tuple[ToolFn, str]] = {}

    def register(self, name: str, fn: ToolFn, *, description: str = "") -> None:
        """Register ``fn(args, caller) -> JSON`` (sync or async) as host tool ``name``."""
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"host tool name {name!r}: use letters, digits and _ . : / -")
        if not callable(fn):
            raise TypeError(f"host tool {name!r}: fn must be callable")
        self._tools[name] = (fn, description)

    def unregister(self, name: str) -> None:
        self._tools.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def get(self, name: str) -> ToolFn | None:
        entry = self._tools.get(name)
        return entry[0] if entry else None


def handlers(registry: ToolRegistry) -> dict[str, Any]:
    """Dispatch handlers ``tools.list|has|call``."""

    def list_(host: Host, params: dict[str, Any], permit: Any) -> list[str]:
        return [n for n in registry.names() if host.perms.tool_allowed(n)]

    def has(host: Host, params: dict[str, Any], permit: Any) -> bool:
        name = arg(params, "name", str, "tools.has")
        return registry.get(name) is not None and host.perms.tool_allowed(name)

    async def call(host: Host, params: dict[str, Any], permit: Any) -> Any:
        name = params["name"]
        args = arg(params, "args", dict, "tools.call", default={})
        fn = registry.get(name)
        if fn is None:
            raise fail("tools.call", "not_found", f"no host tool named {name!r}")
        caller = {"skill_id": host.skill, "tool": host.ctx.tool, "call_id": host.ctx.call_id}
        try:
            async with asyncio.timeout(host.ctx.remaining):
                if inspect.iscoroutinefunction(fn):
                    return await fn(args, caller)
                value = await asyncio.to_thread(fn, args, caller)
                return await value if inspect.isawaitable(value) else value
        except TimeoutError:
            raise fail("tools.call", "timeout", f"{name!r} did not finish in time") from None
        except (HostError, PermissionDenied):
            raise
        except SkillyardError as exc:
            raise fail("tools.call", "tool_error", f"{name!r}: {exc.message}") from None
        except Exception as exc:
            _log.warning("host tool %s failed with %s", name, type(exc).__name__)
            raise fail(
                "tools.call", "tool_error", f"{name!r} failed ({type(exc).__name__})"
            ) from None

    return {"tools.list": list_, "tools.has": has, "tools.call": call}


__all__ = ["ToolRegistry", "handlers"]
