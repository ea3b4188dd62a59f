"""Typed helpers over ``dispatch``: ``ctx.host.fs.read_text(path)`` and friends.

The same classes serve both styles: built over ``Host.dispatch`` every helper
returns an awaitable (``await ctx.host.fs.read_text("a.txt")``); built over
``Host.call_sync`` (``ctx.host.sync``) it returns the value directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Call = Callable[[str, dict[str, Any]], Any]


def _opt(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


class _Ns:
    __slots__ = ("_call",)

    def __init__(self, call: Call) -> None:
        self._call = call


class FsApi(_Ns):
    """``fs.*``: files inside the granted directories."""

    __slots__ = ()

    def read_text(self, path: str, *, encoding: str | None = None) -> Any:
        return self._call("fs.read_text", _opt(path=path, encoding=encoding))

    def read_bytes(self, path: str) -> Any:
        """Returns ``{"data_b64": ...}``."""
        return self._call("fs.read_bytes", {"path": path})

    def write_text(self, path: str, text: str, *, append: bool = False) -> Any:
        return self._call("fs.write_text", {"path": path, "text": text, "append": append})

    def write_bytes(self, path: str, data_b64: str, *, append: bool = False) -> Any:
        return self._call("fs.write_bytes", {"path": path, "data_b64": data_b64, "append": append})

    def list(self, path: str = ".") -> Any:
        return self._call("fs.list", {"path": path})

    def stat(self, path: str) -> Any:
        return self._call("fs.stat", {"path": path})

    def exists(self, path: str) -> Any:
        return self._call("fs.exists", {"path": path})

    def mkdir(self, path: str, *, parents: bool = False) -> Any:
        return self._call("fs.mkdir", {"path": path, "parents": parents})

    def remove(self, path: str, *, recursive: bool = False) -> Any:
        return self._call("fs.remove", {"path": path, "recursive": recursive})

    def rename(self, src: str, dst: str) -> Any:
        return self._call("fs.rename", {"src": src, "dst": dst})

    def copy(self, src: str, dst: str) -> Any:
        return self._call("fs.copy", {"src": src, "dst": dst})

    def glob(self, pattern: str, *, root: str | None = None) -> Any:
        return self._call("fs.glob", _opt(pattern=pattern, root=root))

    def grep(
        self, pattern: str, path: str, *, glob: str | None = None, max_matches: int | None = None
    ) -> Any:
        return self._call(
            "fs.grep", _opt(pattern=pattern, path=path, glob=glob, max_matches=max_matches)
        )


class HttpApi(_Ns):
    """``http.request``."""

    __slots__ = ()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: str | None = None,
        body_b64: str | None = None,
        timeout_ms: int | None = None,
    ) -> Any:
        return self._call(
            "http.request",
            _opt(
                method=method,
                url=url,
                headers=headers,
                body=body,
                body_b64=body_b64,
                timeout_ms=timeout_ms,
            ),
        )

    def get(self, url: str, **kw: Any) -> Any:
        return self.request("GET", url, **kw)


class ShellApi(_Ns):
    """``shell.exec`` (argv form only)."""

    __slots__ = ()

    def exec(
        self,
        argv: list[str],
        *,
        cwd: str | None = None,
        timeout_ms: int | None = None,
        stdin: str | None = None,
    ) -> Any:
        return self._call(
            "shell.exec", _opt(argv=argv, cwd=cwd, timeout_ms=timeout_ms, stdin=stdin)
        )


class StoreApi(_Ns):
    """``kv.*`` / ``cache.*``."""

    __slots__ = ("_prefix",)

    def __init__(self, call: Call, prefix: str) -> None:
        super().__init__(call)
        self._prefix = prefix

    def get(self, key: str) -> Any:
        return self._call(f"{self._prefix}.get", {"key": key})

    def put(self, key: str, value: Any, *, ttl_sec: float | None = None) -> Any:
        return self._call(f"{self._prefix}.put", _opt(key=key, ttl_sec=ttl_sec) | {"value": value})

    def delete(self, key: str) -> Any:
        return self._call(f"{self._prefix}.delete", {"key": key})

    def list(self, prefix: str = "") -> Any:
        return self._call(f"{self._prefix}.list", {"prefix": prefix})


class ConfigApi(_Ns):
    """``config.*``."""

    __slots__ = ()

    def get(self, key: str) -> Any:
        return self._call("config.get", {"key": key})

    def has(self, key: str) -> Any:
        return self._call("config.has", {"key": key})

    def set(self, key: str, value: Any) -> Any:
        return self._call("config.set", {"key": key, "value": value})

    def delete(self, key: str) -> Any:
        return self._call("config.delete", {"key": key})

    def list(self) -> Any:
        return self._call("config.list", {})


class ModelsApi(_Ns):
    """``models.*``."""

    __slots__ = ()

    def status(self) -> Any:
        return self._call("models.status", {})

    def embed(self, text: str) -> Any:
        return self._call("models.embed", {"text": text})

    def llm(self, system: str, user: str, *, options: dict[str, Any] | None = None) -> Any:
        return self._call("models.llm", _opt(system=system, user=user, options=options))


class ToolsApi(_Ns):
    """``tools.*``: host tools."""

    __slots__ = ()

    def list(self) -> Any:
        return self._call("tools.list", {})

    def has(self, name: str) -> Any:
        return self._call("tools.has", {"name": name})

    def call(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return self._call("tools.call", {"name": name, "args": args or {}})


class Helpers:
    """Namespaces over one call function (async ``dispatch`` or blocking ``call_sync``)."""

    __slots__ = ("_call",)

    def __init__(self, call: Call) -> None:
        self._call = call

    # Built on access: binding a host to a call stays cheap when a skill uses none of them.
    @property
    def fs(self) -> FsApi:
        return FsApi(self._call)

    @property
    def http(self) -> HttpApi:
        return HttpApi(self._call)

    @property
    def shell(self) -> ShellApi:
        return ShellApi(self._call)

    @property
    def kv(self) -> StoreApi:
        return StoreApi(self._call, "kv")

    @property
    def cache(self) -> StoreApi:
        return StoreApi(self._call, "cache")

    @property
    def config(self) -> ConfigApi:
        return ConfigApi(self._call)

    @property
    def models(self) -> ModelsApi:
        return ModelsApi(self._call)

    @property
    def tools(self) -> ToolsApi:
        return ToolsApi(self._call)

    def env(self, name: str) -> Any:
        """``env.get``: a granted environment variable (or None)."""
        return self._call("env.get", {"name": name})

    def invoke(self, tool: str, args: dict[str, Any] | None = None) -> Any:
        """Call another skill through the pipeline; returns its output."""
        return self._call("invoke", {"tool": tool, "args": args or {}})

    def log(self, message: str, *, level: str = "info", **fields: Any) -> Any:
        return self._call("log", {"level": level, "message": message, "fields": fields})

    def info(self) -> Any:
        return self._call("runtime.info", {})


__all__ = [
    "ConfigApi",
    "FsApi",
    "Helpers",
    "HttpApi",
    "ModelsApi",
    "ShellApi",
    "StoreApi",
    "ToolsApi",
]
