"""The same permission checks, reached from a process skill over its reverse JSON-RPC channel."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skillyard import SyncRuntime

WORKER = """
from skillyard.worker import HostError, serve


def probe(args, ctx):
    try:
        return {"ok": True, "value": ctx.host(args["method"], **args.get("params", {}))}
    except HostError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message}


if __name__ == "__main__":
    serve({"probe": probe})
"""

PERMISSIONS = """
fs = { ro = ["data"], rw = ["out"] }
env = ["PROC_GRANTED"]
shell = { programs = ["echo"], cwd = ["."] }
invoke = ["allowed-*"]
"""


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncRuntime]:
    monkeypatch.setenv("PROC_GRANTED", "yes")
    monkeypatch.setenv("PROC_SECRET", "no")
    root = tmp_path / "skills"
    pkg = root / "worker"
    (pkg / "data").mkdir(parents=True)
    (pkg / "out").mkdir()
    (pkg / "data" / "in.txt").write_text("from disk")
    (tmp_path / "outside.txt").write_text("secret")
    (pkg / "skill.toml").write_text(
        textwrap.dedent(
            """
            runtime = "process"
            entry = ["{python}", "main.py"]
            [options]
            mode = "worker"
            [permissions]
            """
        )
        + PERMISSIONS
        + '\n[[methods]]\nname = "probe"\n'
    )
    (pkg / "main.py").write_text(WORKER)
    rt = SyncRuntime.memory(roots={"project": [root]})
    rt.tool("allowed-echo")(lambda args: {"echo": args})
    rt.tool("secret-thing")(lambda args: "never")
    assert not rt.runtime.problems, rt.runtime.problems
    yield rt
    rt.close()


def call(rt: SyncRuntime, method: str, /, **params: Any) -> dict[str, Any]:
    out: dict[str, Any] = rt.call("worker-probe", {"method": method, "params": params}).output
    return out


def test_allowed_host_calls_work_from_a_process_skill(proc: SyncRuntime, tmp_path: Path) -> None:
    assert call(proc, "fs.read_text", path="data/in.txt") == {"ok": True, "value": "from disk"}
    assert call(proc, "fs.write_text", path="out/x.txt", text="hi")["ok"]
    assert (tmp_path / "skills" / "worker" / "out" / "x.txt").read_text() == "hi"
    assert call(proc, "env.get", name="PROC_GRANTED")["value"] == "yes"
    out = call(proc, "shell.exec", argv=["echo", "a; rm -rf /"])
    assert out["value"]["stdout"] == "a; rm -rf /\n"
    assert call(proc, "invoke", tool="allowed-echo", args={"x": 1})["value"] == {"echo": {"x": 1}}
    call(proc, "kv.put", key="k", value=[1, 2])
    assert call(proc, "kv.get", key="k")["value"] == [1, 2]


@pytest.mark.parametrize(
    "method,params,needle",
    [
        ("fs.read_text", {"path": "../../outside.txt"}, "outside every directory"),
        ("fs.read_text", {"path": "/etc/passwd"}, "outside every directory"),
        ("fs.read_text", {"path": "/proc/self/environ"}, "outside every directory"),
        ("fs.write_text", {"path": "data/x.txt", "text": "no"}, "write (rw)"),
        ("env.get", {"name": "PROC_SECRET"}, "not granted"),
        ("shell.exec", {"argv": ["sh", "-c", "echo pwned"]}, "not allowed"),
        ("invoke", {"tool": "secret-thing"}, "may not call"),
        ("models.llm", {"user": "hi"}, "not granted"),
        ("http.request", {"url": "http://169.254.169.254/"}, "no http permission"),
    ],
    ids=["dotdot", "absolute", "proc-self", "write-ro", "env", "shell", "invoke", "models", "http"],
)
def test_refusals_reach_the_process_skill(
    proc: SyncRuntime, tmp_path: Path, method: str, params: dict[str, Any], needle: str
) -> None:
    out = call(proc, method, **params)
    assert out["ok"] is False and out["code"] == "permission_denied", out
    assert f"{method} denied: " in out["message"] and needle in out["message"]
    assert not (tmp_path / "skills" / "worker" / "data" / "x.txt").exists()


def test_symlink_planted_by_the_process_cannot_lead_out(proc: SyncRuntime, tmp_path: Path) -> None:
    link = tmp_path / "skills" / "worker" / "out" / "link"
    link.symlink_to(tmp_path / "outside.txt")
    out = call(proc, "fs.read_text", path="out/link")
    assert out["code"] == "permission_denied" and "resolves to" in out["message"]


def test_host_params_may_be_called_method(proc: SyncRuntime) -> None:
    """http.request takes a ``method`` parameter; the worker helper must pass it through."""
    out = call(proc, "http.request", method="POST", url="http://example.com/")
    assert out["code"] == "permission_denied" and "no http permission" in out["message"]
