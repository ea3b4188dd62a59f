"""Effective permissions: what one skill may do, as the intersection of its layers.

Layer 0 is what the package declares (a kind it does not declare is denied); every
further layer is an operator grant (a kind it does not mention is not narrowed). A
request is allowed only when every layer allows it, so grants can never widen.

This module holds every permission *decision*; :mod:`skillyard.host.api` calls it
before any handler runs, and handlers that reach further targets (an http
redirect, the files a grep walks) ask the same object again.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillyard.errors import PermissionDenied
from skillyard.host.grants import Layer
from skillyard.host.permissions import HTTP_METHODS

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class FsRule:
    """One compiled fs entry: a real directory, an optional glob below it, a mode."""

    root: str
    regex: re.Pattern[str] | None
    mode: str
    shown: str

    def covers(self, real: str) -> bool:
        if real != self.root and not real.startswith(self.root.rstrip("/") + "/"):
            return False
        if self.regex is None:
            return True
        rel = real[len(self.root) :].lstrip("/")
        # A match on the path or on any ancestor below the root: a matched directory
        # grants what is inside it.
        while rel:
            if self.regex.fullmatch(rel):
                return True
            rel = rel.rpartition("/")[0]
        return False


def _segment(part: str) -> str:
    out = []
    i = 0
    while i < len(part):
        ch = part[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[" and "]" in part[i + 2 :]:
            j = part.index("]", i + 2)
            body = part[i + 1 : j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\").replace("/", "") + "]")
            i = j
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob below a directory: ``*`` and ``?`` stay within one component, ``**`` spans any."""
    out = []
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:.*/)?")
        else:
            out.append(_segment(part) + ("" if last else "/"))
    return re.compile("".join(out), re.S)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The narrowest http settings across layers for one allowed request."""

    max_response_bytes: int
    timeout_sec: float
    allow_private: bool
    allow_loopback: bool


@dataclass(frozen=True, slots=True)
class ShellLimits:
    """The narrowest shell settings across layers."""

    timeout_sec: float
    max_output_bytes: int


class Effective:
    """The permissions of one skill (declared, narrowed by grants), ready to check."""

    def __init__(
        self,
        skill: str,
        layers: Sequence[Layer],
        *,
        skill_dir: str | None,
        workspace: str,
        temp_dir: str,
    ) -> None:
        self.skill = skill
        self.layers = tuple(layers)
        self.declared = self.layers[0].perms
        self.bases = {
            "skill": skill_dir or workspace,
            "workspace": workspace,
            "temp": temp_dir,
        }
        self._by_kind: dict[str, list[Any]] = {}
        self._names_memo: dict[tuple[str, str], str | None] = {}
        self._fs: list[list[FsRule] | None] = [
            self._compile_fs(layer.perms.get("fs"), i == 0) for i, layer in enumerate(self.layers)
        ]

    # -- helpers ---------------------------------------------------------------------

    def _deny(self, message: str, hint: str) -> PermissionDenied:
        return PermissionDenied(f"{message}; {hint}", details={"skill": self.skill})

    def _kind(self, kind: str) -> list[Any]:
        """The value of ``kind`` in every constraining layer (declared always constrains)."""
        out = self._by_kind.get(kind)
        if out is None:
            out = [self.declared.get(kind)]
            out.extend(layer.perms[kind] for layer in self.layers[1:] if kind in layer.perms)
            self._by_kind[kind] = out
        return out

    def base_path(self, base: str, rel: str) -> str:
        """``rel`` (relative or absolute) against a base directory, symlinks resolved."""
        return os.path.realpath(os.path.join(self.bases[base], rel))

    def _compile_fs(self, entries: Any, declared: bool) -> list[FsRule] | None:
        if entries is None:
            return [] if declared else None
        rules = []
        for e in entries:
            parts = e["path"].split("/")
            literal: list[str] = []
            for part in parts:
                if set("*?[") & set(part):
                    break
                literal.append(part)
            rest = "/".join(parts[len(literal) :])
            prefix = "/".join(literal) or ("/" if e["path"].startswith("/") else ".")
            root = self.base_path(e["base"], prefix)
            regex = _glob_regex(rest) if rest else None
            rules.append(FsRule(root, regex, e["mode"], f"{e['path']} ({e['mode']})"))
        return rules

    # -- fs --------------------------------------------------------------------------

    def fs_resolve(self, path: Any, *, write: bool, method: str, follow: bool = True) -> str:
        """The real path for ``path`` if every layer allows it (``rw`` when ``write``).

        With ``follow=False`` a final symlink is not resolved: the path names the link
        itself (stat, exists, remove and rename act on the entry, never on its target).
        """
        if not isinstance(path, str) or not path:
            raise PermissionDenied(f"{method} denied: path must be a non-empty string")
        if "\0" in path:
            raise self._deny(f"{method} denied: path contains a NUL byte", "pass a plain path")
        head, tail = os.path.split(path.rstrip("/") or path)
        if follow or tail in ("", ".", ".."):
            real = self.base_path("skill", path)
        else:
            real = os.path.join(self.base_path("skill", head or "."), tail)
        for rules in self._fs:
            if rules is None:
                continue
            if not any(r.covers(real) and (r.mode == "rw" or not write) for r in rules):
                declared = ", ".join(r.shown for r in self._fs[0] or []) or "none"
                need = "write (rw)" if write else "read"
                raise self._deny(
                    f"{method} denied: {path!r} (resolves to {real}) is outside every directory "
                    f"this skill may {need}; granted: {declared}",
                    "declare the directory under [permissions].fs in skill.toml",
                )
        return real

    def fs_roots(self) -> list[str]:
        """Directories (declared layer) the skill may read: the walk roots for glob/grep."""
        return [r.root for r in self._fs[0] or []]

    # -- http ------------------------------------------------------------------------

    def http_check(self, host: str, port: int, method: str) -> HttpLimits:
        """Whether ``method`` to ``host:port`` is allowed; the narrowest limits if so."""
        if method not in HTTP_METHODS:
            raise PermissionDenied(
                f"http.request denied: method {method!r} is not one of {HTTP_METHODS}"
            )
        host = host.lower().rstrip(".")
        try:
            host = str(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            pass
        limits = HttpLimits(1 << 62, 1e9, True, True)
        for value in self._kind("http"):
            if value is None:
                raise self._deny(
                    f"http.request denied: {self.skill!r} declares no http permission",
                    "add [permissions].http with the hosts it needs",
                )
            match = any(
                _host_match(h["host"], host)
                and method in h["methods"]
                and (h["ports"] is None or port in h["ports"])
                for h in value["hosts"]
            )
            if not match:
                raise self._deny(
                    f"http.request denied: {method} {host}:{port} is not on the allow-list",
                    "add the host (and method) to [permissions].http.hosts",
                )
            limits = HttpLimits(
                min(limits.max_response_bytes, value["max_response_bytes"]),
                min(limits.timeout_sec, value["timeout_sec"]),
                limits.allow_private and value["allow_private"],
                limits.allow_loopback and value["allow_loopback"],
            )
        return limits

    # -- shell -----------------------------------------------------------------------

    def shell_program(self, argv0: str) -> str:
        """The absolute executable for ``argv0`` if it is on every layer's allow-list."""
        if not argv0 or "\0" in argv0:
            raise PermissionDenied("shell.exec denied: argv[0] is empty or contains NUL")
        exe = _which(argv0)
        for value in self._kind("shell"):
            programs = [] if value is None else value["programs"]
            allowed = False
            for prog in programs:
                if prog == argv0 or (exe is not None and _which(prog) == exe):
                    allowed = True
                    break
            if not allowed:
                shown = ", ".join(programs) or "none"
                raise self._deny(
                    f"shell.exec denied: program {argv0!r} is not allowed (allowed: {shown}); "
                    "argv[0] must be one allowed program, never a command line",
                    "add the program to [permissions].shell.programs",
                )
        if exe is None:
            raise PermissionDenied(
                f"shell.exec denied: program {argv0!r} was not found on {SAFE_PATH}"
            )
        return exe

    def shell_cwd(self, cwd: Any) -> str:
        """The real working directory if under a declared ``shell.cwd`` of every layer."""
        values = self._kind("shell")
        if values[0] is None:
            raise self._deny(
                f"shell.exec denied: {self.skill!r} declares no shell permission",
                "add [permissions].shell with the programs it needs",
            )
        first = self.base_path("skill", values[0]["cwd"][0]) if values[0]["cwd"] else None
        if cwd is None:
            if first is None:
                raise self._deny(
                    "shell.exec denied: no working directory is allowed", "set shell.cwd"
                )
            real = first
        elif not isinstance(cwd, str) or not cwd or "\0" in cwd:
            raise PermissionDenied("shell.exec denied: cwd must be a non-empty path string")
        else:
            real = self.base_path("skill", cwd)
        for value in values:
            roots = [self.base_path("skill", c) for c in value["cwd"]]
            if not any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots):
                raise self._deny(
                    f"shell.exec denied: working directory {cwd!r} is not allowed",
                    "add it to [permissions].shell.cwd",
                )
        return real

    def shell_limits(self) -> ShellLimits:
        values = [v for v in self._kind("shell") if v is not None]
        return ShellLimits(
            min(v["timeout_sec"] for v in values), min(v["max_output_bytes"] for v in values)
        )

    # -- names -----------------------------------------------------------------------

    def _names(self, kind: str, name: str, method: str, what: str) -> None:
        key = (kind, name)
        if key in self._names_memo:
            refusal = self._names_memo[key]
        else:
            refusal = None
            for value in self._kind(kind):
                if not value or not any(fnmatch.fnmatchcase(name, p) for p in value):
                    refusal = f"{what} {name!r} is not granted to {self.skill!r}"
                    break
            if len(self._names_memo) < 4096:
                self._names_memo[key] = refusal
        if refusal is not None:
            raise self._deny(f"{method} denied: {refusal}", f"add it to [permissions].{kind}")

    def env(self, name: str) -> None:
        self._names("env", name, "env.get", "environment variable")

    def model(self, kind: str) -> None:
        self._names("models", kind, f"models.{kind}", "model kind")

    def tool(self, name: str) -> None:
        self._names("tools", name, "tools.call", "host tool")

    def tool_allowed(self, name: str) -> bool:
        return all(v and any(fnmatch.fnmatchcase(name, p) for p in v) for v in self._kind("tools"))

    def invoke(self, tool: str, target_skill: str) -> None:
        for value in self._kind("invoke"):
            if not value or not any(
                fnmatch.fnmatchcase(tool, p) or fnmatch.fnmatchcase(target_skill, p) for p in value
            ):
                raise self._deny(
                    f"invoke denied: {self.skill!r} may not call {tool!r}",
                    "add the tool (or its skill id) to [permissions].invoke",
                )

    def invokable_by(self, caller_skill: str, tool: str) -> None:
        """Refuse when this (target) skill's ``can_be_invoked_by`` excludes ``caller_skill``."""
        for i, layer in enumerate(self.layers):
            value = layer.perms.get("can_be_invoked_by")
            if value is None:
                continue  # absent: any skill whose own ``invoke`` allows it may call
            if not any(fnmatch.fnmatchcase(caller_skill, p) for p in value):
                where = "its [permissions].can_be_invoked_by" if i == 0 else layer.source
                raise PermissionDenied(
                    f"invoke denied: {tool!r} may not be called by {caller_skill!r} ({where})",
                    details={"skill": caller_skill, "target": tool},
                )


def _host_match(pattern: str, host: str) -> bool:
    if pattern in ("*", host):
        return True
    return pattern.startswith("*.") and host.endswith(pattern[1:])


def _which(prog: str) -> str | None:
    # Paths are compared as found, not resolved: on multi-call systems (busybox) many
    # programs are links to one binary, and allowing one must not allow them all.
    if "/" in prog:
        if not os.path.isabs(prog) or os.path.normpath(prog) != prog:
            return None
        return prog if os.path.isfile(prog) and os.access(prog, os.X_OK) else None
    return shutil.which(prog, path=SAFE_PATH)


def effective_for(
    skill: str,
    declared: Mapping[str, Any],
    grants: Sequence[Layer],
    *,
    skill_dir: str | None,
    workspace: str | Path,
    temp_dir: str | Path,
) -> Effective:
    """Build the :class:`Effective` permissions of one skill."""
    return Effective(
        skill,
        (Layer("the package's [permissions]", declared), *grants),
        skill_dir=skill_dir,
        workspace=str(workspace),
        temp_dir=str(temp_dir),
    )


__all__ = ["Effective", "FsRule", "HttpLimits", "ShellLimits", "effective_for"]
