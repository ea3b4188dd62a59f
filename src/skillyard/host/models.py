"""``models.*``: embeddings and LLM completions routed to callbacks the host application registers.

::

    rt.runtime.models.register(
        embed=lambda req: my_embedder(req["text"]),               # -> list[float] or {vector, model}
        llm=lambda req: my_llm(req["system"], req["user"]),      # -> str or {text, model, usage}
    )

Callbacks may be sync (run in a worker thread) or async. Each receives one request
dict with the caller's attribution (``caller``: skill id, tool, entry, call id,
request id, principal). Failures come back to the skill with one of the stable
codes in :data:`CODES`; a callback's own exception text is never passed on (it may
carry API keys or headers), only its type and, for :class:`ModelError`, the message
the host chose.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from skillyard.errors import HostError
from skillyard.host.common import arg, invalid

if TYPE_CHECKING:
    from skillyard.host.api import Host

CODES = ("model_unavailable", "invalid_argument", "provider_error", "timeout", "budget_exceeded")
MAX_TEXT = 1_000_000
_log = logging.getLogger("skillyard.host.models")

Callback = Callable[[dict[str, Any]], Any]


class ModelError(HostError):
    """Raise from a model callback to return a stable code and a message you chose."""

    def __init__(self, code: str, message: str) -> None:
        if code not in CODES:
            raise ValueError(f"model error code must be one of {', '.join(CODES)}")
        super().__init__(message, code=code)


class ModelRegistry:
    """The embed / llm callbacks of the embedding application (``runtime.models``)."""

    def __init__(self) -> None:
        self.embed: Callback | None = None
        self.llm: Callback | None = None
        self.timeout_sec: float | None = None
        self.max_calls_per_call: int | None = None

    def register(
        self,
        *,
        embed: Callback | None = None,
        llm: Callback | None = None,
        timeout_sec: float | None = None,
        max_calls_per_call: int | None = None,
    ) -> None:
        """Register (or replace) callbacks; ``max_calls_per_call`` bounds model calls per skill call."""
        for name, fn in (("embed", embed), ("llm", llm)):
            if fn is not None and not callable(fn):
                raise TypeError(f"models.register: {name} must be callable")
        if embed is not None:
            self.embed = embed
        if llm is not None:
            self.llm = llm
        if timeout_sec is not None:
            self.timeout_sec = timeout_sec
        if max_calls_per_call is not None:
            self.max_calls_per_call = max_calls_per_call

    def unregister(self, kind: str) -> None:
        """Remove the ``embed`` or ``llm`` callback."""
        setattr(self, kind, None)

    def status(self) -> dict[str, bool]:
        return {"embed": self.embed is not None, "llm": self.llm is not None}

    async def run(self, kind: str, request: dict[str, Any], *, remaining: float) -> Any:
        fn = self.embed if kind == "embed" else self.llm
        method = f"models.{kind}"
        if fn is None:
            raise HostError(
                f"{method}: no {kind} model is registered in this runtime "
                "(the host application registers one with runtime.models.register)",
                code="model_unavailable",
            )
        timeout = remaining if self.timeout_sec is None else min(remaining, self.timeout_sec)
        try:
            async with asyncio.timeout(timeout):
                if inspect.iscoroutinefunction(fn):
                    return await fn(request)
                value = await asyncio.to_thread(fn, request)
                if inspect.isawaitable(value):
                    value = await value
                return value
        except TimeoutError:
            raise HostError(
                f"{method}: the model did not answer within {timeout:.3g}s", code="timeout"
            ) from None
        except ModelError as exc:
            raise HostError(f"{method}: {exc.message}", code=exc.code) from None
        except Exception as exc:
            # The provider's message may quote keys, headers or the prompt: keep it in the
            # host's own log (type only) and give the skill a stable, clean error.
            _log.warning("%s callback failed with %s", method, type(exc).__name__)
            raise HostError(
                f"{method}: the model provider failed ({type(exc).__name__})",
                code="provider_error",
            ) from None


def _attribution(host: Host) -> dict[str, Any]:
    ctx = host.ctx
    root = ctx
    while root.parent is not None:
        root = root.parent
    return {
        "skill_id": ctx.card.id,
        "tool": ctx.card.name,
        "entry": ctx.card.method,
        "call_id": ctx.call_id,
        "request_id": root.call_id,
        "principal": ctx.caller.principal,
        "session_id": ctx.caller.session_id,
    }


def _budget(host: Host, registry: ModelRegistry, method: str) -> None:
    cap = registry.max_calls_per_call
    used = host.ctx.notes.get("models.calls", 0) + 1
    host.ctx.notes["models.calls"] = used
    if cap is not None and used > cap:
        raise HostError(
            f"{method}: this call already used its {cap} model calls", code="budget_exceeded"
        )


def handlers(registry: ModelRegistry) -> dict[str, Any]:
    """Dispatch handlers ``models.status|embed|llm``."""

    def status(host: Host, params: dict[str, Any], permit: Any) -> dict[str, bool]:
        return registry.status()

    async def embed(host: Host, params: dict[str, Any], permit: Any) -> dict[str, Any]:
        text = arg(params, "text", str, "models.embed")
        if not text or len(text) > MAX_TEXT:
            raise invalid("models.embed", f"params.text must be 1-{MAX_TEXT} characters")
        _budget(host, registry, "models.embed")
        value = await registry.run(
            "embed",
            {"kind": "embed", "text": text, "caller": _attribution(host)},
            remaining=host.ctx.remaining,
        )
        if isinstance(value, dict):
            vector, model = value.get("vector"), value.get("model")
        else:
            vector, model = value, None
        if not isinstance(vector, list | tuple) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in vector
        ):
            raise HostError(
                "models.embed: the provider returned no vector of numbers", code="provider_error"
            )
        return {"vector": [float(x) for x in vector], "model": model}

    async def llm(host: Host, params: dict[str, Any], permit: Any) -> dict[str, Any]:
        system = arg(params, "system", str, "models.llm", default="")
        user = arg(params, "user", str, "models.llm")
        options = arg(params, "options", dict, "models.llm", default={})
        if not user or len(system) + len(user) > MAX_TEXT:
            raise invalid("models.llm", f"params.user must be 1-{MAX_TEXT} characters")
        _budget(host, registry, "models.llm")
        value = await registry.run(
            "llm",
            {
                "kind": "llm",
                "system": system,
                "user": user,
                "options": options,
                "caller": _attribution(host),
            },
            remaining=host.ctx.remaining,
        )
        if isinstance(value, str):
            return {"text": value, "model": None, "usage": None}
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            return {"text": value["text"], "model": value.get("model"), "usage": value.get("usage")}
        raise HostError("models.llm: the provider returned no text", code="provider_error")

    return {"models.status": status, "models.embed": embed, "models.llm": llm}


__all__ = ["CODES", "ModelError", "ModelRegistry", "handlers"]
