"""The gate step of the pipeline: propose -> decide -> execute, each recorded.

``on_call`` evaluates the policy. *allow* runs the call and records the result;
*deny* records and raises :class:`~skillyard.errors.PolicyDenied`; *hold* stores
a durable action and returns a ``pending_approval`` result. ``resume`` finishes a
held action once a signed decision has arrived, executing it at most once.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from skillyard.errors import (
    CallFailed,
    GateError,
    PolicyDenied,
    SkillNotFound,
    SkillyardError,
)
from skillyard.gate import actions, approvals, journal, ledger
from skillyard.gate.actions import Action
from skillyard.gate.canon import canonical, digest
from skillyard.gate.config import GateConfig
from skillyard.gate.ledger import Entry
from skillyard.gate.policy import PolicySet, Verdict, load_policy
from skillyard.transports.base import CallContext, Caller, CallResult, Decision

if TYPE_CHECKING:
    from skillyard.runtime import CallNext, Runtime

# The held action a resume is executing right now: its re-entry into on_call skips the
# policy (it was decided already) and is recorded by resume.
_APPROVED: contextvars.ContextVar[Action | None] = contextvars.ContextVar(
    "skillyard_gate_approved", default=None
)
# Test hook: kill -9 this process at a named point ("after_allow", "after_claim",
# "after_execute") to prove crash behaviour. Read once; unset in normal use.
_FAULT = os.environ.get("SKILLYARD_GATE_FAULT", "")
_RAW_PRIVACY = ("allow-raw", "local-only")


def _fault(point: str) -> None:
    if point == _FAULT:
        os.kill(os.getpid(), signal.SIGKILL)


def _caller_dict(c: Caller) -> dict[str, Any]:
    return {
        "authority": c.authority,
        "principal": c.principal,
        "session_id": c.session_id,
        "capabilities": sorted(c.capabilities),
    }


def _error_dict(exc: BaseException, privacy: str) -> dict[str, Any]:
    code = exc.code if isinstance(exc, SkillyardError) else "internal_error"
    out: dict[str, Any] = {"code": code, "type": type(exc).__name__}
    if privacy in _RAW_PRIVACY:
        out["message"] = exc.message if isinstance(exc, SkillyardError) else str(exc)
    return out


def denied(kind: str, message: str, **details: Any) -> PolicyDenied:
    """A gate rejection as an exception; ``code`` is the rejection kind."""
    return PolicyDenied(message, code=kind, details={"kind": kind, **details})


class Gate:
    """Governance middleware: policy, holds, signed approvals and the ledger."""

    def __init__(self, runtime: Runtime, config: GateConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.store = runtime.store
        self.ledger_on = config.ledger
        self.policy: PolicySet | None = None
        if config.mode == "enforce":
            assert config.policy is not None
            self.policy = load_policy(
                config.policy,
                require_signed=config.require_signed_policy,
                signers=config.policy_signers,
            )
        self.policy_version = self.policy.version if self.policy else "ledger-only"
        self._decisions: dict[str | None, Decision] = {}
        actions.migrate(self.store)
        spool = (
            None if self.store.path == ":memory:" else Path(self.store.path).parent / "gate-spool"
        )
        self.recovered = actions.recover(self.store, ledger_on=self.ledger_on)
        self.recovered["interrupted"] += journal.recover(self.store, spool)
        self.journal = journal.Journal(self.store, spool_dir=spool) if self.ledger_on else None

    # -- the call path ---------------------------------------------------------------------

    async def on_call(self, ctx: CallContext, call_next: CallNext) -> CallResult:
        held = _APPROVED.get()
        if held is not None and ctx.parent is None and held.tool == ctx.card.name:
            _APPROVED.set(None)  # this is the approved action itself, not a nested call
            ctx.notes["gate.action_id"] = held.action_id
            return await call_next(ctx)
        policy = self.policy
        verdict = policy.evaluate(ctx.card, ctx.args, ctx.caller) if policy is not None else None
        if verdict is None or verdict.outcome == "allow":
            return await self._run(ctx, call_next, verdict)
        if verdict.outcome == "deny":
            self._record_decision(ctx, verdict, "deny", "policy_denied")
            raise denied(
                "policy_denied",
                f"{ctx.card.name}: denied by policy ({verdict.rule}): {verdict.reason}",
                rule=verdict.rule,
                policy_version=self.policy_version,
            )
        if ctx.parent is not None:
            self._record_decision(ctx, verdict, "deny", "approval_required")
            raise denied(
                "approval_required",
                f"{ctx.card.name}: needs approval ({verdict.rule}) and was called from inside "
                f"{ctx.parent.card.name!r}; a nested call cannot wait for a human. Call it "
                "directly so it can be held",
                rule=verdict.rule,
            )
        return self._hold(ctx, verdict)

    def _decided(
        self, ctx: CallContext, action_id: str, privacy: str, decision: dict[str, Any]
    ) -> Entry:
        """The first entry of every action: the proposal (arguments, caller) and the decision."""
        payload = {"args": ctx.args, "call_id": ctx.call_id, "authority": ctx.caller.authority}
        payload.update(decision)
        return Entry(
            "decided",
            ctx.caller.principal,
            ctx.card.name,
            action_id,
            ctx.card.digest,
            self.policy_version,
            privacy,
            payload,
        )

    @staticmethod
    def _verdict_payload(verdict: Verdict | None, outcome: str) -> dict[str, Any]:
        if verdict is None:
            return {"outcome": "none", "reason": "ledger-only mode: no policy decides"}
        return {
            "outcome": outcome,
            "rule": verdict.rule,
            "reason": verdict.reason,
            "level": f"L{verdict.contract.level}",
        }

    def _record_decision(self, ctx: CallContext, verdict: Verdict, outcome: str, kind: str) -> None:
        if not self.ledger_on:
            return
        assert self.journal is not None
        action_id = "act_" + ctx.call_id
        privacy = ctx.card.policy.privacy
        payload = self._verdict_payload(verdict, outcome)
        payload["kind"] = kind
        self.journal.add(self._decided(ctx, action_id, privacy, payload), spool=True)

    async def _run(
        self, ctx: CallContext, call_next: CallNext, verdict: Verdict | None
    ) -> CallResult:
        if not self.ledger_on:
            result = await call_next(ctx)
            return self._with_decision(result, verdict, None)
        journal_ = self.journal
        assert journal_ is not None
        action_id = "act_" + ctx.call_id
        ctx.notes["gate.action_id"] = action_id
        privacy = ctx.card.policy.privacy
        decided = self._decided(ctx, action_id, privacy, self._verdict_payload(verdict, "allow"))
        journal_.intent(decided)
        _fault("after_allow")
        try:
            result = await call_next(ctx)
        except BaseException as exc:
            journal_.add(self._call_entry(decided, None, exc), closes=True)
            raise
        _fault("after_execute")
        journal_.add(self._call_entry(decided, result, None), closes=True)
        return self._with_decision(result, verdict, None)

    def _call_entry(
        self, decided: Entry, result: CallResult | None, exc: BaseException | None
    ) -> Entry:
        """The one ledger entry of an allowed call: proposal, decision, execution, result."""
        payload = dict(decided.payload)
        outcome = self._result_payload(result, exc, decided.privacy)
        payload["result"] = outcome.pop("outcome")
        payload.update(outcome)
        return Entry(
            "call",
            decided.actor,
            decided.tool,
            decided.action_id,
            decided.card_digest,
            decided.policy_version,
            decided.privacy,
            payload,
        )

    @staticmethod
    def _result_payload(
        result: CallResult | None, exc: BaseException | None, privacy: str
    ) -> dict[str, Any]:
        if exc is not None:
            return {
                "outcome": "failed",
                "kind": _failure_kind(exc),
                "error": _error_dict(exc, privacy),
            }
        assert result is not None
        payload: dict[str, Any] = {
            "outcome": "ok",
            "source": result.source,
            "output": result.output,
            "call_id": result.call_id,
        }
        if result.content is not None:
            payload["content"] = result.content
        duration = result.timing.get("duration_us")
        if duration is not None:
            payload["duration_us"] = round(duration, 1)
        return payload

    def _with_decision(
        self, result: CallResult, verdict: Verdict | None, action: Action | None
    ) -> CallResult:
        if action is None:
            # Decisions are frozen values: one per allowing rule serves all its calls.
            key = verdict.rule if verdict is not None else None
            decision = self._decisions.get(key)
            if decision is None:
                decision = self._decisions[key] = self._decision_for(verdict, None)
        else:
            decision = self._decision_for(verdict, action)
        if result.source == "live":
            result.decision = decision  # built for this call by the executor: not shared
            return result
        return dataclasses.replace(result, decision=decision)  # a cache may share its results

    def _decision_for(self, verdict: Verdict | None, action: Action | None) -> Decision:
        return Decision(
            outcome="allow" if verdict is not None or action is not None else "none",
            phase="completed",
            reason=verdict.reason if verdict else (action.reason or "" if action else ""),
            rule=verdict.rule if verdict else (action.rule if action else None),
            action_id=action.action_id if action else None,
            request_id=action.request_id if action else None,
        )

    # -- holds -----------------------------------------------------------------------------

    def _hold(self, ctx: CallContext, verdict: Verdict) -> CallResult:
        action_id = "act_" + os.urandom(10).hex()
        request_id = "req_" + os.urandom(10).hex()
        now = time.time()
        timeout = verdict.timeout_sec or self.config.hold_timeout_sec
        deadline = now + timeout
        privacy = ctx.card.policy.privacy
        args_json = canonical(ctx.args).decode()
        args_hash = digest(ctx.args)
        self.flush()  # keep this process's entries in the order they happened
        with self.store.transaction() as conn:
            actions.insert(
                conn,
                {
                    "action_id": action_id,
                    "request_id": request_id,
                    "tool": ctx.card.name,
                    "card_digest": ctx.card.digest,
                    "args_hash": args_hash,
                    "args": args_json,
                    "caller": orjson.dumps(_caller_dict(ctx.caller)).decode(),
                    "policy_version": self.policy_version,
                    "rule": verdict.rule,
                    "reason": verdict.reason,
                    "approvers": orjson.dumps(list(verdict.approvers)).decode(),
                    "privacy": privacy,
                    "created_at": now,
                    "deadline": deadline,
                    "status": "pending",
                },
            )
            if self.ledger_on:
                payload = self._verdict_payload(verdict, "hold")
                payload.update(
                    request_id=request_id,
                    args_hash=args_hash,
                    deadline=deadline,
                    approvers=list(verdict.approvers),
                )
                ledger.append(conn, [self._decided(ctx, action_id, privacy, payload)])
        return CallResult(
            tool=ctx.card.name,
            call_id=ctx.call_id,
            decision=Decision(
                outcome="hold",
                phase="pending_approval",
                reason=verdict.reason,
                rule=verdict.rule,
                kind=None,
                action_id=action_id,
                request_id=request_id,
                deadline=deadline,
            ),
        )

    def pump_inbox(self) -> None:
        """Apply decision files waiting in the approvals inbox (if one is configured)."""
        if self.config.inbox is not None:
            approvals.import_inbox(
                self.store, self.config.inbox, self.config.approvers, ledger_on=self.ledger_on
            )

    def submit(self, record: Any, *, source: str = "api") -> Action:
        """Apply a (signed) decision record to its held action; raises ApprovalError if invalid."""
        return approvals.submit(
            self.store, record, self.config.approvers, source=source, ledger_on=self.ledger_on
        )

    async def resume(
        self, runtime: Runtime, action_id: str, *, wait_ms: int = 0, caller: Caller
    ) -> CallResult:
        """Wait up to ``wait_ms`` for a decision on a held action, then finish it (once)."""
        if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or wait_ms < 0:
            raise GateError(f"wait_ms must be a non-negative integer, got {wait_ms!r}")
        give_up = time.monotonic() + wait_ms / 1000
        interval = self.config.poll_interval
        while True:
            self.pump_inbox()
            action = actions.get(self.store, action_id)
            if action is None:
                raise GateError(
                    f"no held action {action_id!r}; see `skillyard approvals list`",
                    code="action_not_found",
                )
            status = action.status
            if status == "pending":
                if time.time() > action.deadline:
                    actions.expire(self.store, action_id, ledger_on=self.ledger_on)
                    continue
                left = give_up - time.monotonic()
                if left <= 0:
                    return self._pending(action)
                await asyncio.sleep(min(interval, left, max(0.0, action.deadline - time.time())))
                continue
            if status == "approved":
                result = await self._execute_held(runtime, action, caller)
                if result is not None:
                    return result
                continue  # someone else claimed it first: report their outcome
            if status == "executing":
                # Another resumer is running it; wait for its recorded outcome.
                if not actions.owner_alive(action.owner):
                    actions.recover(self.store, ledger_on=self.ledger_on)  # it died: interrupted
                    continue
                card = runtime._cards.get(action.tool)
                limit = (card.limits.timeout_sec if card is not None else 30.0) + 5.0
                if time.monotonic() > give_up and time.time() - (action.claimed_at or 0) > limit:
                    raise GateError(
                        f"{action.tool}: action {action_id!r} is still executing in process "
                        f"{action.owner} past its time limit; resume it again later",
                        code="action_executing",
                        details={"kind": "internal_error", "action_id": action_id},
                    )
                await asyncio.sleep(interval)
                continue
            return self._recorded(action)

    def _pending(self, action: Action) -> CallResult:
        return CallResult(
            tool=action.tool,
            call_id=action.action_id,
            decision=Decision(
                outcome="hold",
                phase="pending_approval",
                reason=action.reason or "",
                rule=action.rule,
                action_id=action.action_id,
                request_id=action.request_id,
                deadline=action.deadline,
            ),
        )

    def _recorded(self, action: Action) -> CallResult:
        """The outcome of a finished action, without running anything."""
        st = action.status
        base: dict[str, Any] = {
            "action_id": action.action_id,
            "request_id": action.request_id,
            "rule": action.rule,
        }
        if st == "completed":
            stored = action.result or {}
            return CallResult(
                tool=action.tool,
                call_id=action.action_id,
                output=stored.get("output"),
                content=stored.get("content"),
                source=stored.get("source", "live"),
                decision=Decision(
                    outcome="allow",
                    phase="completed",
                    reason=action.reason or "",
                    rule=action.rule,
                    action_id=action.action_id,
                    request_id=action.request_id,
                ),
            )
        if st == "denied":
            d = (action.decision or {}).get("decision", {})
            raise denied(
                "approval_denied",
                f"{action.tool}: approval denied by {d.get('approver_id')!r}: {d.get('reason', '')}",
                **base,
            )
        if st == "expired":
            raise denied(
                "approval_timeout",
                f"{action.tool}: no approval arrived before the deadline",
                **base,
            )
        err = action.error or {}
        kind = err.get("kind", "execution_failed")
        if kind == "precondition_failed":
            raise denied(kind, err.get("message") or f"{action.tool}: precondition failed", **base)
        exc = CallFailed(
            err.get("message") or f"{action.tool}: the action failed ({err.get('code')})",
            tool=action.tool,
            code=err.get("code", "call_failed"),
            details={"kind": kind, **base},
        )
        raise exc

    async def _execute_held(
        self, runtime: Runtime, action: Action, resumer: Caller
    ) -> CallResult | None:
        card = runtime._cards.get(action.tool)
        if card is None:
            raise SkillNotFound(
                f"{action.tool}: approved, but no such tool is registered now; register it and "
                "resume again",
                tool=action.tool,
                details={"kind": "unregistered_tool", "action_id": action.action_id},
            )
        if card.digest != action.card_digest:
            actions.transition(
                self.store,
                action.action_id,
                ("approved",),
                {
                    "status": "failed",
                    "finished_at": time.time(),
                    "args": None,
                    "error": orjson.dumps(
                        {
                            "kind": "precondition_failed",
                            "code": "precondition_failed",
                            "message": f"{action.tool}: the tool's code changed after approval "
                            f"({action.card_digest} -> {card.digest}); propose it again",
                        }
                    ).decode(),
                },
                "result",
                {"outcome": "failed", "kind": "precondition_failed"},
                ledger_on=self.ledger_on,
                actor="gate",
            )
            return None
        self.flush()
        problem = approvals.recheck(action, self.config.approvers)
        if problem is not None:
            # The stored grant does not verify under *this* gate's pinned keys (it was applied
            # by a process with other settings): it does not count. Back to pending.
            actions.transition(
                self.store,
                action.action_id,
                ("approved",),
                {"status": "pending", "decision": None},
                "approval_rejected",
                {"problem": problem, "source": "gate recheck", "message": "grant not accepted"},
                ledger_on=self.ledger_on,
                actor="gate",
            )
            return None
        claimed = actions.transition(
            self.store,
            action.action_id,
            ("approved",),
            {"status": "executing", "owner": actions.INSTANCE, "claimed_at": time.time()},
            "claimed",
            {"resumed_by": resumer.principal},
            ledger_on=self.ledger_on,
            actor=resumer.principal,
        )
        if claimed is None:
            return None
        _fault("after_claim")
        stored = claimed.caller
        caller = Caller(
            authority=stored.get("authority", "delegated_tool"),
            principal=stored.get("principal", "local"),
            session_id=stored.get("session_id"),
            capabilities=frozenset(stored.get("capabilities", ())),
        )
        token = _APPROVED.set(claimed)
        try:
            result = await runtime.call(claimed.tool, claimed.args or {}, caller=caller)
        except BaseException as exc:
            self._finish(claimed, None, exc)
            raise
        finally:
            _APPROVED.reset(token)
        _fault("after_execute")
        self._finish(claimed, result, None)
        return self._with_decision(result, None, claimed)

    def _finish(self, action: Action, result: CallResult | None, exc: BaseException | None) -> None:
        privacy = action.privacy
        payload = self._result_payload(result, exc, privacy)
        changes: dict[str, Any] = {"finished_at": time.time(), "args": None}
        if exc is None:
            assert result is not None
            changes["status"] = "completed"
            stored: dict[str, Any] = {"source": result.source}
            if privacy in _RAW_PRIVACY:
                stored.update(output=result.output, content=result.content)
            changes["result"] = orjson.dumps(stored, default=repr).decode()
        else:
            changes["status"] = "failed"
            err = _error_dict(exc, privacy)
            err["kind"] = _failure_kind(exc)
            changes["error"] = orjson.dumps(err).decode()
        actions.transition(
            self.store,
            action.action_id,
            ("executing",),
            changes,
            "result",
            payload,
            ledger_on=self.ledger_on,
        )

    def doctor(self) -> list[dict[str, str]]:
        """Checks for ``skillyard doctor``."""
        out = []
        if self.policy is None:
            out.append(
                {
                    "level": "warning",
                    "message": "gate in ledger-only mode: calls are recorded but no policy decides",
                }
            )
        else:
            signed = f", signed by {self.policy.signed_by}" if self.policy.signed_by else ""
            out.append(
                {
                    "level": "info",
                    "message": f"governed by {self.config.policy} "
                    f"(version {self.policy_version}{signed})",
                }
            )
            if not self.config.approvers:
                out.append(
                    {
                        "level": "warning",
                        "message": "no approver keys are pinned: unsigned approvals are accepted",
                    }
                )
        pending = self.store.query("SELECT count(*) FROM gate_actions WHERE status='pending'")
        out.append({"level": "info", "message": f"{pending[0][0]} action(s) held for approval"})
        if not self.ledger_on:
            out.append({"level": "warning", "message": "the ledger is off: nothing is recorded"})
        return out

    def flush(self) -> None:
        """Commit queued ledger entries now (readers in this process see everything)."""
        if self.journal is not None:
            self.journal.flush()

    async def aclose(self) -> None:
        if self.journal is not None:
            self.journal.close()


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, SkillNotFound):
        return "unregistered_tool"
    if isinstance(exc, PolicyDenied):
        return str(exc.details.get("kind") or exc.code)
    if isinstance(exc, CallFailed):
        return "execution_failed"
    if isinstance(exc, SkillyardError) and exc.code in ("invalid_arguments", "invalid_output"):
        return "precondition_failed" if exc.code == "invalid_arguments" else "execution_failed"
    return "internal_error"
