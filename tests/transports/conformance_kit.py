"""What every transport's fixture in the conformance suite shares: the five tools' contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skillyard import SyncRuntime

ECHO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"echo": {"type": "object"}},
    "required": ["echo"],
    "additionalProperties": False,
}
FLOOD_BYTES = 50_000
CAP = 2_000

# conf-echo, conf-slow, conf-flood, conf-fail and conf-badout, as skill.toml methods.
METHODS = f"""
[[methods]]
name = "echo"
output_schema = "schemas/echo.json"

[[methods]]
name = "slow"
limits = {{ timeout_sec = 1 }}

[[methods]]
name = "flood"
limits = {{ max_output_bytes = {CAP} }}

[[methods]]
name = "fail"

[[methods]]
name = "badout"
output_schema = "schemas/echo.json"
"""


def install_package(rt: SyncRuntime, tmp_path: Path, head: str, files: dict[str, str]) -> None:
    """Write package ``conf`` (``head`` + the five methods, plus ``files``) and add it."""
    pkg = tmp_path / "conf"
    (pkg / "schemas").mkdir(parents=True)
    (pkg / "schemas" / "echo.json").write_text(json.dumps(ECHO_SCHEMA))
    for name, text in files.items():
        (pkg / name).write_text(text)
    (pkg / "skill.toml").write_text(head.strip() + "\n" + METHODS)
    rt.runtime.add_package(pkg)
