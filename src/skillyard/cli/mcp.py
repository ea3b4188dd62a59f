"""``skillyard mcp``: import MCP servers as skills (``mcp add``) and list their tools."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
import orjson

from skillyard.cli.output import echo_json, home_option, table, wants_json


@click.group("mcp")
def mcp() -> None:
    """Use MCP servers' tools as skills."""


def _toml_str(value: str) -> str:
    return orjson.dumps(value).decode()  # a JSON string is a valid TOML basic string


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint=what)
        out[key] = value
    return out


@mcp.command("add")
@click.argument("name")
@click.argument("command", nargs=-1)
@click.option("--url", help="A streamable HTTP server instead of a command.")
@click.option("--env", "envs", multiple=True, help="KEY=VALUE; VALUE may say ${config:K}/${env:N}.")
@click.option("--header", "headers", multiple=True, help="KEY=VALUE HTTP header (same templates).")
@click.option("--layer", type=click.Choice(["user", "project"]), default="user", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing package of that name.")
def add_cmd(
    name: str,
    command: tuple[str, ...],
    url: str | None,
    envs: tuple[str, ...],
    headers: tuple[str, ...],
    layer: str,
    force: bool,
) -> None:
    """Add an MCP server as the skill NAME: `skillyard mcp add NAME -- COMMAND ARGS...`."""
    from skillyard.errors import ConfigError
    from skillyard.manifests import check_skill_id
    from skillyard.roots import Home
    from skillyard.transports.mcp_catalog import ServerSpec

    check_skill_id(name, file="skillyard mcp add", field_path="NAME")
    if bool(command) == bool(url):
        raise click.UsageError("give either a command after `--` or --url, not both")
    options: dict[str, Any] = {"url": url} if url else {"command": list(command)}
    env, hdrs = _pairs(envs, "--env"), _pairs(headers, "--header")
    if env:
        options["env"] = env
    if hdrs:
        options["headers"] = hdrs
    ServerSpec.parse(name, options, where="skillyard mcp add")  # validate before writing
    home = Home.resolve(home_option())
    roots = home.root_dirs(home.config())[layer]
    pkg = Path(roots[0]) / name
    if pkg.exists() and not force:
        raise ConfigError(f"{pkg} already exists; pass --force to replace it")
    lines = [
        f"id = {_toml_str(name)}",
        'runtime = "mcp"',
        f"description = {_toml_str('MCP server ' + name)}",
        "",
        "[options]",
    ]
    if url:
        lines.append(f"url = {_toml_str(url)}")
    else:
        lines.append("command = [" + ", ".join(_toml_str(a) for a in command) + "]")
    for key, table_ in (("env", env), ("headers", hdrs)):
        if table_:
            body = ", ".join(f"{_toml_str(k)} = {_toml_str(v)}" for k, v in sorted(table_.items()))
            lines.append(f"{key} = {{ {body} }}")
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "skill.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _show(_refresh_one(name), as_json=wants_json(), added=str(pkg))


def _refresh_one(name: str) -> dict[str, Any]:
    from skillyard.runtime import Runtime
    from skillyard.transports.mcp_catalog import refresh

    rt = Runtime.open(home_option())  # a new package has no cached list: this lists it
    try:
        problems = [p.message for p in rt.problems if p.skill_id == name]
        if problems:
            from skillyard.errors import ConfigError

            raise ConfigError(problems[0])
        pkg = rt.packages.get(name)
        cards = pkg.cards if pkg is not None and pkg.cards else refresh(rt, name)
        return {"server": name, "tools": [_card_row(c) for c in cards]}
    finally:
        asyncio.run(rt.aclose())


def _card_row(card: Any) -> dict[str, Any]:
    return {"tool": card.name, "mcp_name": card.method, "description": card.description}


def _show(entry: dict[str, Any], *, as_json: bool, added: str | None = None) -> None:
    if as_json:
        echo_json({"ok": True, **({"path": added} if added else {}), **entry})
        return
    if added:
        click.echo(f"added {entry['server']} at {added}")
    table([(t["tool"], t["description"][:70]) for t in entry["tools"]], ["tool", "description"])


@mcp.command("list")
@click.argument("names", nargs=-1)
@click.option("--refresh", is_flag=True, help="Ask each server for its tools again.")
def list_cmd(names: tuple[str, ...], refresh: bool) -> None:
    """List imported MCP servers and their tools (cached; --refresh asks the servers)."""
    from skillyard.runtime import Runtime
    from skillyard.transports.base import SYSTEM
    from skillyard.transports.mcp_catalog import refresh as do_refresh

    rt = Runtime.open(home_option())
    try:
        servers = sorted(
            {p.id for p in rt.packages.values() if p.runtime == "mcp"}
            | set((rt.config.get("mcp") or {}).get("servers") or {})
            | {p.skill_id for p in rt.problems if p.skill_id and _is_mcp_problem(rt, p)}
        )
        if names:
            servers = [s for s in servers if s in names]
        out = []
        for server in servers:
            entry: dict[str, Any] = {"server": server, "tools": [], "error": None}
            try:
                if refresh:
                    cards = list(do_refresh(rt, server))
                else:
                    cards = [
                        c for c in rt.list(caller=SYSTEM) if c.id == server and c.transport == "mcp"
                    ]
                entry["tools"] = [_card_row(c) for c in cards]
            except Exception as exc:
                entry["error"] = str(exc)
            for p in rt.problems:
                if p.skill_id == server and entry["error"] is None and not entry["tools"]:
                    entry["error"] = p.message
            out.append(entry)
    finally:
        asyncio.run(rt.aclose())
    if wants_json():
        echo_json({"ok": True, "servers": out})
        return
    rows = []
    for entry in out:
        if entry["error"]:
            rows.append((entry["server"], "", f"error: {entry['error'][:90]}"))
        for t in entry["tools"]:
            rows.append((entry["server"], t["tool"], t["description"][:70]))
    table(rows, ["server", "tool", "description"])


def _is_mcp_problem(rt: Any, problem: Any) -> bool:
    path = Path(problem.path) / "skill.toml"
    try:
        return 'runtime = "mcp"' in path.read_text(encoding="utf-8")
    except OSError:
        return False
