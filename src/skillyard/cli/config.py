"""`skillyard config get | set | list | delete`: per-skill configuration values.

Values are checked against the package's ``[[config]]`` declarations (type, and the
key must be declared). Sensitive values are never printed: ``get`` and ``list`` show
a mask, and ``set --stdin`` keeps them out of the shell history.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from skillyard.cli.output import echo_json, open_runtime, table, wants_json
from skillyard.errors import SkillNotFound


def _target(rt: Any, skill: str) -> tuple[Any, dict[str, Any] | None]:
    from skillyard.host import services_of
    from skillyard.host.config import decls_of

    pkg = rt.runtime.packages.get(skill)
    if pkg is None:
        raise SkillNotFound(
            f"no loaded package {skill!r}; run `skillyard list` (or `skillyard doctor` if it "
            "did not load)"
        )
    return services_of(rt.runtime).config, decls_of(pkg.config) or None


@click.group("config")
def config_group() -> None:
    """Per-skill configuration values (declared in skill.toml [[config]])."""


@config_group.command("get")
@click.argument("skill")
@click.argument("key")
def get_cmd(skill: str, key: str) -> None:
    """Print one value (sensitive values are masked)."""
    from skillyard.host.config import MASK

    with open_runtime() as rt:
        store, decls = _target(rt, skill)
        sensitive = bool(((decls or {}).get(key) or {}).get("sensitive"))
        value = store.get(skill, decls, key)
    shown = MASK if sensitive and value is not None else value
    if wants_json():
        echo_json({"skill": skill, "key": key, "value": shown, "sensitive": sensitive})
    elif isinstance(shown, str):
        click.echo(shown)
    else:
        import orjson

        click.echo(orjson.dumps(shown).decode())


@config_group.command("set")
@click.argument("skill")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the value from stdin.")
def set_cmd(skill: str, key: str, value: str | None, from_stdin: bool) -> None:
    """Set a value, converted by its declared type (string, integer, number, boolean, json)."""
    from skillyard.host.config import parse_text

    if from_stdin == (value is not None):
        raise click.UsageError("give VALUE or --stdin (exactly one)")
    text = sys.stdin.read().rstrip("\n") if from_stdin else str(value)
    with open_runtime() as rt:
        store, decls = _target(rt, skill)
        decl = (decls or {}).get(key)
        parsed = parse_text(decl, text, where=f"{skill}: config {key!r}")
        store.set(skill, decls, key, parsed)
    if wants_json():
        echo_json({"ok": True, "skill": skill, "key": key})
    else:
        click.echo(f"set {skill} {key}")


@config_group.command("list")
@click.argument("skill")
def list_cmd(skill: str) -> None:
    """Every declared or stored key, its value (masked when sensitive) and where it comes from."""
    with open_runtime() as rt:
        store, decls = _target(rt, skill)
        entries = store.entries(skill, decls)
    if wants_json():
        echo_json({"skill": skill, "config": entries})
        return
    if not entries:
        click.echo(f"{skill} declares no config and none is set")
        return
    rows = []
    for e in entries:
        flags = ",".join(f for f in ("required", "sensitive") if e[f])
        rows.append(
            [e["key"], e["type"], "" if e["value"] is None else e["value"], e["source"], flags]
        )
    table(rows, ["key", "type", "value", "source", "flags"])


@config_group.command("delete")
@click.argument("skill")
@click.argument("key")
def delete_cmd(skill: str, key: str) -> None:
    """Remove a stored value (the declared default applies again)."""
    with open_runtime() as rt:
        store, decls = _target(rt, skill)
        removed = store.delete(skill, decls, key)
    if wants_json():
        echo_json({"ok": True, "skill": skill, "key": key, "deleted": removed})
    else:
        click.echo(f"deleted {skill} {key}" if removed else f"{skill} {key} was not set")
