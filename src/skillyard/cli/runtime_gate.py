"""``skillyard runtime ...``: long-running runtime services (the gate sidecar)."""

from __future__ import annotations

import sys

import click


@click.group("runtime")
def runtime_group() -> None:
    """Run skillyard as a service for other programs."""


@runtime_group.command("gate")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Sidecar config (JSON or TOML): home, project_id, gate {policy, approvers, ...}.",
)
def gate_cmd(config_path: str) -> None:
    """Serve the Lodestar governance-gate protocol (NDJSON-RPC) on stdin/stdout."""
    from skillyard.serve.gate_rpc import main

    sys.exit(main(config_path))
