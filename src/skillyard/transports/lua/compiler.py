"""Lua source to bytecode, once per file, in a VM that never runs skill code."""

from __future__ import annotations

import threading
from pathlib import Path

from skillyard.errors import SkillError, TransportError
from skillyard.transports.lua.isolate import MB

MAX_SOURCE_BYTES = 4 * MB


class Compiler:
    """Compiles Lua source to bytecode once, in a VM that never runs skill code."""

    def __init__(self) -> None:
        import lupa.lua54 as lupa

        self._lock = threading.Lock()
        rt = lupa.LuaRuntime(encoding=None, register_eval=False, register_builtins=False)
        self._compile = rt.eval(
            "function(src, name) local f, err = load(src, name, 't')"
            " if not f then return nil, err end return string.dump(f) end"
        )
        self._cache: dict[tuple[str, int, int], bytes] = {}
        self._by_digest: dict[tuple[Path, str], bytes] = {}

    def compile(self, path: Path, chunkname: str, digest: str = "") -> bytes:
        """Bytecode of the Lua file at ``path``: cached by package digest, else by size and mtime."""
        if digest:
            hit = self._by_digest.get((path, digest))
            if hit is not None:
                return hit
        try:
            st = path.stat()
        except OSError as exc:
            raise TransportError(f"cannot read {chunkname}: {exc.strerror}") from exc
        key = (str(path), st.st_size, st.st_mtime_ns)
        hit = self._cache.get(key)
        if hit is not None:
            if digest:
                self._by_digest[(path, digest)] = hit
            return hit
        if st.st_size > MAX_SOURCE_BYTES:
            raise TransportError(
                f"{chunkname} is {st.st_size} bytes; the limit is {MAX_SOURCE_BYTES}"
            )
        source = path.read_bytes()
        if source.startswith(b"\x1bLua"):
            raise TransportError(f"{chunkname}: precompiled Lua bytecode is refused; ship source")
        with self._lock:
            result = self._compile(source, ("@" + chunkname).encode())
        code = result[0] if isinstance(result, tuple) else result
        if code is None:
            err = result[1].decode("utf-8", "replace") if isinstance(result, tuple) else "?"
            raise SkillError(f"{chunkname} does not compile: {err}")
        self._cache[key] = code
        if digest:
            self._by_digest[(path, digest)] = code
        return bytes(code)


__all__ = ["MAX_SOURCE_BYTES", "Compiler"]
