"""Governance: policies, trust levels, signed approvals, durable holds and the ledger.

``install(runtime)`` (listed in ``skillyard.runtime.EXTENSIONS``) reads
``runtime.config["gate"]``:

- no ``[gate]`` section: nothing is installed and the runtime is **ungoverned**
  (:func:`status` and ``skillyard policy status`` say so);
- ``policy = "..."``: every call is decided by the policy and recorded;
- ``mode = "ledger-only"``: every call is recorded, nothing is decided.

A policy that fails to load or verify makes opening the runtime fail: the
runtime never falls back to running ungoverned. Heavy modules load only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skillyard.gate.middleware import Gate
    from skillyard.runtime import Runtime


def install(runtime: Runtime) -> None:
    """Install the gate as the outermost middleware when ``[gate]`` is configured."""
    section = runtime.config.get("gate")
    if section is None:
        return
    from skillyard.gate.config import parse
    from skillyard.gate.middleware import Gate

    base = runtime.home.path if runtime.home is not None else Path.cwd()
    runtime.use(Gate(runtime, parse(section, base=base)), first=True)


def find(runtime: Runtime) -> Gate | None:
    """The gate installed in ``runtime`` (``None`` when it is ungoverned)."""
    from skillyard.gate.middleware import Gate

    for mw in runtime.middleware:
        if isinstance(mw, Gate):
            return mw
    return None


def status(runtime: Runtime) -> dict[str, Any]:
    """How ``runtime`` is governed, for ``doctor`` and ``policy status``."""
    gate = find(runtime) if runtime.config.get("gate") is not None else None
    if gate is None:
        return {
            "governed": False,
            "mode": "ungoverned",
            "message": "no [gate] section: calls are neither decided nor recorded",
        }
    policy = gate.policy
    return {
        "governed": policy is not None,
        "mode": gate.config.mode,
        "policy": str(gate.config.policy) if gate.config.policy else None,
        "policy_version": gate.policy_version,
        "policy_signed_by": policy.signed_by if policy else None,
        "rules": len(policy.rules) if policy else 0,
        "approvers": sorted(gate.config.approvers),
        "inbox": str(gate.config.inbox) if gate.config.inbox else None,
        "ledger": gate.ledger_on,
        "recovered": gate.recovered,
    }


__all__ = ["find", "install", "status"]
