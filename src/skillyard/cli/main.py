"""The ``skillyard`` command: a lazy group, so ``skillyard --help`` imports almost nothing.

Exit codes (also in docs/cli.md):

    0  success
    1  the skill ran and failed (skill error, timeout, crash, invalid output)
    2  usage or input error (bad arguments, malformed manifest or config)
    3  not found (tool, package, action)
    4  refused (permission denied, policy denied, approval invalid)
    5  pending: the call is held for approval
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# name -> "module:attribute"; each module holds one command or command group.
COMMANDS: dict[str, str] = {
    "list": "skillyard.cli.skills:list_cmd",
    "describe": "skillyard.cli.skills:describe_cmd",
    "call": "skillyard.cli.skills:call_cmd",
    "validate": "skillyard.cli.skills:validate_cmd",
    "init": "skillyard.cli.skills:init_cmd",
    "doctor": "skillyard.cli.skills:doctor_cmd",
    "policy": "skillyard.cli.policy:policy_group",
    "approve": "skillyard.cli.approve:approve_group",
    "approvals": "skillyard.cli.approvals:approvals_group",
    "audit": "skillyard.cli.audit:audit_group",
    "runtime": "skillyard.cli.runtime_gate:runtime_group",
    "config": "skillyard.cli.config:config_group",
    "cache": "skillyard.cli.cache:cache_cmd",
    "serve": "skillyard.cli.serve:serve",
    "mcp": "skillyard.cli.mcp:mcp",
    "session": "skillyard.cli.session:session",
}

# One-line help per command, so `skillyard --help` lists them without importing them.
SUMMARIES: dict[str, str] = {
    "list": "List the tools visible to the caller.",
    "describe": "Show a tool's card: schemas, policy, limits, permissions, help.",
    "call": "Call TOOL with ARGS_JSON (a JSON object; '-' reads stdin).",
    "validate": "Validate the skill package in PATH and show its tools.",
    "init": "Scaffold a working skill package NAME.",
    "doctor": "Check the runtime home: roots, packages that did not load, and why.",
    "policy": "Governance policies: check, explain, sign.",
    "approve": "Approver keys.",
    "approvals": "Actions held for approval, and signed decisions on them.",
    "audit": "The tamper-evident ledger of every governed call.",
    "runtime": "Run skillyard as a service for other programs (the gate sidecar).",
    "config": "Per-skill configuration values (declared in skill.toml [[config]]).",
    "cache": "Inspect and clear the persistent call result cache.",
    "serve": "Serve the runtime's skills to agents (MCP).",
    "mcp": "Use MCP servers' tools as skills.",
    "session": "Persistent Lua runtime sessions (globals survive between evals).",
}

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_PENDING = range(6)


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an error."""
    from skillyard import errors as e

    if isinstance(exc, e.SkillNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, e.PermissionDenied | e.GateError):
        return EXIT_REFUSED
    if isinstance(exc, e.InvalidArguments | e.ManifestError | e.ConfigError):
        return EXIT_USAGE
    return EXIT_FAILED


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            summary = SUMMARIES.get(name)
            if summary is None:  # a command without a summary is imported for its help
                cmd = self.get_command(ctx, name)
                summary = cmd.get_short_help_str(limit=70) if cmd is not None else ""
            rows.append((name, summary))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        cmd: click.Command = getattr(importlib.import_module(module), attr)
        return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home", envvar="SKILLYARD_HOME", type=click.Path(file_okay=False), help="Runtime home."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.version_option("0.1.0", prog_name="skillyard")
@click.pass_context
def cli(ctx: click.Context, home: str | None, as_json: bool) -> None:
    """skillyard: run AI-agent skills safely, fast, and under governance."""
    ctx.obj = {"home": home, "json": as_json}


def main(argv: list[str] | None = None) -> Any:
    """Entry point: user errors become a message and an exit code, never a traceback."""
    from skillyard.errors import SkillyardError

    try:
        return cli.main(args=argv, prog_name="skillyard", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE if exc.exit_code == 2 else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except SkillyardError as exc:
        from skillyard.cli.output import emit_error

        args = sys.argv[1:] if argv is None else argv
        emit_error(exc, as_json="--json" in args)
        sys.exit(exit_code_for(exc))


if __name__ == "__main__":
    main()
