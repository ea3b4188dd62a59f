"""wasmtime plumbing: engines, the epoch ticker, the compile cache and the raw call path.

* Two engines at most (with and without fuel metering), both with epoch
  interruption and a bounded wasm stack; one daemon thread ticks every engine's
  epoch while calls are in flight, so a deadline is a cheap counter compare.
* Modules compile once per process and once per machine: the compiled artefact
  is serialised under a private cache directory keyed by the sha256 of the wasm
  bytes, the wasmtime version and the engine flags.
* :class:`Bound` calls exports through wasmtime's C API with preallocated value
  arrays. wasmtime-py's ``Func.__call__`` re-queries the function type and
  converts every value on each call (~100 us); this path is a few us. It uses
  the private ``wasmtime._bindings`` module, pinned by the tests.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import _bindings as _b
from wasmtime import _ffi as _f
from wasmtime import _func as _wfunc

TICK_SEC = 0.005
STACK_BYTES = 512 * 1024
WASI_MODULE = "wasi_snapshot_preview1"
HOST_MODULE = "env"
REQUIRED_EXPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "skill_alloc": (("i32",), ("i32",)),
    "skill_free": (("i32",), ()),
    "skill_handle": (("i32", "i32"), ("i64",)),
    "skill_describe": ((), ("i64",)),
}


class GuestFault(Exception):
    """A trap or an engine error raised while wasm ran; ``kind`` classifies it."""

    def __init__(
        self, kind: str, message: str, cause: BaseException | None = None, code: Any = None
    ) -> None:
        super().__init__(message)
        self.kind = kind  # timeout | fuel | stack | trap | host | abi | error
        self.message = message
        self.cause = cause
        self.code = code  # the wasmtime TrapCode, when a trap


# -- engines and the epoch ticker ----------------------------------------------------------


class _Ticker:
    """One thread for the whole process: bumps every engine's epoch while calls run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._wake = threading.Event()
        self._engines: list[wasmtime.Engine] = []
        self._thread: threading.Thread | None = None
        self.watched: set[Any] = set()  # objects with .tick(), checked every tick (output caps)

    def add_engine(self, engine: wasmtime.Engine) -> None:
        with self._lock:
            self._engines.append(engine)

    def enter(self) -> None:
        with self._lock:
            self._active += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="skillyard-wasm-epoch", daemon=True
                )
                self._thread.start()
        if not self._wake.is_set():  # the ticker clears it only under the lock, when idle
            self._wake.set()

    def leave(self) -> None:
        with self._lock:
            self._active -= 1

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(TICK_SEC)
            for engine in tuple(self._engines):
                engine.increment_epoch()
            for item in tuple(self.watched):
                item.tick()
            with self._lock:
                if self._active <= 0:
                    self._wake.clear()


TICKER = _Ticker()
_engines: dict[bool, wasmtime.Engine] = {}
_engines_lock = threading.Lock()


def engine(fuel: bool = False) -> wasmtime.Engine:
    """The shared engine (``fuel`` selects the one that meters instructions)."""
    e = _engines.get(fuel)
    if e is not None:
        return e
    with _engines_lock:
        e = _engines.get(fuel)
        if e is None:
            cfg = wasmtime.Config()
            cfg.epoch_interruption = True
            cfg.max_wasm_stack = STACK_BYTES
            cfg.consume_fuel = fuel
            cfg.memory_may_move = False  # Bound caches the base address of linear memory
            e = wasmtime.Engine(cfg)
            TICKER.add_engine(e)
            _engines[fuel] = e
    return e


def deadline_ticks(seconds: float) -> int:
    """Epoch ticks covering ``seconds`` (at least one, plus one for the partial tick)."""
    return max(1, int(seconds / TICK_SEC) + 1)


# -- compile cache ---------------------------------------------------------------------------


def cache_dir() -> Path:
    """A directory only this user can write (``$SKILLYARD_WASM_CACHE`` or ~/.cache/skillyard)."""
    env = os.environ.get("SKILLYARD_WASM_CACHE")
    if env:
        base = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "skillyard" / "wasm"
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = base.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise PermissionError(f"{base} is writable by others")
    except OSError:
        # Deserialising a compiled module runs its code: never trust a shared directory.
        global _private_fallback
        if _private_fallback is None:
            _private_fallback = Path(tempfile.mkdtemp(prefix="skillyard-wasm-"))
        base = _private_fallback
    return base


_private_fallback: Path | None = None


@dataclass(frozen=True)
class Compiled:
    """A compiled module and what the host needs to know about it."""

    module: wasmtime.Module
    sha256: str
    fuel: bool
    host_imports: frozenset[str]
    uses_wasi: bool
    cached: bool


_modules: dict[tuple[str, bool], Compiled] = {}
_modules_lock = threading.Lock()


def _functype(ty: Any) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    if not isinstance(ty, wasmtime.FuncType):
        return None
    return tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results)


def check_imports(module: wasmtime.Module, provided: frozenset[str]) -> tuple[frozenset[str], bool]:
    """(host imports used, uses WASI); raises ValueError naming every import we do not provide."""
    used: set[str] = set()
    wasi = False
    missing: list[str] = []
    for imp in module.imports:
        name = imp.name or ""
        if imp.module == WASI_MODULE and isinstance(imp.type, wasmtime.FuncType):
            wasi = True
            continue
        if imp.module == HOST_MODULE and name in provided:
            if _functype(imp.type) != (("i32", "i32"), ("i64",)):
                missing.append(f"{imp.module}.{name} (must be (i32, i32) -> i64)")
                continue
            used.add(name)
            continue
        missing.append(f"{imp.module}.{name}")
    if missing:
        raise ValueError(
            "the module imports what this runtime does not provide: "
            + ", ".join(missing)
            + f"; host imports available from {HOST_MODULE!r}: {', '.join(sorted(provided))}"
        )
    return frozenset(used), wasi


def check_exports(module: wasmtime.Module) -> None:
    """Raise ValueError naming every ABI export that is missing or has the wrong type."""
    found = {e.name: e.type for e in module.exports}
    problems = []
    for name, sig in REQUIRED_EXPORTS.items():
        if name not in found:
            problems.append(f"{name} is missing")
        elif _functype(found[name]) != sig:
            problems.append(f"{name} must be {sig[0]} -> {sig[1]}")
    if not isinstance(found.get("memory"), wasmtime.MemoryType):
        problems.append("memory (an exported linear memory) is missing")
    if problems:
        raise ValueError("not a skill module: " + "; ".join(problems))


def compile_module(wasm: bytes, *, fuel: bool, provided: frozenset[str]) -> Compiled:
    """Compile (or load from the disk cache) and check a module; ValueError when it is unusable."""
    sha = hashlib.sha256(wasm).hexdigest()
    key = (sha, fuel)
    hit = _modules.get(key)
    if hit is not None:
        return hit
    with _modules_lock:
        hit = _modules.get(key)
        if hit is not None:
            return hit
        eng = engine(fuel)
        flavour = f"{_wasmtime_version()}-fuel{int(fuel)}-stack{STACK_BYTES}"
        path = cache_dir() / f"{sha}-{hashlib.sha256(flavour.encode()).hexdigest()[:16]}.cwasm"
        module = None
        cached = False
        if path.is_file():
            try:
                module = wasmtime.Module.deserialize_file(eng, str(path))
                cached = True
            except wasmtime.WasmtimeError:
                module = None  # stale or damaged artefact: recompile below
        if module is None:
            try:
                module = wasmtime.Module(eng, wasm)
            except wasmtime.WasmtimeError as exc:
                raise ValueError(f"not a valid WebAssembly module: {_first_line(exc)}") from exc
            _write_atomic(path, bytes(module.serialize()))
        check_exports(module)
        used, wasi = check_imports(module, provided)
        compiled = Compiled(module, sha, fuel, used, wasi, cached)
        _modules[key] = compiled
        return compiled


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError:
        pass  # the cache is an optimisation; a read-only disk only costs a recompile


def _wasmtime_version() -> str:
    try:
        from importlib.metadata import version

        return version("wasmtime")
    except Exception:
        return "unknown"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def trap_message(exc: BaseException) -> str:
    """The line of a wasmtime trap that says what happened (not the backtrace header)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("wasm trap:"):
            return ln[len("wasm trap:") :].strip()
    return lines[-1] if lines else type(exc).__name__


# -- the raw call path --------------------------------------------------------------------------

_call = _b._wasmtime_func_call
_mem_data = _b._wasmtime_memory_data
_mem_size = _b._wasmtime_memory_data_size
_set_deadline = _b._wasmtime_context_set_epoch_deadline
_I32 = _f.WASMTIME_I32.value
_memmove = ctypes.memmove
_string_at = ctypes.string_at
_byref = ctypes.byref


def classify(err: Any, trap: Any) -> GuestFault:
    """Turn a wasmtime error/trap pointer (and any host exception) into a :class:`GuestFault`."""
    host_exc = _wfunc.LAST_EXCEPTION
    _wfunc.LAST_EXCEPTION = None
    if trap:
        t = wasmtime.Trap._from_ptr(trap)
        code = t.trap_code
        msg = trap_message(t)
        if host_exc is not None:
            return GuestFault("host", str(host_exc), host_exc)
        if code == wasmtime.TrapCode.INTERRUPT:
            return GuestFault("timeout", msg, t)
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return GuestFault("fuel", msg, t)
        if code == wasmtime.TrapCode.STACK_OVERFLOW:
            return GuestFault("stack", msg, t)
        return GuestFault("trap", msg, t, code)
    e = wasmtime.WasmtimeError._from_ptr(err)
    if host_exc is not None:
        return GuestFault("host", str(host_exc), host_exc)
    return GuestFault("error", trap_message(e), e)


_export_get = _b._wasmtime_instance_export_get
_EXTERN_FUNC = _f.WASMTIME_EXTERN_FUNC.value
_EXTERN_MEMORY = _f.WASMTIME_EXTERN_MEMORY.value


def _export(ctx: Any, instance: Any, name: str, kind: int) -> Any:
    """Look one export up through the C API (wasmtime-py's ``exports()`` builds them all)."""
    ext = _b.wasmtime_extern_t()
    raw = name.encode()
    buf = ctypes.create_string_buffer(raw, len(raw))
    if not _export_get(ctx, _byref(instance), buf, len(raw), _byref(ext)) or ext.kind != kind:
        return None
    return ext.of.func if kind == _EXTERN_FUNC else ext.of.memory


def memory_view(ctx: Any, memory: wasmtime.Memory) -> tuple[int, int]:
    """(base address, size) of a linear memory, for raw copies inside host imports."""
    ref = _byref(memory._memory)
    return ctypes.addressof(_mem_data(ctx, ref).contents), int(_mem_size(ctx, ref))


def call_alloc(ctx: Any, func: wasmtime.Func, n: int) -> int:
    """``skill_alloc(n)`` from inside a host import, through the C API (GuestFault on a trap)."""
    params = (_b.wasmtime_val_t * 1)()
    params[0].kind = _I32  # type: ignore[assignment]
    params[0].of.i32 = n
    results = (_b.wasmtime_val_t * 1)()
    trap = ctypes.POINTER(_b.wasm_trap_t)()
    err = _call(ctx, _byref(func._func), params, 1, results, 1, _byref(trap))
    if err or trap:
        raise classify(err, trap)
    return int(results[0].of.i32) & 0xFFFFFFFF


class Bound:
    """One instance's ABI exports, callable without wasmtime-py's generic machinery.

    Linear memory never moves (the engine sets ``memory_may_move = False``), so
    its base address is read once; its size is re-read only when a range does
    not fit the last size seen (memory only grows).
    """

    __slots__ = (
        "_base",
        "_ctx",
        "_keep",
        "_mem",
        "_size",
        "_trap",
        "alloc",
        "describe",
        "free",
        "handle",
        "init",
        "out",
        "req_cap",
        "req_ptr",
        "store",
    )

    def __init__(
        self,
        store: wasmtime.Store,
        instance: wasmtime.Instance,
        *,
        has_init: bool = True,
        for_describe: bool = True,
    ) -> None:
        ctx = store._context()
        inst = instance._instance
        mem = _export(ctx, inst, "memory", _EXTERN_MEMORY)
        if mem is None:
            raise GuestFault("abi", "the module exports no memory")
        self.store = store
        self.out: Any = None  # where WASI stdout/stderr of this store goes (see transport)
        self.req_ptr = 0  # a request buffer kept for reuse by a warm instance
        self.req_cap = 0
        self._ctx = ctx
        self._mem = _byref(mem)
        self._base = ctypes.addressof(_mem_data(ctx, self._mem).contents)
        self._size = int(_mem_size(ctx, self._mem))
        trap = ctypes.POINTER(_b.wasm_trap_t)()
        self._trap = trap
        trapref = _byref(trap)
        keep: list[Any] = [store, instance, mem]

        def prep(name: str, n_in: int, n_out: int) -> tuple[Any, Any, Any, Any]:
            func = _export(ctx, inst, name, _EXTERN_FUNC)
            if func is None:
                return None, None, None, (None, None)
            params = (_b.wasmtime_val_t * max(2, n_in))()
            for i in range(n_in):
                params[i].kind = _I32  # type: ignore[assignment]
            results = (_b.wasmtime_val_t * max(1, n_out))()
            keep.extend((func, params, results))
            return _byref(func), params, results, (params[0].of, params[1].of)

        fa, pa, ra, (a0, _a1) = prep("skill_alloc", 1, 1)
        ra0 = ra[0].of

        def alloc(n: int) -> int:
            a0.i32 = n
            err = _call(ctx, fa, pa, 1, ra, 1, trapref)
            if err or trap:
                raise classify(err, trap)
            return ra0.i32 & 0xFFFFFFFF

        fh, ph, rh, (h0, h1) = prep("skill_handle", 2, 1)
        rh0 = rh[0].of

        def handle(ptr: int, n: int) -> int:
            h0.i32 = ptr
            h1.i32 = n
            err = _call(ctx, fh, ph, 2, rh, 1, trapref)
            if err or trap:
                raise classify(err, trap)
            return rh0.i64 & 0xFFFFFFFFFFFFFFFF

        ff, pf, rf, (f0, _f1) = prep("skill_free", 1, 0)

        def free(ptr: int) -> None:
            f0.i32 = ptr
            err = _call(ctx, ff, pf, 1, rf, 0, trapref)
            if err or trap:
                raise classify(err, trap)

        fd, pd, rd, _ = prep("skill_describe", 0, 1) if for_describe else (None, None, [], None)

        def describe() -> int:
            if fd is None:
                raise GuestFault("abi", "skill_describe was not bound for this instance")
            err = _call(ctx, fd, pd, 0, rd, 1, trapref)
            if err or trap:
                raise classify(err, trap)
            return int(rd[0].of.i64) & 0xFFFFFFFFFFFFFFFF

        fi, pi, ri, _ = prep("_initialize", 0, 0) if has_init else (None,) * 4

        def init() -> None:
            """Run the WASI reactor initialiser when the module has one."""
            if fi is None:
                return
            err = _call(ctx, fi, pi, 0, ri, 0, trapref)
            if err or trap:
                raise classify(err, trap)

        self.alloc, self.handle, self.free, self.describe = alloc, handle, free, describe
        self.init = init
        self._keep = keep

    def request_buffer(self, n: int) -> int:
        """A guest buffer of at least ``n`` bytes for requests, reused while it is big enough."""
        if n <= self.req_cap:
            return self.req_ptr
        if self.req_ptr:
            old, self.req_ptr, self.req_cap = self.req_ptr, 0, 0
            self.free(old)
        cap = max(n, 1024)
        self.req_ptr = self.alloc(cap)
        self.req_cap = cap
        return self.req_ptr

    def set_deadline(self, seconds: float) -> None:
        """Trap with an interrupt once ``seconds`` of epoch ticks have passed."""
        _set_deadline(self._ctx, deadline_ticks(seconds))

    def memory_size(self) -> int:
        self._size = int(_mem_size(self._ctx, self._mem))
        return self._size

    def _fits(self, ptr: int, n: int) -> bool:
        if ptr + n <= self._size:
            return True
        return ptr + n <= self.memory_size()

    def write(self, ptr: int, data: bytes) -> None:
        """Copy ``data`` into linear memory at ``ptr`` (bounds-checked)."""
        n = len(data)
        if ptr <= 0 or not self._fits(ptr, n):
            raise GuestFault(
                "abi", f"skill_alloc returned {ptr}, no room for {n} bytes in {self._size} bytes"
            )
        _memmove(self._base + ptr, data, n)

    def read(self, ptr: int, n: int) -> bytes:
        """Copy ``n`` bytes out of linear memory (bounds-checked)."""
        if ptr < 0 or n < 0 or not self._fits(ptr, n):
            raise GuestFault(
                "abi",
                f"the guest returned bytes {ptr}..{ptr + n}, outside its {self._size}-byte memory",
            )
        return _string_at(self._base + ptr, n)
