"""Helpers for Lua transport tests: write a package, run code, a dict-backed host."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from skillyard import SyncRuntime
from skillyard.errors import HostError, PermissionDenied
from skillyard.transports.base import CallContext


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if not isinstance(value, str) else f'"{value}"'


def write_lua_package(
    root: Path,
    body: str,
    *,
    skill_id: str = "probe",
    limits: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """A native skill.toml package whose method ``run`` executes ``body`` (args in ``args``)."""
    pkg = root / skill_id
    pkg.mkdir(parents=True, exist_ok=True)
    lines = ['runtime = "lua"', 'entry = "main.lua"']
    if limits:
        lines.append("[limits]")
        lines += [f"{k} = {_toml(v)}" for k, v in limits.items()]
    if options:
        lines.append("[options]")
        lines += [f"{k} = {_toml(v)}" for k, v in options.items()]
    lines += ["[[methods]]", 'name = "run"']
    (pkg / "skill.toml").write_text("\n".join(lines) + "\n")
    code = "local M = {}\nfunction M.run(args)\n" + textwrap.indent(textwrap.dedent(body), "  ")
    (pkg / "main.lua").write_text(code + "\nend\nreturn M\n")
    for rel, text in (extra or {}).items():
        target = pkg / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
    return pkg


def run_lua(
    tmp_path: Path,
    body: str,
    args: dict[str, Any] | None = None,
    *,
    rt: SyncRuntime | None = None,
    timeout: float | None = None,
    **kw: Any,
) -> Any:
    """Run ``body`` once in a fresh memory runtime and return the output (errors propagate)."""
    own = rt is None
    runtime = rt or SyncRuntime.memory()
    try:
        write_lua_package(tmp_path, body, **kw)
        runtime.runtime.add_package(tmp_path / kw.get("skill_id", "probe"), root="memory")
        call_kw = {} if timeout is None else {"timeout": timeout}
        return runtime.call(f"{kw.get('skill_id', 'probe')}-run", args or {}, **call_kw).output
    finally:
        if own:
            runtime.close()


class DictHost:
    """A tiny stand-in host API: an in-memory fs, config, cache and models."""

    def __init__(self, *, deny: tuple[str, ...] = (), embed: bool = False, llm: bool = False):
        self.files: dict[str, str] = {}
        self.dirs: set[str] = set()
        self.config: dict[str, Any] = {}
        self.cache: dict[str, Any] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.deny = deny
        self.embed = embed
        self.llm = llm

    def factory(self, ctx: CallContext) -> DictHost:
        return self

    async def dispatch(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append((method, params))
        if method in self.deny:
            raise PermissionDenied(f"host call {method!r} denied by the test host")
        kind, _, op = method.partition(".")
        if kind == "fs":
            path = params.get("path", "")
            if op == "read_text":
                if path not in self.files:
                    raise HostError(f"no such file: {path}", code="not_found")
                return self.files[path]
            if op == "write_text":
                text = params["text"]
                self.files[path] = self.files.get(path, "") + text if params.get("append") else text
                return {"bytes": len(text.encode())}
            if op == "exists":
                return path in self.files or path in self.dirs
            if op == "mkdir":
                self.dirs.add(path)
                return None
            if op == "list":
                prefix = path.rstrip("/") + "/"
                return [
                    {"name": p[len(prefix) :], "type": "file", "size": len(t)}
                    for p, t in sorted(self.files.items())
                    if p.startswith(prefix) and "/" not in p[len(prefix) :]
                ]
        if method == "runtime.info":
            return {
                "workspace": "/ws",
                "cwd": "/skill",
                "temp_dir": "/tmp/x",
                "resources_dir": None,
            }
        if kind == "config":
            key = params.get("key")
            if op == "get":
                return self.config.get(key)
            if op == "has":
                return key in self.config
            if op == "set":
                self.config[key] = params["value"]
                return None
            if op == "delete":
                self.config.pop(key, None)
                return None
            if op == "list":
                return dict(self.config)
        if kind == "cache":
            if op == "put":
                self.cache[params["key"]] = params.get("value")
                return None
            if op == "get":
                return self.cache.get(params["key"])
            if op == "delete":
                self.cache.pop(params["key"], None)
                return None
        if kind == "models":
            if op == "status":
                return {"embed": self.embed, "llm": self.llm}
            if op == "embed" and self.embed:
                text = params["text"].lower()
                return {"vector": [text.count(c) for c in "abcdefghijklmnopqrstuvwxyz"]}
            if op == "llm" and self.llm:
                return {"text": f"summary of {len(params['user'].splitlines())} notes"}
            raise HostError(f"no {op} model is registered", code="model_unavailable")
        if method == "invoke":
            return {"invoked": params["tool"], "args": params["args"]}
        if kind == "tools":
            return ["echo"] if op == "list" else op == "has" and params["name"] == "echo"
        raise HostError(f"{method} is not implemented by the test host", code="not_supported")
