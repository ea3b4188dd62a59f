"""WASI for skill modules: the granted directories as preopens, stdout/stderr as call logs.

No argv, no environment, no stdin. Output goes to two private files per store (on
``/dev/shm`` when the system has it), not Python callbacks: wasmtime writes WASI
output from its own threads, and a Python callback there can run while the
interpreter shuts down. A flood is cut by the epoch ticker while the call runs.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import tempfile
from pathlib import Path

import wasmtime

from skillyard.errors import SkillyardError
from skillyard.transports.base import CallContext
from skillyard.transports.wasm import hostcalls

_out_dir: Path | None = None
_out_ids = itertools.count(1)
MAX_OUTPUT_FILE = 1024 * 1024  # WASI output kept on disk per store, at most


def output_dir() -> Path:
    global _out_dir
    if _out_dir is None:
        # Memory-backed when the system has it: these files live for one call.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        _out_dir = Path(tempfile.mkdtemp(prefix="skillyard-wasm-out-", dir=shm))  # mode 0700
        atexit.register(shutil.rmtree, _out_dir, True)
    return _out_dir


class OutputBox:
    """A store's WASI stdout and stderr; after each call the new bytes become ``log`` events."""

    __slots__ = ("flooded", "offsets", "paths")

    def __init__(self) -> None:
        base = output_dir() / str(next(_out_ids))
        self.paths = (f"{base}.out", f"{base}.err")
        self.offsets = [0, 0]
        self.flooded = [False, False]

    def tick(self) -> None:
        """Run by the epoch ticker during a call: a flood is cut (the file becomes sparse)."""
        for i, path in enumerate(self.paths):
            with contextlib.suppress(OSError):
                if os.stat(path).st_size > MAX_OUTPUT_FILE:
                    os.truncate(path, 0)
                    self.flooded[i] = True

    def collect(self, state: hostcalls.CallState) -> None:
        for i, stream in enumerate(("stdout", "stderr")):
            try:
                if not self.flooded[i] and os.stat(self.paths[i]).st_size <= self.offsets[i]:
                    continue  # nothing new (the common case): no open
                with open(self.paths[i], "rb") as fh:
                    fh.seek(self.offsets[i])
                    data = b"" if self.flooded[i] else fh.read(hostcalls.MAX_LOG_BYTES + 1)
                    self.offsets[i] = fh.seek(0, os.SEEK_END)
                if self.flooded[i] or self.offsets[i] > MAX_OUTPUT_FILE:
                    os.truncate(self.paths[i], 0)
            except OSError:
                continue
            if self.flooded[i]:
                self.flooded[i] = False
                state.log(stream, f"[more than {MAX_OUTPUT_FILE} bytes of {stream}; dropped]")
            elif data:
                state.log(stream, data.decode("utf-8", "replace"))

    def close(self) -> None:
        for path in self.paths:
            with contextlib.suppress(OSError):
                os.unlink(path)


def wasi_config(preopens: list[tuple[str, bool]], box: OutputBox) -> wasmtime.WasiConfig:
    wc = wasmtime.WasiConfig()  # no argv, no env, no stdin
    wc.stdout_file = box.paths[0]
    wc.stderr_file = box.paths[1]
    for path, writable in preopens:
        wc.preopen_dir(path, path, writable)
    return wc


def preopens_for(ctx: CallContext) -> list[tuple[str, bool]]:
    """Directories to preopen for WASI: the granted ``fs`` directories, as the host sees them.

    Each declared directory is checked with the host API's own ``fs`` decision (so
    operator grants narrow it too); read-write only when a write there is allowed.
    Glob grants cannot be expressed as a preopen and are reachable through ``fs_*``
    imports only. Without the host API nothing is preopened.
    """
    if not ctx.card.permissions.get("fs"):
        return []  # nothing declared: no need to build the host API for this call
    perms = getattr(ctx.host, "perms", None)
    if perms is None:
        return []
    out = []
    for root in perms.fs_roots():
        if not os.path.isdir(root):
            continue
        try:
            perms.fs_resolve(root, write=False, method="wasi preopen")
        except SkillyardError:
            continue
        try:
            perms.fs_resolve(root, write=True, method="wasi preopen")
            writable = True
        except SkillyardError:
            writable = False
        out.append((root, writable))
    return out
