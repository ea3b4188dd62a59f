"""Calls in flight on persistent workers: one pending call, and the transport's count."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skillyard.card import Card
    from skillyard.transports.base import CallContext


class Pending:
    """One call in flight. The future is made only when the caller has to wait for it."""

    __slots__ = ("bytes", "card", "ctx", "due", "error", "fut", "msg", "rid")

    def __init__(self, rid: int, card: Card, ctx: CallContext) -> None:
        self.rid = rid
        self.card = card
        self.ctx = ctx
        self.fut: asyncio.Future[Any] | None = None
        self.msg: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.bytes = 0
        self.due = 0.0  # loop time of its deadline once it waits in the loop (0: not yet)

    @property
    def finished(self) -> bool:
        return self.msg is not None or self.error is not None

    def resolve(self, msg: dict[str, Any]) -> None:
        if not self.finished:
            self.msg = msg
            if self.fut is not None and not self.fut.done():
                self.fut.set_result(msg)

    def fail(self, exc: BaseException) -> None:
        if not self.finished:
            self.error = exc
            if self.fut is not None and not self.fut.done():
                self.fut.set_exception(exc)


class Timeout(Exception):
    """Set on a pending call's future when its deadline passes."""


class Flight:
    """Calls in flight on every worker of a transport (the fast path waits only when alone)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


__all__ = ["Flight", "Pending", "Timeout"]
