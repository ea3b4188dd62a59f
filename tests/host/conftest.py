from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skillyard import SyncRuntime

# A Python skill that runs one host method given in its arguments and reports the
# outcome as data, so tests can see the error code and message the skill saw.
PROBE = """
async def probe(args, ctx):
    try:
        return {"ok": True, "value": await ctx.host.dispatch(args["method"], args.get("params") or {})}
    except Exception as exc:
        return {"ok": False, "type": type(exc).__name__, "code": getattr(exc, "code", None),
                "message": str(exc)}
"""


def write_skill(
    root: Path,
    skill_id: str,
    permissions: str,
    *,
    code: str = PROBE,
    methods: tuple[str, ...] = ("probe",),
    extra: str = "",
) -> Path:
    """A python skill package ``root/skill_id`` with the given [permissions] TOML body."""
    pkg = root / skill_id
    pkg.mkdir(parents=True, exist_ok=True)
    body = [
        f'id = "{skill_id}"',
        'runtime = "python"',
        'entry = "skill.py"',
        extra,
        "[permissions]",
        textwrap.dedent(permissions),
    ]
    for m in methods:
        body += ["[[methods]]", f'name = "{m}"']
    (pkg / "skill.toml").write_text("\n".join(body) + "\n")
    (pkg / "skill.py").write_text(textwrap.dedent(code))
    return pkg


class Probe:
    """Call host methods as one tool registered in code, with the given permissions."""

    def __init__(self, rt: SyncRuntime, tool: str) -> None:
        self.rt = rt
        self.tool = tool

    def __call__(self, method: str, /, **params: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.rt.call(self.tool, {"method": method, "params": params}).output
        return out

    def value(self, method: str, /, **params: Any) -> Any:
        out = self(method, **params)
        assert out["ok"], out
        return out["value"]

    def denied(self, method: str, /, **params: Any) -> str:
        out = self(method, **params)
        assert not out["ok"] and out["code"] == "permission_denied", out
        assert f"{method} denied: " in out["message"], out  # what was refused, then why
        return str(out["message"])

    def error(self, method: str, /, **params: Any) -> dict[str, Any]:
        out = self(method, **params)
        assert not out["ok"], out
        return out


async def _probe(args: dict[str, Any], ctx: Any) -> Any:
    try:
        return {"ok": True, "value": await ctx.host.dispatch(args["method"], args["params"])}
    except Exception as exc:
        return {
            "ok": False,
            "type": type(exc).__name__,
            "code": getattr(exc, "code", None),
            "message": str(exc),
        }


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def make_probe(workspace: Path) -> Iterator[Callable[..., Probe]]:
    """``make_probe(permissions, config=...)`` -> a Probe over a fresh in-memory runtime."""
    runtimes: list[SyncRuntime] = []

    def make(
        permissions: dict[str, Any],
        *,
        config: dict[str, Any] | None = None,
        tool: str = "probe-run",
    ) -> Probe:
        cfg = {"host": {"workspace": str(workspace)}}
        cfg.update(config or {})
        rt = SyncRuntime.memory(config=cfg)
        runtimes.append(rt)
        rt.tool(tool, permissions=permissions)(_probe)
        return Probe(rt, tool)

    yield make
    for rt in runtimes:
        rt.close()
