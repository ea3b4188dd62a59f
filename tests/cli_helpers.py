"""Running the `skillyard` command in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`skillyard --home HOME ARGS...` with $SKILLYARD_HOME removed from the environment."""
    env = {k: v for k, v in os.environ.items() if k != "SKILLYARD_HOME"}
    return subprocess.run(
        [sys.executable, "-m", "skillyard", "--home", str(home), *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=env,
        timeout=60,
    )
