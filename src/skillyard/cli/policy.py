"""``skillyard policy check|explain|sign|status``: policies and how they decide."""

from __future__ import annotations

from pathlib import Path

import click

from skillyard.cli.gate_home import CONFIG_OPTION
from skillyard.cli.output import echo_json, home_option, table, wants_json


@click.group("policy")
def policy_group() -> None:
    """Governance policies: check, explain, sign."""


def _signers(config_path: str | None) -> tuple[bool, dict[str, bytes]]:
    from skillyard.cli.gate_home import open_gate_home

    gh = open_gate_home(config_path)
    gh.close()
    if gh.gate is None:
        return False, {}
    return gh.gate.require_signed_policy, gh.gate.policy_signers


@policy_group.command("check")
@CONFIG_OPTION
@click.argument("file", type=click.Path(dir_okay=False))
def check_cmd(config_path: str | None, file: str) -> None:
    """Validate a policy file (and its signature when present or required)."""
    from skillyard.gate.policy import load_policy

    required, signers = _signers(config_path)
    policy = load_policy(file, require_signed=required, signers=signers)
    data = {
        "ok": True,
        "file": file,
        "version": policy.version,
        "signed_by": policy.signed_by,
        "rules": [
            {"name": r.name, "effect": r.effect, "tool": list(r.tools) or ["*"]}
            for r in policy.rules
        ],
        "contracts": {k: c.to_dict() for k, c in policy.contracts},
        "default_contract": policy.default.to_dict(),
    }
    if wants_json():
        echo_json(data)
        return
    click.echo(
        f"ok: {file} (version {policy.version}, {len(policy.rules)} rules, "
        f"{'signed by ' + policy.signed_by if policy.signed_by else 'unsigned'})"
    )
    table(
        [(r.index, r.name, r.effect, ",".join(r.tools) or "*") for r in policy.rules],
        ["#", "rule", "effect", "tool"],
    )
    click.echo("anything else: deny. Floor: L5 always denied, L4 always held.")


@policy_group.command("explain")
@CONFIG_OPTION
@click.argument("tool")
@click.argument("args", default="{}")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Policy file (default: the one the home's [gate] uses).",
)
@click.option("--principal", default="local", show_default=True, help="Caller principal.")
def explain_cmd(
    config_path: str | None, tool: str, args: str, policy_file: str | None, principal: str
) -> None:
    """Which rule decides TOOL with ARGS (JSON), and why each earlier rule did not."""
    import orjson

    from skillyard.card import Card
    from skillyard.errors import ConfigError, InvalidArguments
    from skillyard.gate.policy import LEVEL_NAMES, load_policy
    from skillyard.runtime import Runtime
    from skillyard.transports.base import Caller

    try:
        parsed = orjson.loads(args)
    except orjson.JSONDecodeError as exc:
        raise InvalidArguments(f"ARGS is not JSON: {exc.msg}") from None
    if not isinstance(parsed, dict):
        raise InvalidArguments("ARGS must be a JSON object")
    home = None
    config: dict[str, object] = {}
    if config_path is not None:
        from skillyard.serve.gate_rpc import SidecarConfig

        sc = SidecarConfig(config_path)
        home, config = str(sc.home), dict(sc.runtime_config)
    gate_section = None
    if policy_file is None:
        rt = Runtime.open(home or home_option(), config=config)
        gate_section = rt.config.get("gate")
    else:
        rt = Runtime.open(home or home_option(), config={**config, "gate": None})
        rt.config.pop("gate", None)
    try:
        if policy_file is None:
            if not gate_section or not gate_section.get("policy"):
                raise ConfigError("no policy: pass --policy FILE or configure [gate] policy")
            base = rt.home.path if rt.home is not None else Path.cwd()
            policy_file = str(base / gate_section["policy"])
        required, signers = _signers(config_path)
        policy = load_policy(policy_file, require_signed=required, signers=signers)
        card = rt._cards.get(tool)
        known = card is not None
        if card is None:
            skill, _, method = tool.partition("-")
            card = Card(id=skill or tool, name=tool, method=method or tool)
        verdict = policy.evaluate(card, parsed, Caller(principal=principal), explain=True)
    finally:
        import asyncio

        asyncio.run(rt.aclose())
    data = {
        "tool": tool,
        "known_tool": known,
        "outcome": verdict.outcome,
        "rule": verdict.rule,
        "reason": verdict.reason,
        "contract": verdict.contract.to_dict(),
        "approvers": list(verdict.approvers),
        "trace": list(verdict.trace),
        "policy_version": policy.version,
    }
    if wants_json():
        echo_json(data)
        return
    c = verdict.contract
    click.echo(f"tool {tool}{'' if known else ' (not registered here: judged as an unknown tool)'}")
    click.echo(
        f"contract: L{c.level} ({LEVEL_NAMES[c.level]}), reversible={c.reversible}, "
        f"blast radius {c.blast_radius} [{c.source}]"
    )
    for step in verdict.trace:
        mark = "MATCH" if step["matched"] else "skip "
        click.echo(f"  {mark} {step['rule']}: {step['why']}")
    click.echo(f"=> {verdict.outcome.upper()} by {verdict.rule}: {verdict.reason}")


@policy_group.command("sign")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="Signer key file (from `skillyard approve keygen`).",
)
def sign_cmd(file: str, key_file: str) -> None:
    """Write FILE.sig: an Ed25519 signature of the policy file's exact bytes."""
    import orjson

    from skillyard.gate import keys

    key_id, private = keys.load_key_file(key_file)
    raw = Path(file).read_bytes()
    sig = {"signer": key_id, "signature": keys.sign(private, raw)}
    target = Path(file + ".sig")
    target.write_bytes(orjson.dumps(sig, option=orjson.OPT_INDENT_2) + b"\n")
    pub = keys.b64(keys.public_of(private))
    if wants_json():
        echo_json(
            {
                "ok": True,
                "signature_file": str(target),
                "signer": key_id,
                "public_key": f"ed25519:{pub}",
            }
        )
    else:
        click.echo(
            f'wrote {target}; pin the signer: [gate.policy_signers] {key_id} = "ed25519:{pub}"'
        )


@policy_group.command("status")
def status_cmd() -> None:
    """Is this runtime governed, by which policy, with which approvers?"""
    import asyncio

    from skillyard.gate import status
    from skillyard.runtime import Runtime

    rt = Runtime.open(home_option())
    try:
        data = status(rt)
    finally:
        asyncio.run(rt.aclose())
    if wants_json():
        echo_json(data)
    elif not data["governed"] and data["mode"] == "ungoverned":
        click.echo("UNGOVERNED: " + data["message"])
    else:
        for k, v in data.items():
            click.echo(f"{k:18} {v}")
