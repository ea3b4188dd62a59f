"""Policies: ordered rules, trust levels, tool contracts and the floor no rule can lift.

A policy file (TOML or YAML) holds ``[[rules]]``; the first rule that matches a
call decides, and a call no rule matches is **denied**. Each tool has a contract
(trust level L0-L5, reversibility, blast radius) set by the operator in
``[contracts."glob"]``; tools without one get ``[defaults]`` (built in: L4,
irreversible, external). The floor: L5 is always denied, L4 is always held for
approval, whatever the rules say. See docs/governance.md for the file format.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from skillyard.card import Card
from skillyard.errors import ConfigError
from skillyard.gate.canon import digest_bytes
from skillyard.transports.base import Caller

Effect = Literal["allow", "deny", "require_approval"]
Verdict_ = Literal["allow", "deny", "hold"]
LEVELS = ("L0", "L1", "L2", "L3", "L4", "L5")
LEVEL_NAMES = {
    0: "observe",
    1: "suggest",
    2: "isolated artifact",
    3: "local reversible",
    4: "external / needs approval",
    5: "prohibited",
}
BLAST_RADII = ("none", "local", "external")
EFFECTS = ("allow", "deny", "require_approval")
ARG_OPS = ("eq", "ne", "in", "not_in", "lt", "lte", "gt", "gte", "glob", "exists")
_RULE_KEYS = {
    "name",
    "tool",
    "skill",
    "root",
    "roles",
    "principal",
    "level",
    "min_level",
    "max_level",
    "reversible",
    "blast_radius",
    "permissions",
    "args",
    "effect",
    "approvers",
    "timeout_sec",
    "reason",
}
_CONTRACT_KEYS = {"level", "reversible", "blast_radius"}
_TOP_KEYS = {"version", "description", "defaults", "contracts", "rules"}
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Contract:
    """What the operator says a tool is: trust level, reversibility, blast radius."""

    level: int = 4
    reversible: bool = False
    blast_radius: str = "external"
    source: str = "built-in default"

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": f"L{self.level}",
            "reversible": self.reversible,
            "blast_radius": self.blast_radius,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class ArgTest:
    pointer: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class Rule:
    """One ordered rule: conditions (all must hold) and an effect."""

    name: str
    index: int
    effect: Effect
    tools: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()
    roots: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()
    levels: frozenset[int] = frozenset(range(6))
    reversible: bool | None = None
    blast_radius: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    args: tuple[ArgTest, ...] = ()
    approvers: tuple[str, ...] = ()
    timeout_sec: float | None = None
    reason: str = ""

    def mismatch(self, card: Card, contract: Contract, args: Mapping[str, Any], who: Caller) -> str:
        """Why this rule does not match (empty string when it does)."""
        if self.tools and not _glob_any(card.name, self.tools):
            return f"tool {card.name!r} is not {' or '.join(self.tools)}"
        if self.skills and not _glob_any(card.id, self.skills):
            return f"skill {card.id!r} is not {' or '.join(self.skills)}"
        if self.roots and card.root not in self.roots:
            return f"root {card.root!r} is not {' or '.join(self.roots)}"
        if self.roles and not set(self.roles) & set(card.roles):
            return f"roles {list(card.roles)} share none of {list(self.roles)}"
        if self.principals and not _glob_any(who.principal, self.principals):
            return f"principal {who.principal!r} is not {' or '.join(self.principals)}"
        if contract.level not in self.levels:
            return f"trust level L{contract.level} is outside the rule's levels"
        if self.reversible is not None and contract.reversible != self.reversible:
            return f"reversible is {contract.reversible}"
        if self.blast_radius and contract.blast_radius not in self.blast_radius:
            return f"blast radius {contract.blast_radius!r} is not {' or '.join(self.blast_radius)}"
        for perm in self.permissions:
            if not has_permission(card, perm):
                return f"the tool does not declare permission {perm!r}"
        for test in self.args:
            if not _arg_ok(args, test):
                return f"argument {test.pointer} fails {test.op} {test.value!r}"
        return ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy decided for one call, and why."""

    outcome: Verdict_
    rule: str
    reason: str
    contract: Contract
    approvers: tuple[str, ...] = ()
    timeout_sec: float | None = None
    trace: tuple[dict[str, Any], ...] = ()


@dataclass
class PolicySet:
    """A loaded policy: its rules, contracts and identity (``version``)."""

    rules: tuple[Rule, ...]
    contracts: tuple[tuple[str, Contract], ...] = ()
    default: Contract = field(default_factory=Contract)
    version: str = "none"
    label: str = ""
    path: str | None = None
    signed_by: str | None = None
    _cache: dict[tuple[int, str, str], tuple[Card, Verdict]] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        # Without argument predicates a verdict depends only on the card and the principal.
        self._cacheable = not any(r.args for r in self.rules)

    def contract_for(self, card: Card) -> Contract:
        """The operator's contract for ``card`` (exact name first, then globs in file order)."""
        for pattern, contract in self.contracts:
            if pattern == card.name:
                return contract
        for pattern, contract in self.contracts:
            if fnmatch.fnmatchcase(card.name, pattern):
                return contract
        return self.default

    def evaluate(
        self,
        card: Card,
        args: Mapping[str, Any],
        caller: Caller,
        *,
        explain: bool = False,
    ) -> Verdict:
        """First matching rule, then the floor; nothing matching means deny."""
        key = (id(card), card.name, caller.principal)
        if self._cacheable and not explain:
            hit = self._cache.get(key)
            if hit is not None and hit[0] is card:
                return hit[1]
        contract = self.contract_for(card)
        trace: list[dict[str, Any]] = []
        chosen: Rule | None = None
        for rule in self.rules:
            why = rule.mismatch(card, contract, args, caller)
            if explain:
                trace.append(
                    {"rule": rule.name, "matched": not why, "why": why or "all conditions hold"}
                )
            if not why:
                chosen = rule
                break
        verdict = _floor(chosen, contract, tuple(trace))
        if self._cacheable and not explain:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = (card, verdict)
        return verdict


def _floor(rule: Rule | None, contract: Contract, trace: tuple[dict[str, Any], ...]) -> Verdict:
    if contract.level >= 5:
        return Verdict(
            "deny",
            "floor:L5",
            "trust level L5 (prohibited) is always denied",
            contract,
            trace=trace,
        )
    if rule is None:
        return Verdict(
            "deny", "default:deny", "no rule matches; the default is deny", contract, trace=trace
        )
    reason = rule.reason or f"rule {rule.name!r}"
    if rule.effect == "deny":
        return Verdict("deny", rule.name, reason, contract, trace=trace)
    if rule.effect == "require_approval":
        return Verdict("hold", rule.name, reason, contract, rule.approvers, rule.timeout_sec, trace)
    if contract.level == 4:
        return Verdict(
            "hold",
            rule.name,
            f"{reason}; held: trust level L4 always needs approval (floor)",
            contract,
            rule.approvers,
            rule.timeout_sec,
            trace,
        )
    return Verdict("allow", rule.name, reason, contract, trace=trace)


def has_permission(card: Card, perm: str) -> bool:
    """Whether ``card`` declares ``perm`` (``http``, ``shell``, ``fs``, ``fs:ro``, ``fs:rw``...)."""
    kind, _, mode = perm.partition(":")
    value = card.permissions.get(kind)
    if not value:
        return False
    if kind == "fs" and mode:
        entries = value if isinstance(value, list | tuple) else [value]
        for e in entries:
            m = e.get("mode", "ro") if isinstance(e, Mapping) else "ro"
            if m == mode or (mode == "ro" and m == "rw"):
                return True
        return False
    return True


def _glob_any(value: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def resolve_pointer(doc: Any, pointer: str) -> Any:
    """The value at a JSON pointer (``_MISSING`` when absent)."""
    if pointer in ("", "/"):
        return doc
    node = doc
    for raw in pointer.lstrip("/").split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping):
            if part not in node:
                return _MISSING
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _arg_ok(args: Mapping[str, Any], t: ArgTest) -> bool:
    got = resolve_pointer(args, t.pointer)
    if t.op == "exists":
        return (got is not _MISSING) == bool(t.value)
    if got is _MISSING:
        return False
    op, want = t.op, t.value
    if op == "eq":
        return bool(
            (got == want and type(got) is type(want)) or (_num(got) and _num(want) and got == want)
        )
    if op == "ne":
        return bool(got != want)
    if op == "in":
        return any(got == w for w in want)
    if op == "not_in":
        return all(got != w for w in want)
    if op == "glob":
        return isinstance(got, str) and fnmatch.fnmatchcase(got, want)
    if not (_num(got) and _num(want)):
        return False
    return {"lt": got < want, "lte": got <= want, "gt": got > want, "gte": got >= want}[op]


# -- loading --------------------------------------------------------------------------------


def _level(value: Any, where: str) -> int:
    if isinstance(value, str) and value.upper() in LEVELS:
        return int(value[1])
    raise ConfigError(f"{where}: {value!r} is not a trust level; use one of {', '.join(LEVELS)}")


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{where}: expected a string or a list of strings")


def _contract(data: Any, where: str, base: Contract) -> Contract:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table with level, reversible, blast_radius")
    unknown = sorted(set(data) - _CONTRACT_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(sorted(_CONTRACT_KEYS))}"
        )
    level = _level(data["level"], f"{where}.level") if "level" in data else base.level
    rev = data.get("reversible", base.reversible)
    if not isinstance(rev, bool):
        raise ConfigError(f"{where}.reversible: expected true or false")
    blast = data.get("blast_radius", base.blast_radius)
    if blast not in BLAST_RADII:
        raise ConfigError(f"{where}.blast_radius: {blast!r} is not one of {', '.join(BLAST_RADII)}")
    return Contract(level, rev, blast, where)


def _args(data: Any, where: str) -> tuple[ArgTest, ...]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table of '/json/pointer' = value or {{op = value}}")
    out = []
    for pointer, test in data.items():
        ptr = pointer if pointer.startswith("/") else "/" + pointer
        if isinstance(test, Mapping):
            if len(test) != 1:
                raise ConfigError(
                    f"{where}.{pointer}: give exactly one operator ({', '.join(ARG_OPS)})"
                )
            ((op, value),) = test.items()
            if op not in ARG_OPS:
                raise ConfigError(
                    f"{where}.{pointer}: unknown operator {op!r}; use {', '.join(ARG_OPS)}"
                )
            if op in ("in", "not_in") and not isinstance(value, list):
                raise ConfigError(f"{where}.{pointer}.{op}: expected a list")
            if op in ("lt", "lte", "gt", "gte") and not _num(value):
                raise ConfigError(f"{where}.{pointer}.{op}: expected a number")
            if op == "glob" and not isinstance(value, str):
                raise ConfigError(f"{where}.{pointer}.glob: expected a string pattern")
            out.append(ArgTest(ptr, op, value))
        else:
            out.append(ArgTest(ptr, "eq", test))
    return tuple(out)


def _rule(data: Any, index: int) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table")
    unknown = sorted(set(data) - _RULE_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(sorted(_RULE_KEYS))}"
        )
    effect = data.get("effect")
    if effect not in EFFECTS:
        raise ConfigError(f"{where}.effect: {effect!r} is not one of {', '.join(EFFECTS)}")
    name = data.get("name", f"rule-{index}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: expected a non-empty string")
    levels = set(range(6))
    if "level" in data:
        levels = {_level(v, f"{where}.level") for v in _strs(data["level"], f"{where}.level")}
    if "min_level" in data:
        lo = _level(data["min_level"], f"{where}.min_level")
        levels = {lv for lv in levels if lv >= lo}
    if "max_level" in data:
        hi = _level(data["max_level"], f"{where}.max_level")
        levels = {lv for lv in levels if lv <= hi}
    rev = data.get("reversible")
    if rev is not None and not isinstance(rev, bool):
        raise ConfigError(f"{where}.reversible: expected true or false")
    timeout = data.get("timeout_sec")
    if timeout is not None and (not _num(timeout) or timeout <= 0):
        raise ConfigError(f"{where}.timeout_sec: expected a positive number of seconds")
    if effect != "require_approval" and ("approvers" in data or timeout is not None):
        raise ConfigError(
            f"{where}: approvers and timeout_sec only apply to effect 'require_approval'"
        )
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        raise ConfigError(f"{where}.reason: expected a string")
    blast = _strs(data.get("blast_radius", []), f"{where}.blast_radius")
    for b in blast:
        if b not in BLAST_RADII:
            raise ConfigError(f"{where}.blast_radius: {b!r} is not one of {', '.join(BLAST_RADII)}")
    perms = _strs(data.get("permissions", []), f"{where}.permissions")
    for p in perms:
        if not re.match(r"^(fs(:ro|:rw)?|http|shell|env|models|tools|invoke)$", p):
            raise ConfigError(
                f"{where}.permissions: {p!r} is not a permission (http, shell, fs:rw...)"
            )
    return Rule(
        name=name,
        index=index,
        effect=effect,
        tools=_strs(data.get("tool", []), f"{where}.tool"),
        skills=_strs(data.get("skill", []), f"{where}.skill"),
        roots=_strs(data.get("root", []), f"{where}.root"),
        roles=_strs(data.get("roles", []), f"{where}.roles"),
        principals=_strs(data.get("principal", []), f"{where}.principal"),
        levels=frozenset(levels),
        reversible=rev,
        blast_radius=blast,
        permissions=perms,
        args=_args(data.get("args", {}), f"{where}.args"),
        approvers=_strs(data.get("approvers", []), f"{where}.approvers"),
        timeout_sec=float(timeout) if timeout is not None else None,
        reason=reason,
    )


def parse_policy(data: Any, *, version: str, path: str | None = None) -> PolicySet:
    """Build a :class:`PolicySet` from parsed TOML/YAML, validating everything first."""
    if not isinstance(data, Mapping):
        raise ConfigError("a policy must be a table with [[rules]]")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}")
    default = _contract(data.get("defaults", {}), "defaults", Contract())
    raw_contracts = data.get("contracts", {})
    if not isinstance(raw_contracts, Mapping):
        raise ConfigError('contracts: expected a table of "tool glob" = {level = ...}')
    contracts = tuple(
        (str(k), _contract(v, f"contracts.{k}", Contract())) for k, v in raw_contracts.items()
    )
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise ConfigError("rules: expected an array of tables ([[rules]])")
    rules = tuple(_rule(r, i) for i, r in enumerate(raw_rules))
    names = [r.name for r in rules]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"rules: the name {dup!r} is used twice; rule names must be unique")
    label = data.get("version", "")
    if not isinstance(label, str | int):
        raise ConfigError("version: expected a string")
    return PolicySet(rules, contracts, default, version, str(label), path)


def load_policy(
    path: str | Path,
    *,
    require_signed: bool = False,
    signers: Mapping[str, bytes] | None = None,
) -> PolicySet:
    """Load, validate and (when a ``.sig`` is present or required) verify a policy file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"policy file {p} cannot be read: {exc.strerror or exc}") from exc
    version = digest_bytes(raw)[:19]  # "sha256:" + 12 hex
    try:
        text = raw.decode("utf-8")
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"policy file {p}: cannot parse: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"policy file {p}: cannot parse: {exc}") from exc
    try:
        policy = parse_policy(data, version=version, path=str(p))
    except ConfigError as exc:
        raise ConfigError(f"policy file {p}: {exc.message}") from None
    sig_path = p.with_name(p.name + ".sig")
    if sig_path.exists() or require_signed:
        policy.signed_by = verify_policy_signature(raw, sig_path, signers or {}, require_signed)
    if policy.label:
        policy.version = f"{policy.label}@{version}"
    return policy


def verify_policy_signature(
    raw: bytes, sig_path: Path, signers: Mapping[str, bytes], required: bool
) -> str:
    """The signer id of a valid detached signature; raises ConfigError otherwise."""
    import orjson

    from skillyard.gate import keys

    if not sig_path.exists():
        raise ConfigError(
            f"policy {sig_path.with_suffix('')} must be signed (require_signed_policy) and "
            f"{sig_path.name} is missing; sign it with `skillyard policy sign`"
        )
    try:
        sig = orjson.loads(sig_path.read_bytes())
    except orjson.JSONDecodeError:
        raise ConfigError(f"{sig_path}: not JSON; expected {{signer, signature}}") from None
    if not isinstance(sig, dict):
        raise ConfigError(f"{sig_path}: expected an object {{signer, signature}}")
    signer = sig.get("signer")
    if not signers:
        raise ConfigError(
            f"{sig_path}: the policy is signed by {signer!r} but no policy signer keys are pinned "
            "(gate.policy_signers in the config)"
        )
    pub = signers.get(signer) if isinstance(signer, str) else None
    if pub is None:
        raise ConfigError(f"{sig_path}: signer {signer!r} is not a pinned policy signer")
    if not keys.verify(pub, sig.get("signature"), raw):
        raise ConfigError(f"{sig_path}: the signature does not match the policy file; refusing it")
    return str(signer)
