"""`skillyard list | describe | call | validate | init | doctor`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from skillyard.cli.output import echo_json, open_runtime, table, wants_json
from skillyard.errors import InvalidArguments, SkillyardError
from skillyard.transports.base import SYSTEM, Caller

AUTHORITY = click.option(
    "--system",
    "system",
    is_flag=True,
    help="Act with system authority (sees ROOT and hidden skills).",
)


def _caller(system: bool) -> Caller:
    return SYSTEM if system else Caller()


@click.command("list")
@AUTHORITY
@click.option(
    "--all", "include_hidden", is_flag=True, help="Include hidden methods (with --system)."
)
def list_cmd(system: bool, include_hidden: bool) -> None:
    """List the tools visible to the caller."""
    with open_runtime() as rt:
        cards = rt.list(caller=_caller(system), include_hidden=include_hidden)
        if wants_json():
            echo_json([c.to_dict() for c in cards])
            return
        if not cards:
            click.echo("no skills found; add packages under the roots (see `skillyard doctor`)")
            return
        table(
            [(c.name, c.transport, c.root, c.version, c.description[:60]) for c in cards],
            ["TOOL", "RUNTIME", "ROOT", "VERSION", "DESCRIPTION"],
        )


@click.command("describe")
@click.argument("tool")
@AUTHORITY
def describe_cmd(tool: str, system: bool) -> None:
    """Show a tool's card: schemas, policy, limits, permissions (and help, if any)."""
    with open_runtime() as rt:
        card = rt.card(tool, caller=_caller(system))
        pkg = rt.runtime.packages.get(card.id)
        help_topics = {k: str(v) for k, v in (pkg.help.items() if pkg else [])}
        if wants_json():
            echo_json({"card": card.to_dict(), "help": help_topics})
            return
        click.echo(click.style(card.name, bold=True) + f"  ({card.transport}, {card.root} root)")
        if card.description:
            click.echo(card.description)
        click.echo(f"version {card.version}   digest {card.digest or '-'}")
        click.echo(f"roles: {', '.join(card.roles)}")
        click.echo("input schema:")
        click.echo(_indent(orjson.dumps(card.input_schema, option=orjson.OPT_INDENT_2).decode()))
        if card.output_schema is not None:
            click.echo("output schema:")
            click.echo(
                _indent(orjson.dumps(card.output_schema, option=orjson.OPT_INDENT_2).decode())
            )
        p, lim = card.policy, card.limits
        click.echo(
            f"policy: privacy={p.privacy} cache={p.cache} cassette={p.cassette} idempotent={p.idempotent}"
        )
        click.echo(f"limits: timeout={lim.timeout_sec:g}s max_output={lim.max_output_bytes}B")
        if card.permissions:
            click.echo("permissions:")
            click.echo(
                _indent(orjson.dumps(dict(card.permissions), option=orjson.OPT_INDENT_2).decode())
            )
        for topic, path in help_topics.items():
            click.echo(f"help [{topic}]: {path}")
        if "main" in help_topics:
            click.echo()
            click.echo(Path(help_topics["main"]).read_text(encoding="utf-8", errors="replace"))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _read_args(args_json: str | None, args_file: str | None) -> dict[str, Any]:
    if args_json is not None and args_file is not None:
        raise click.UsageError("give ARGS_JSON or --args-file, not both")
    if args_file is not None:
        source = "--args-file"
        text = sys.stdin.read() if args_file == "-" else Path(args_file).read_text(encoding="utf-8")
    elif args_json == "-":
        source, text = "stdin", sys.stdin.read()
    elif args_json is not None:
        source, text = "ARGS_JSON", args_json
    else:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidArguments(f"{source} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidArguments(f"{source} must be a JSON object, got {type(value).__name__}")
    return value


@click.command("call")
@click.argument("tool")
@click.argument("args_json", required=False)
@click.option("--args-file", type=str, help="Read the arguments from a JSON file ('-' for stdin).")
@click.option("--stream", is_flag=True, help="Print streamed events as they arrive.")
@click.option(
    "--timeout", type=float, help="Seconds before the call is stopped (at most the card's)."
)
@AUTHORITY
def call_cmd(
    tool: str,
    args_json: str | None,
    args_file: str | None,
    stream: bool,
    timeout: float | None,
    system: bool,
) -> None:
    """Call TOOL with ARGS_JSON (a JSON object; '-' reads stdin)."""
    args = _read_args(args_json, args_file)

    def sink(event: dict[str, Any]) -> None:
        if wants_json():
            sys.stderr.write(orjson.dumps(event).decode() + "\n")
        elif event.get("kind") == "delta" and "text" in event:
            click.echo(event["text"], err=True)
        else:
            click.echo(f"[{event.get('kind')}] {orjson.dumps(event).decode()}", err=True)

    with open_runtime() as rt:
        result = rt.call(
            tool, args, caller=_caller(system), sink=sink if stream else None, timeout=timeout
        )
    if wants_json():
        echo_json({"ok": True, "result": result.to_dict()})
    elif result.pending:
        d = result.decision
        click.echo(
            f"held for approval: action {d.action_id} (request {d.request_id}); "
            f"approve with `skillyard approvals grant {d.action_id}`"
        )
    elif result.output is not None and not isinstance(result.output, str):
        echo_json(result.output)
    elif result.content is not None:
        click.echo(result.content)
    if result.pending:
        from skillyard.cli.main import EXIT_PENDING

        sys.exit(EXIT_PENDING)


@click.command("validate")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
def validate_cmd(path: str) -> None:
    """Validate the skill package in PATH and show the cards it defines."""
    from skillyard.manifests import load_package

    pkg = load_package(Path(path))
    if wants_json():
        echo_json({"ok": True, "id": pkg.id, "cards": [c.to_dict() for c in pkg.cards]})
        return
    click.echo(
        f"ok: {pkg.id} {pkg.version} ({pkg.format}, runtime {pkg.runtime}), {len(pkg.cards)} tool(s)"
    )
    for c in pkg.cards:
        click.echo(f"  {c.name}" + ("  (hidden)" if c.hidden else ""))


@click.command("init")
@click.argument("name")
@click.option("--runtime", "kind", type=click.Choice(["python", "process"]), default="python")
@click.option(
    "--dir", "parent", type=click.Path(file_okay=False), default=".", help="Where to create it."
)
def init_cmd(name: str, kind: str, parent: str) -> None:
    """Scaffold a working skill package NAME."""
    from skillyard.scaffold import scaffold

    path = scaffold(Path(parent), name, kind)
    if wants_json():
        echo_json({"ok": True, "path": str(path)})
    else:
        click.echo(f"created {path}")
        click.echo(f"try: skillyard validate {path}")


@click.command("doctor")
def doctor_cmd() -> None:
    """Check the runtime home: roots, packages that did not load, and why."""
    with open_runtime() as rt:
        runtime = rt.runtime
        home = runtime.home
        roots = home.root_dirs(runtime.config) if home else {}
        report: dict[str, Any] = {
            "home": str(home.path) if home else None,
            "state": str(home.db_path) if home else None,
            "roots": {layer: [str(p) for p in paths] for layer, paths in roots.items()},
            "packages": len(runtime.packages),
            "tools": len(runtime.list(caller=SYSTEM, include_hidden=True)),
            "problems": [p.to_dict() for p in runtime.problems],
            "checks": _checks(runtime),
        }
    if wants_json():
        echo_json(report)
    else:
        click.echo(f"home:   {report['home']}")
        for layer, paths in report["roots"].items():
            for p in paths:
                mark = "" if Path(p).is_dir() else "  (missing)"
                click.echo(f"root {layer:8} {p}{mark}")
        click.echo(f"loaded: {report['packages']} package(s), {report['tools']} tool(s)")
        for check in report["checks"]:
            click.echo(f"{check['level']}: {check['message']}")
        for prob in report["problems"]:
            click.echo(f"{prob['kind']}: [{prob['layer']}] {prob['path']}: {prob['message']}")
    if any(p["kind"] in ("broken", "refused") for p in report["problems"]):
        sys.exit(1)


def _checks(runtime: Any) -> list[dict[str, str]]:
    """Cross-cutting checks each subsystem may extend (gate, host, memo)."""
    out: list[dict[str, str]] = []
    if runtime.config.get("gate") is None:
        out.append(
            {
                "level": "warning",
                "message": "ungoverned: no [gate] section, so no policy decides calls and no "
                "ledger records them (see docs/governance.md)",
            }
        )
    for mw in (*runtime.middleware, getattr(runtime, "host_services", None)):
        check = getattr(mw, "doctor", None)
        if check is not None:
            try:
                out.extend(check())
            except SkillyardError as exc:
                out.append({"level": "error", "message": str(exc)})
    return out
