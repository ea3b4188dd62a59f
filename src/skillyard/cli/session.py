"""``skillyard session``: persistent Lua runtime sessions (system authority).

Lease records live in the runtime home, so ``create``, ``list``, ``status`` and
``close`` work across invocations. A lease's Lua VM lives in the memory of the
process that created it, so evaluating from a later ``skillyard`` process fails
with ``lease_expired``; use ``session run`` (create, eval each snippet, close)
or ``session repl`` to keep one VM for several evals.
"""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from skillyard.cli.output import echo_json, open_runtime, table, wants_json


def _args(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--args") from exc


def _show(value: Any) -> None:
    if wants_json():
        echo_json(value)
    elif isinstance(value, dict):
        for key in sorted(value):
            click.echo(f"{key}: {value[key]}")
    else:
        click.echo(orjson.dumps(value).decode())


@click.group("session")
def session() -> None:
    """Persistent Lua runtime sessions (globals survive between evals)."""


@session.command("create")
@click.argument("sid")
@click.option(
    "--ttl", "ttl_sec", type=float, default=300, show_default=True, help="Seconds, 1..3600."
)
@click.option("--replace", is_flag=True, help="Replace the sid's active lease.")
def create_cmd(sid: str, ttl_sec: float, replace: bool) -> None:
    """Create a lease for SID."""
    with open_runtime() as rt:
        _show(rt.runtime.sessions().create(sid, ttl_sec, replace))


@session.command("eval")
@click.argument("lease_id")
@click.argument("code")
@click.option("--args", "args_json", help="JSON passed to the code as `...`.")
@click.option("--sid", help="Fail unless the lease belongs to this sid.")
@click.option("--generation", type=int, help="Fail unless the lease is this generation.")
@click.option("--timeout-ms", type=int, default=5000, show_default=True)
def eval_cmd(
    lease_id: str,
    code: str,
    args_json: str | None,
    sid: str | None,
    generation: int | None,
    timeout_ms: int,
) -> None:
    """Evaluate CODE in the lease LEASE_ID (only within the process that created it)."""
    with open_runtime() as rt:
        mgr = rt.runtime.sessions()
        out = rt.run(
            mgr.eval(
                lease_id,
                code,
                _args(args_json),
                sid=sid,
                generation=generation,
                timeout_ms=timeout_ms,
            )
        )
        _show(out if wants_json() else out["value"])


@session.command("run")
@click.argument("sid")
@click.argument("snippets", nargs=-1, required=True)
@click.option("--args", "args_json", help="JSON passed to every snippet as `...`.")
@click.option("--timeout-ms", type=int, default=5000, show_default=True)
def run_cmd(sid: str, snippets: tuple[str, ...], args_json: str | None, timeout_ms: int) -> None:
    """Create a lease for SID, evaluate each snippet in order in one VM, then close it."""
    args = _args(args_json)
    with open_runtime() as rt:
        mgr = rt.runtime.sessions()
        lease = mgr.create(sid, 60, False)
        try:
            values = [
                rt.run(mgr.eval(lease["lease_id"], code, args, timeout_ms=timeout_ms))["value"]
                for code in snippets
            ]
        finally:
            mgr.close(lease["lease_id"])
        if wants_json():
            echo_json({"lease": lease, "values": values})
        else:
            for value in values:
                click.echo(orjson.dumps(value).decode())


@session.command("repl")
@click.argument("sid")
@click.option("--replace", is_flag=True, help="Replace the sid's active lease.")
def repl_cmd(sid: str, replace: bool) -> None:
    """Read Lua lines from stdin and evaluate each in one lease; closes it at EOF."""
    from skillyard.errors import SkillyardError

    with open_runtime() as rt:
        mgr = rt.runtime.sessions()
        lease = mgr.create(sid, 3600, replace)
        try:
            for line in sys.stdin:
                code = line.strip()
                if not code:
                    continue
                try:
                    out = rt.run(mgr.eval(lease["lease_id"], code))
                except SkillyardError as exc:
                    click.echo(f"error [{exc.code}]: {exc.message}", err=True)
                    continue
                for log in out["logs"]:
                    click.echo(log["message"])
                click.echo(orjson.dumps(out["value"]).decode())
        finally:
            mgr.close(lease["lease_id"])


@session.command("status")
@click.argument("lease_id")
def status_cmd(lease_id: str) -> None:
    """Show one lease."""
    with open_runtime() as rt:
        _show(rt.runtime.sessions().status(lease_id))


@session.command("list")
@click.option("--all", "include_ended", is_flag=True, help="Include closed, expired, replaced.")
def list_cmd(include_ended: bool) -> None:
    """List leases."""
    with open_runtime() as rt:
        leases = rt.runtime.sessions().list(include_ended=include_ended)
    if wants_json():
        echo_json(leases)
        return
    table(
        [(x["sid"], x["lease_id"], x["generation"], x["state"], x["expires_at"]) for x in leases],
        ["SID", "LEASE", "GEN", "STATE", "EXPIRES_AT"],
    )


@session.command("close")
@click.argument("lease_id")
def close_cmd(lease_id: str) -> None:
    """Close a lease (later use of its id fails with lease_closed)."""
    with open_runtime() as rt:
        _show(rt.runtime.sessions().close(lease_id))
