"""Helpers for the process transport tests: packages written on the fly, process-group checks."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def make_package(
    base: Path,
    name: str,
    script: str,
    *,
    mode: str = "json",
    options: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    methods: list[str] | tuple[str, ...] = ("run",),
    output_schema: dict[str, Any] | None = None,
) -> Path:
    """Write a process skill package ``base/name`` running ``script`` with this interpreter."""
    pkg = base / name
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "main.py").write_text(textwrap.dedent(script))
    lines = [
        'version = "0.1.0"',
        'runtime = "process"',
        'entry = ["{python}", "main.py"]',
        "",
        "[options]",
    ]
    for key, value in {"mode": mode, **(options or {})}.items():
        lines.append(f"{key} = {json.dumps(value)}")
    if limits:
        lines += ["", "[limits]"] + [f"{k} = {json.dumps(v)}" for k, v in limits.items()]
    for method in methods:
        lines += ["", "[[methods]]", f"name = {json.dumps(method)}"]
        if output_schema is not None:
            lines.append('output_schema = "schemas/out.json"')
    if output_schema is not None:
        (pkg / "schemas").mkdir(exist_ok=True)
        (pkg / "schemas" / "out.json").write_text(json.dumps(output_schema))
    (pkg / "skill.toml").write_text("\n".join(lines) + "\n")
    return pkg


def live_members(pgid: int) -> list[int]:
    """Pids of processes in group ``pgid`` that are not zombies (read from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry))
    return out


def wait_group_gone(pgid: int, timeout: float = 5.0) -> list[int]:
    """Poll until no live process is left in ``pgid``; returns what is left at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = live_members(pgid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def is_zombie_or_gone(pid: int) -> str:
    """'gone', 'zombie' or the process state letter."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    state = stat[stat.rindex(")") + 2 :].split()[0]
    return "zombie" if state == "Z" else state


def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    """Poll until ``path`` exists and is non-empty; return its text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if text:
                return text
        time.sleep(0.01)
    raise AssertionError(f"{path} did not appear within {timeout}s")
