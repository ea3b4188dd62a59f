"""Shared helpers for CLI commands: opening the runtime, JSON vs table output, errors."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click
import orjson

from skillyard.errors import SkillyardError


def wants_json() -> bool:
    """True when ``--json`` was given on the command line."""
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if isinstance(ctx.obj, dict) and "json" in ctx.obj:
            return bool(ctx.obj["json"])
        ctx = ctx.parent
    return False


def home_option() -> str | None:
    """The ``--home`` given on the command line (or ``$SKILLYARD_HOME``)."""
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if isinstance(ctx.obj, dict) and "home" in ctx.obj:
            home: str | None = ctx.obj["home"]
            return home
        ctx = ctx.parent
    return None


def open_runtime(**kw: Any) -> Any:
    """A :class:`SyncRuntime` on the chosen home."""
    from skillyard.runtime import SyncRuntime

    return SyncRuntime.open(home_option(), **kw)


def echo_json(value: Any) -> None:
    """Print JSON (indented, sorted keys) to stdout."""
    sys.stdout.write(
        orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str).decode()
        + "\n"
    )


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """Print a plain aligned table for people."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        line = "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip()
        click.echo(click.style(line, bold=True) if n == 0 else line)


def emit_error(exc: SkillyardError, *, as_json: bool | None = None) -> None:
    """Report an error: JSON on stdout with ``--json``, else a one-line message on stderr."""
    if as_json if as_json is not None else wants_json():
        echo_json({"ok": False, "error": exc.to_dict()})
    else:
        click.echo(f"error [{exc.code}]: {exc.message}", err=True)
