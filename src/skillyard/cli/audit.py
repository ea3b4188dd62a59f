"""``skillyard audit tail|show|verify|export``: read and check the ledger."""

from __future__ import annotations

import sys
from typing import Any

import click

from skillyard.cli.gate_home import CONFIG_OPTION, open_gate_home
from skillyard.cli.output import echo_json, table, wants_json


@click.group("audit")
def audit_group() -> None:
    """The tamper-evident ledger of every governed call."""


def _rows(entries: list[dict[str, Any]]) -> None:
    table(
        [
            (
                e["seq"],
                e["at"],
                e["event"],
                e["actor"],
                e["tool"],
                e["action_id"],
                _brief(e["payload"]),
            )
            for e in entries
        ],
        ["seq", "at", "event", "actor", "tool", "action", "details"],
    )


def _brief(payload: object) -> str:
    if not isinstance(payload, dict):
        return str(payload)[:60]
    keys = ("outcome", "result", "kind", "rule", "source", "approver_id", "problem")
    return " ".join(f"{k}={payload[k]}" for k in keys if payload.get(k) is not None)[:80]


@audit_group.command("tail")
@CONFIG_OPTION
@click.option("-n", "count", default=20, show_default=True, help="How many entries.")
def tail_cmd(config_path: str | None, count: int) -> None:
    """The last entries."""
    from skillyard.gate import ledger

    gh = open_gate_home(config_path)
    try:
        entries = ledger.tail(gh.store, count)
    finally:
        gh.close()
    if wants_json():
        echo_json(entries)
    else:
        _rows(entries)


@audit_group.command("show")
@CONFIG_OPTION
@click.argument("key")
def show_cmd(config_path: str | None, key: str) -> None:
    """One entry (by seq) or every entry of an action id."""
    from skillyard.errors import GateError
    from skillyard.gate import ledger

    gh = open_gate_home(config_path)
    try:
        entries = ledger.show(gh.store, key)
    finally:
        gh.close()
    if not entries:
        raise GateError(f"no ledger entry or action {key!r}", code="not_found")
    if wants_json():
        echo_json(entries)
    else:
        for e in entries:
            click.echo(" ".join(f"{k}={e[k]}" for k in e if k != "payload"))
            click.echo(f"  payload: {e['payload']}")


@audit_group.command("verify")
@CONFIG_OPTION
@click.option("--expect-head", default=None, help="The head hash recorded elsewhere earlier.")
def verify_cmd(config_path: str | None, expect_head: str | None) -> None:
    """Check the hash chain; exit 1 and name the entry when anything was changed."""
    from skillyard.gate import ledger

    gh = open_gate_home(config_path)
    try:
        count, problems = ledger.verify(gh.store, expect_head=expect_head)
        head = ledger.head(gh.store)
    finally:
        gh.close()
    if wants_json():
        echo_json(
            {
                "ok": not problems,
                "entries": count,
                "head": f"{head[0]}:{head[1]}",
                "problems": [p.to_dict() for p in problems],
            }
        )
    elif problems:
        for p in problems:
            click.echo(f"TAMPERED at seq {p.seq}: {p.message}", err=True)
    else:
        click.echo(f"ok: {count} entries, chain intact, head {head[0]}:{head[1]}")
    if problems:
        sys.exit(1)


@audit_group.command("export")
@CONFIG_OPTION
@click.option("--out", default="-", help="NDJSON file (default: stdout).")
@click.option("--include-local", is_flag=True, help="Keep raw values of local-only entries.")
def export_cmd(config_path: str | None, out: str, include_local: bool) -> None:
    """Write every entry as NDJSON (local-only raw values become hashes)."""
    from skillyard.gate import ledger

    gh = open_gate_home(config_path)
    try:
        stream = sys.stdout.buffer if out == "-" else open(out, "wb")  # noqa: SIM115
        try:
            n = 0
            for entry in ledger.entries(gh.store):
                stream.write(ledger.export_line(entry, include_local=include_local))
                n += 1
        finally:
            if out != "-":
                stream.close()
            else:
                stream.flush()
    finally:
        gh.close()
    if out != "-":
        click.echo(f"wrote {n} entries to {out}", err=True)
