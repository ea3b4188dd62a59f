"""Starting, watching and stopping one child process group.

Everything here runs on the event loop thread without asyncio streams: the pipes
are raw non-blocking file descriptors watched with ``loop.add_reader``, and the
exit of the child is watched through a pidfd (a thread waits on kernels without
one). Every child leads its own session, so one ``killpg`` stops it and whatever
it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from skillyard.errors import TransportError

if TYPE_CHECKING:
    from skillyard.card import Card

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
STDERR_TAIL_BYTES = 4096
_MB = 1024 * 1024


def build_argv(card: Card) -> list[str]:
    """The command of a process card: ``{python}`` becomes this interpreter, package files absolute."""
    try:
        argv = orjson.loads(card.operation)
    except orjson.JSONDecodeError as exc:
        raise TransportError(
            f"{card.name}: the process entry must be a JSON array of strings, got {card.operation!r}"
        ) from exc
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise TransportError(f"{card.name}: the process entry must be a non-empty list of strings")
    if argv[0] == "{python}":
        argv[0] = sys.executable
    if card.source:
        pkg = Path(card.source)
        for i in range(min(2, len(argv))):
            arg = argv[i]
            if not os.path.isabs(arg) and (pkg / arg).is_file():
                argv[i] = str((pkg / arg).resolve())
    return argv


def build_cwd(card: Card, home: str) -> str:
    """The working directory: ``options.cwd`` inside the package, else the package, else ``home``."""
    rel = card.options.get("cwd")
    if not card.source:
        if rel:
            raise TransportError(f"{card.name}: options.cwd needs a package directory")
        return home
    pkg = Path(card.source).resolve()
    if not rel:
        return str(pkg)
    target = (pkg / str(rel)).resolve()
    if target != pkg and pkg not in target.parents:
        raise TransportError(f"{card.name}: options.cwd {rel!r} points outside the package")
    if not target.is_dir():
        raise TransportError(f"{card.name}: options.cwd {rel!r} is not a directory")
    return str(target)


def build_env(card: Card, home: str) -> tuple[dict[str, str], list[str]]:
    """A scrubbed environment and the values that must never be echoed back.

    Only PATH, LANG, HOME and TMPDIR (both a private temporary directory) and
    PYTHONUNBUFFERED are set; names listed in ``options.env`` pass through from
    the runtime's own environment.
    """
    env = {
        "PATH": BASE_PATH,
        "LANG": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
        "PYTHONUNBUFFERED": "1",
    }
    secrets: list[str] = []
    for name in card.options.get("env") or ():
        value = os.environ.get(name)
        if value is not None:
            env[name] = value
            if len(value) >= 4 and name not in ("PATH", "LANG", "HOME", "TMPDIR"):
                secrets.append(value)
    return env, secrets


def rlimits_for(card: Card) -> list[tuple[int, int]]:
    """The (resource, value) pairs to set in the child from the card's limits."""
    lim = card.limits
    out: list[tuple[int, int]] = []
    if lim.cpu_sec:
        out.append((resource.RLIMIT_CPU, int(lim.cpu_sec)))
    if lim.memory_mb:
        out.append((resource.RLIMIT_AS, int(lim.memory_mb) * _MB))
    if lim.open_files:
        out.append((resource.RLIMIT_NOFILE, int(lim.open_files)))
    return out


def _preexec(limits: list[tuple[int, int]]) -> Callable[[], None] | None:
    if not limits:
        return None

    def apply() -> None:  # runs in the forked child, before exec
        for res, value in limits:
            _soft, hard = resource.getrlimit(res)
            if hard != resource.RLIM_INFINITY and value > hard:
                value = hard
            # CPU: SIGXCPU at the soft limit; the hard one, a second later, is SIGKILL.
            top = value + 1 if res == resource.RLIMIT_CPU else value
            if hard != resource.RLIM_INFINITY and top > hard:
                top = hard
            resource.setrlimit(res, (value, top))

    return apply


def redact(text: str, secrets: list[str]) -> str:
    """Remove secret values from text that may end up in an error message."""
    for s in secrets:
        if s in text:
            text = text.replace(s, "***")
    return text


class Child:
    """One running child: raw pipe fds, its process group, its stderr tail and exit."""

    def __init__(
        self,
        card: Card,
        *,
        loop: asyncio.AbstractEventLoop,
        on_stdout: Callable[[bytes], None],
        on_exit: Callable[[], None] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = card.name
        self.loop = loop
        self.home = tempfile.mkdtemp(prefix="skillyard-proc-")
        try:
            self.argv = build_argv(card)
            self.cwd = build_cwd(card, self.home)
            env, self.secrets = build_env(card, self.home)
            env.update(extra_env or {})
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                env=env,
                cwd=self.cwd,
                close_fds=True,
                start_new_session=True,
                preexec_fn=_preexec(rlimits_for(card)),
            )
        except OSError as exc:
            shutil.rmtree(self.home, ignore_errors=True)
            raise TransportError(
                f"{card.name}: cannot start {self._shown(card)}: {exc.strerror or exc}"
            ) from exc
        except BaseException:
            shutil.rmtree(self.home, ignore_errors=True)
            raise
        self.pid = self.proc.pid
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.stdin_fd: int | None = self.proc.stdin.fileno()
        self.stdout_fd = self.proc.stdout.fileno()
        self.stderr_fd = self.proc.stderr.fileno()
        for fd in (self.stdin_fd, self.stdout_fd, self.stderr_fd):
            os.set_blocking(fd, False)
        self._on_stdout = on_stdout
        self._on_exit = on_exit
        self._tail = bytearray()
        self._wbuf = bytearray()
        self._close_after_flush = False
        self.stdout_open = True
        self.stderr_open = True
        self.returncode: int | None = None
        self.exited: asyncio.Future[int] = loop.create_future()
        self.streams_closed: asyncio.Future[None] = loop.create_future()
        loop.add_reader(self.stdout_fd, self.read_stdout)
        loop.add_reader(self.stderr_fd, self._read_stderr)
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(self.pid)
            loop.add_reader(self._pidfd, self._reap)
        except (AttributeError, OSError):
            threading.Thread(target=self._wait_thread, daemon=True).start()

    @staticmethod
    def _shown(card: Card) -> str:
        try:
            return str(orjson.loads(card.operation)[0])
        except Exception:
            return "the command"

    # -- output ------------------------------------------------------------------------

    def read_stdout(self) -> None:
        try:
            data = os.read(self.stdout_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_stdout()
        self._on_stdout(data)

    def drain(self) -> None:
        """Read what is already waiting in the pipes (the last words of a child that exited)."""
        for _ in range(64):
            if not self.stdout_open:
                break
            try:
                data = os.read(self.stdout_fd, 65536)
            except OSError:
                break
            if not data:
                self._close_stdout()
            self._on_stdout(data)
            if not data:
                break
        for _ in range(64):
            if not self.stderr_open:
                break
            before = len(self._tail)
            self._read_stderr()
            if len(self._tail) == before:
                break

    def _close_stdout(self) -> None:
        if self.stdout_open:
            self.stdout_open = False
            self.loop.remove_reader(self.stdout_fd)
            self._maybe_streams_closed()

    def _read_stderr(self) -> None:
        try:
            data = os.read(self.stderr_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if self.stderr_open:
                self.stderr_open = False
                self.loop.remove_reader(self.stderr_fd)
                self._maybe_streams_closed()
            return
        self._tail += data
        if len(self._tail) > STDERR_TAIL_BYTES * 2:
            del self._tail[:-STDERR_TAIL_BYTES]

    def _maybe_streams_closed(self) -> None:
        if not self.stdout_open and not self.stderr_open and not self.streams_closed.done():
            self.streams_closed.set_result(None)

    def stderr_tail(self, limit: int = 1000) -> str:
        """The end of what the child wrote on stderr, decoded, capped and with secrets removed."""
        text = bytes(self._tail[-STDERR_TAIL_BYTES:]).decode("utf-8", "replace")
        text = redact(text, self.secrets).strip()
        if len(text) > limit:
            text = "..." + text[-limit:]
        return text

    def describe_exit(self) -> str:
        """'exited with status 3' / 'was killed by SIGKILL', plus the stderr tail."""
        rc = self.returncode
        if rc is None:
            what = "stopped answering"
        elif rc < 0:
            try:
                what = f"was killed by {signal.Signals(-rc).name}"
            except ValueError:
                what = f"was killed by signal {-rc}"
        else:
            what = f"exited with status {rc}"
        tail = self.stderr_tail()
        return what + (f"; stderr: {tail}" if tail else "; it wrote nothing on stderr")

    # -- input -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write to stdin without blocking the loop; what the pipe refuses is sent when it drains."""
        fd = self.stdin_fd
        if fd is None:
            raise BrokenPipeError("stdin is closed")
        if self._wbuf:
            self._wbuf += data
            return
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            self._wbuf += data[n:]
            self.loop.add_writer(fd, self._flush)

    def _flush(self) -> None:
        fd = self.stdin_fd
        if fd is None:
            return
        try:
            n = os.write(fd, self._wbuf)
        except BlockingIOError:
            return
        except OSError:
            self._wbuf.clear()
            self.loop.remove_writer(fd)
            return
        del self._wbuf[:n]
        if not self._wbuf:
            self.loop.remove_writer(fd)
            if self._close_after_flush:
                self.close_stdin()

    def close_stdin(self) -> None:
        """Close stdin once everything written so far has been sent."""
        fd = self.stdin_fd
        if fd is None:
            return
        if self._wbuf:
            self._close_after_flush = True
            return
        self.stdin_fd = None
        with contextlib.suppress(Exception):
            self.loop.remove_writer(fd)
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()

    # -- exit --------------------------------------------------------------------------

    def _reap(self) -> None:
        # The leader has exited but is not reaped yet, so its pid still names the group:
        # killing the group now cannot hit anyone else.
        self.kill_group()
        rc = self.proc.poll()
        if rc is None:
            return
        self._finish(rc)

    def _wait_thread(self) -> None:
        rc = self.proc.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self.loop.call_soon_threadsafe(self._finish_after_thread, rc)

    def _finish_after_thread(self, rc: int) -> None:
        self._finish(rc)

    def _finish(self, rc: int) -> None:
        if self.exited.done():
            return
        self.returncode = rc
        self.drain()
        if self._pidfd is not None:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self.exited.set_result(rc)
        if self._on_exit is not None:
            self._on_exit()

    def kill_group(self) -> None:
        """SIGKILL the whole process group (no error when it is already gone)."""
        if self.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def stop(self, grace: float = 0.0) -> None:
        """Stop the child (after ``grace`` seconds for it to exit itself), reap it, free its fds."""
        if not self.exited.done() and grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), grace)
        if not self.exited.done():
            self.kill_group()
            await asyncio.shield(self.exited)
        self.release()

    def release(self) -> None:
        """Stop watching the pipes, close them and remove the private temp dir."""
        self.close_stdin()
        if self.stdout_open:
            self.stdout_open = False
            self.loop.remove_reader(self.stdout_fd)
        if self.stderr_open:
            # Keep what is already in the pipe for the error message.
            with contextlib.suppress(OSError):
                while chunk := os.read(self.stderr_fd, 65536):
                    self._tail += chunk
                    if len(self._tail) > STDERR_TAIL_BYTES * 2:
                        del self._tail[:-STDERR_TAIL_BYTES]
            self.stderr_open = False
            self.loop.remove_reader(self.stderr_fd)
        for f in (self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError):
                if f is not None:
                    f.close()
        shutil.rmtree(self.home, ignore_errors=True)
