"""``skillyard serve``: expose the runtime to agents (``serve mcp``)."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

import click

from skillyard.cli.output import echo_json, home_option

DEFAULT_TOKEN_ENV = "SKILLYARD_MCP_TOKEN"


@click.group("serve")
def serve() -> None:
    """Serve the runtime's skills to agents."""


def _split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"{addr!r}: expected HOST:PORT, e.g. 127.0.0.1:8765")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def _print_config(http: str | None, token_env: str, name: str) -> None:
    exe = shutil.which("skillyard") or os.path.abspath(sys.argv[0])
    entry: dict[str, Any]
    if http:
        host, port = _split_addr(http)
        shown = f"[{host}]" if ":" in host else host
        entry = {"type": "http", "url": f"http://{shown}:{port}/mcp"}
        if os.environ.get(token_env):
            entry["headers"] = {"Authorization": f"Bearer ${{{token_env}}}"}
    else:
        args = ["serve", "mcp"]
        home = home_option()
        if home:
            args = ["--home", os.path.abspath(home), *args]
        entry = {"command": exe, "args": args}
    echo_json({"mcpServers": {name: entry}})


@serve.command("mcp")
@click.option("--http", "http", metavar="HOST:PORT", help="Serve streamable HTTP, not stdio.")
@click.option(
    "--token-env",
    default=DEFAULT_TOKEN_ENV,
    show_default=True,
    help="Environment variable holding the bearer token HTTP clients must send.",
)
@click.option("--allow-origin", multiple=True, help="An extra allowed Origin (HTTP).")
@click.option("--include", multiple=True, help="Glob of tool names to expose (repeatable).")
@click.option("--exclude", multiple=True, help="Glob of tool names to hide (repeatable).")
@click.option("--authority", type=click.Choice(["delegated_tool", "system"]), default=None)
@click.option("--mapping", type=click.Choice(["method", "skill"]), default=None)
@click.option("--page-size", type=int, default=None)
@click.option("--name", default=None, help="Server name shown to clients.")
@click.option("--print-config", is_flag=True, help="Print the client config snippet and exit.")
def mcp_cmd(
    http: str | None,
    token_env: str,
    allow_origin: tuple[str, ...],
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    authority: str | None,
    mapping: str | None,
    page_size: int | None,
    name: str | None,
    print_config: bool,
) -> None:
    """Serve skills as MCP tools over stdio (default) or streamable HTTP."""
    if print_config:
        _print_config(http, token_env, name or "skillyard")
        return
    import asyncio

    from skillyard.runtime import Runtime
    from skillyard.serve.mcp import McpServer, ServeOptions

    runtime = Runtime.open(home_option())
    options = ServeOptions.from_config(
        runtime.config,
        include=include,
        exclude=exclude,
        authority=authority,
        mapping=mapping,
        page_size=page_size,
        name=name,
    )
    server = McpServer(runtime, options)
    for problem in runtime.problems:  # stderr: stdout may be the protocol channel
        click.echo(f"skillyard: {problem.kind} {problem.path}: {problem.message}", err=True)

    async def main() -> None:
        try:
            if http:
                from skillyard.serve.mcp_http import serve_http

                host, port = _split_addr(http)
                token = os.environ.get(token_env) or None
                await serve_http(server, host, port, token=token, origins=allow_origin)
            else:
                from skillyard.serve.mcp_stdio import serve_stdio

                await serve_stdio(runtime, server)
        finally:
            await runtime.aclose()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
