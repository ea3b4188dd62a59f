"""``skillyard approvals list|show|grant|deny``: see and decide held actions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from skillyard.cli.gate_home import CONFIG_OPTION, open_gate_home
from skillyard.cli.output import echo_json, table, wants_json


@click.group("approvals")
def approvals_group() -> None:
    """Actions held for approval, and signed decisions on them."""


@approvals_group.command("list")
@CONFIG_OPTION
@click.option("--all", "show_all", is_flag=True, help="Include decided and finished actions.")
def list_cmd(config_path: str | None, show_all: bool) -> None:
    """Held actions (pending ones unless --all)."""
    from skillyard.gate import actions, approvals
    from skillyard.gate.canon import iso

    gh = open_gate_home(config_path)
    try:
        if gh.gate is not None and gh.gate.inbox is not None:
            approvals.import_inbox(gh.store, gh.gate.inbox, gh.gate.approvers)
        rows = actions.listing(gh.store, status=None if show_all else "pending")
    finally:
        gh.close()
    if wants_json():
        echo_json([a.summary() for a in rows])
        return
    if not rows:
        click.echo("no held actions" if not show_all else "no actions")
        return
    table(
        [
            (
                a.action_id,
                a.tool,
                a.status,
                a.caller.get("principal"),
                ",".join(a.approvers) or "*",
                iso(a.deadline),
            )
            for a in rows
        ],
        ["action", "tool", "status", "principal", "approvers", "deadline"],
    )


@approvals_group.command("show")
@CONFIG_OPTION
@click.argument("action_id")
def show_cmd(config_path: str | None, action_id: str) -> None:
    """One held action: what was asked, under which rule, and what approvers sign."""
    from skillyard.errors import GateError
    from skillyard.gate import actions

    gh = open_gate_home(config_path)
    try:
        action = actions.get(gh.store, action_id)
    finally:
        gh.close()
    if action is None:
        raise GateError(f"no held action {action_id!r}", code="action_not_found")
    data = action.summary()
    if action.args is not None and action.privacy in ("allow-raw", "local-only"):
        data["args"] = action.args
    if wants_json():
        echo_json(data)
        return
    for key, value in data.items():
        click.echo(f"{key:15} {value}")


def _decide(
    config_path: str | None,
    action_id: str,
    kind: str,
    key_file: str | None,
    approver: str | None,
    reason: str,
    out: str | None,
) -> None:
    from skillyard.errors import ConfigError, GateError
    from skillyard.gate import actions, approvals, keys

    gh = open_gate_home(config_path)
    try:
        action = actions.get(gh.store, action_id)
        if action is None:
            raise GateError(f"no held action {action_id!r}", code="action_not_found")
        private = None
        if key_file is not None:
            key_id, private = keys.load_key_file(key_file)
            approver = approver or key_id
        if approver is None:
            raise click.UsageError("give --key KEYFILE (signed) or --approver ID (unsigned)")
        decision = approvals.make_decision(action, kind, approver, reason)
        record = (
            approvals.sign_decision(decision, private)
            if private is not None
            else {"decision": decision}
        )
        if out is not None:
            target = Path(out)
            path = (
                approvals.write_inbox_file(target, record)
                if target.is_dir() or out.endswith("/")
                else _write(target, record)
            )
            if wants_json():
                echo_json({"ok": True, "written": str(path)})
            else:
                click.echo(f"wrote {path}: drop it into the gate's approvals inbox")
            return
        if gh.gate is None:
            raise ConfigError(
                "this home has no [gate] settings, so the pinned approver keys are unknown; "
                "pass --config (the gate's config) or write the decision with --out INBOX_DIR"
            )
        applied = approvals.submit(
            gh.store, record, gh.gate.approvers, source="cli", ledger_on=gh.gate.ledger
        )
    finally:
        gh.close()
    if wants_json():
        echo_json({"ok": True, "action": applied.summary()})
    else:
        click.echo(f"{action_id}: {applied.status} by {approver}")


def _write(path: Path, record: Mapping[str, Any]) -> Path:
    import orjson

    path.write_bytes(orjson.dumps(record))
    return path


def _decision_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--out",
        default=None,
        help="Write the signed decision file here (a file, "
        "or an inbox directory) instead of applying it.",
    )(fn)
    fn = click.option("--reason", default="", help="Why (signed with the decision).")(fn)
    fn = click.option("--approver", default=None, help="Approver id (defaults to the key's id).")(
        fn
    )
    fn = click.option(
        "--key",
        "key_file",
        type=click.Path(dir_okay=False, exists=True),
        default=None,
        help="Approver key file (from `skillyard approve keygen`).",
    )(fn)
    fn = click.argument("action_id")(fn)
    fn = CONFIG_OPTION(fn)
    return fn


@approvals_group.command("grant")
@_decision_options
def grant_cmd(
    config_path: str | None,
    action_id: str,
    key_file: str | None,
    approver: str | None,
    reason: str,
    out: str | None,
) -> None:
    """Grant a held action (signed with --key)."""
    _decide(config_path, action_id, "granted", key_file, approver, reason, out)


@approvals_group.command("deny")
@_decision_options
def deny_cmd(
    config_path: str | None,
    action_id: str,
    key_file: str | None,
    approver: str | None,
    reason: str,
    out: str | None,
) -> None:
    """Deny a held action (signed with --key)."""
    _decide(config_path, action_id, "denied", key_file, approver, reason, out)
