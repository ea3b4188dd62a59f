"""Where governance CLI commands find their state: ``--config`` (a sidecar config) or the home."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from skillyard.cli.output import home_option

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="A `skillyard runtime gate` config: use its home and [gate] settings.",
)


@dataclass
class GateHome:
    """The store and gate settings of one runtime home."""

    path: Path
    store: Any
    gate: Any  # GateConfig | None: None when the home is ungoverned

    def close(self) -> None:
        self.store.close()


def open_gate_home(config_path: str | None) -> GateHome:
    """Open the state of the home named by ``--config`` / ``--home`` (migrated, not loaded)."""
    from skillyard.gate import actions
    from skillyard.gate.config import parse
    from skillyard.roots import Home
    from skillyard.store import Store

    if config_path is not None:
        from skillyard.serve.gate_rpc import SidecarConfig

        sc = SidecarConfig(config_path)
        home = Home(sc.home)
        section: Any = sc.runtime_config["gate"]
        base = home.path
    else:
        home = Home.resolve(home_option())
        section = home.config().get("gate")
        base = home.path
    store = Store(home.db_path)
    actions.migrate(store)
    gate = parse(section, base=base) if section is not None else None
    return GateHome(home.path, store, gate)
