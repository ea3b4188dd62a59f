"""``skillyard cache stats|clear [TOOL]``: look into and empty the call result cache."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from skillyard.cli.output import echo_json, home_option, table, wants_json
from skillyard.memo.cache import Cache


@contextmanager
def _cache() -> Iterator[Cache]:
    from skillyard.memo.config import MemoConfig
    from skillyard.roots import Home
    from skillyard.store import Store

    home = Home.resolve(home_option())
    config = MemoConfig.from_mapping(home.config().get("memo"), base_dir=home.path)
    store = Store(home.db_path)
    cache = Cache(store, config=config)
    try:
        yield cache
    finally:
        cache.close()
        store.close()


@click.group("cache")
def cache_cmd() -> None:
    """Inspect and clear the persistent call result cache."""


@cache_cmd.command("stats")
@click.argument("tool", required=False)
def stats_cmd(tool: str | None) -> None:
    """Entries, size and hit/miss counters, per tool (or for TOOL only)."""
    with _cache() as cache:
        data = cache.stats(tool)
    if wants_json():
        echo_json(data)
        return
    rows = [
        [
            t["tool"],
            t["entries"],
            t["bytes"],
            t["hits"],
            t["misses"],
            t["stores"],
            t["evictions"],
            t["expired"],
        ]
        for t in data["tools"]
    ]
    if rows:
        table(rows, ["tool", "entries", "bytes", "hits", "misses", "stores", "evicted", "expired"])
    else:
        click.echo(f"no cache entries{f' for {tool}' if tool else ''}")
    ttl = data["default_ttl_sec"]
    click.echo(
        f"\ntotal {data['entries']} entries, {data['bytes']} bytes "
        f"(cap {data['max_entries']} entries, {data['max_bytes']} bytes; "
        f"default ttl {'none' if ttl is None else f'{ttl:g} s'})"
    )


@cache_cmd.command("clear")
@click.argument("tool", required=False)
@click.option("--expired", is_flag=True, help="Remove only entries whose TTL has passed.")
def clear_cmd(tool: str | None, expired: bool) -> None:
    """Remove every cache entry (of TOOL, or only expired ones with --expired)."""
    with _cache() as cache:
        removed = cache.clear(tool, expired_only=expired)
    if wants_json():
        echo_json({"ok": True, "removed": removed, "tool": tool, "expired_only": expired})
    else:
        what = "expired entries" if expired else "entries"
        click.echo(f"removed {removed} {what}{f' of {tool}' if tool else ''}")
