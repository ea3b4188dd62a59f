"""The ``[gate]`` section of the runtime config, validated in one place.

::

    [gate]
    policy = "policy.toml"              # enforce this policy (relative to the home)
    # mode = "ledger-only"              # or: record every call, decide nothing
    require_signed_policy = false
    policy_signers = { ops = "ed25519:BASE64" }
    approvers = { alice = "ed25519:BASE64" }   # pinned approver keys
    inbox = "approvals/inbox"           # signed decision files from other processes
    hold_timeout_sec = 3600
    ledger = true

No ``[gate]`` section means no gate: the runtime is ungoverned (and says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from skillyard.errors import ConfigError

KEYS = {
    "policy",
    "mode",
    "require_signed_policy",
    "policy_signers",
    "approvers",
    "inbox",
    "hold_timeout_sec",
    "ledger",
    "poll_interval_ms",
}
DEFAULT_HOLD_TIMEOUT_SEC = 3600.0


@dataclass
class GateConfig:
    """Validated gate settings."""

    mode: Literal["enforce", "ledger-only"] = "enforce"
    policy: Path | None = None
    require_signed_policy: bool = False
    policy_signers: dict[str, bytes] = field(default_factory=dict)
    approvers: dict[str, bytes] = field(default_factory=dict)
    inbox: Path | None = None
    hold_timeout_sec: float = DEFAULT_HOLD_TIMEOUT_SEC
    ledger: bool = True
    poll_interval: float = 0.02


def _keys(raw: Any, where: str) -> dict[str, bytes]:
    from skillyard.gate.keys import KEY_ID_RE, parse_public_key

    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table of id = 'ed25519:BASE64'")
    out = {}
    for key_id, value in raw.items():
        if not KEY_ID_RE.match(str(key_id)):
            raise ConfigError(f"{where}.{key_id}: not a valid key id")
        out[str(key_id)] = parse_public_key(value, where=f"{where}.{key_id}")
    return out


def parse(section: Any, *, base: Path, where: str = "gate") -> GateConfig:
    """Validate a ``[gate]`` table; relative paths resolve against ``base``."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: expected a table")
    unknown = sorted(set(section) - KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(sorted(KEYS))}")
    cfg = GateConfig()
    mode = section.get("mode", "enforce")
    if mode not in ("enforce", "ledger-only"):
        raise ConfigError(f"{where}.mode: {mode!r} is not 'enforce' or 'ledger-only'")
    cfg.mode = mode
    policy = section.get("policy")
    if policy is not None:
        if not isinstance(policy, str) or not policy:
            raise ConfigError(f"{where}.policy: expected the path of a policy file")
        cfg.policy = (base / Path(policy).expanduser()).absolute()
    if cfg.mode == "enforce" and cfg.policy is None:
        raise ConfigError(
            f"{where}: no policy is set; set policy = 'policy.toml' to govern calls, or "
            "mode = 'ledger-only' to record them without deciding (remove [gate] to run ungoverned)"
        )
    if cfg.mode == "ledger-only" and cfg.policy is not None:
        raise ConfigError(f"{where}: mode 'ledger-only' takes no policy; remove one of them")
    for flag in ("require_signed_policy", "ledger"):
        value = section.get(flag, getattr(cfg, flag))
        if not isinstance(value, bool):
            raise ConfigError(f"{where}.{flag}: expected true or false")
        setattr(cfg, flag, value)
    if cfg.mode == "ledger-only" and not cfg.ledger:
        raise ConfigError(f"{where}: mode 'ledger-only' with ledger = false would do nothing")
    if "policy_signers" in section:
        cfg.policy_signers = _keys(section["policy_signers"], f"{where}.policy_signers")
    if cfg.require_signed_policy and not cfg.policy_signers:
        raise ConfigError(f"{where}: require_signed_policy needs pinned keys in policy_signers")
    if "approvers" in section:
        cfg.approvers = _keys(section["approvers"], f"{where}.approvers")
    inbox = section.get("inbox")
    if inbox is not None:
        if not isinstance(inbox, str) or not inbox:
            raise ConfigError(f"{where}.inbox: expected a directory path")
        cfg.inbox = (base / Path(inbox).expanduser()).absolute()
    timeout = section.get("hold_timeout_sec", cfg.hold_timeout_sec)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{where}.hold_timeout_sec: expected a positive number of seconds")
    cfg.hold_timeout_sec = float(timeout)
    poll = section.get("poll_interval_ms", 20)
    if isinstance(poll, bool) or not isinstance(poll, int | float) or not 1 <= poll <= 5000:
        raise ConfigError(f"{where}.poll_interval_ms: expected 1 to 5000")
    cfg.poll_interval = poll / 1000
    return cfg
