"""``shell.exec``: run an allowed program with an argv list. Never through a shell.

The argv goes straight to ``execve``: ``;``, ``$(...)``, backticks, pipes and
newlines in arguments are plain bytes to the program. ``argv[0]`` must be one of
the allowed programs (looked up on a fixed safe PATH). The child runs in its own
process group with a scrubbed environment; on timeout the whole group is killed.
Output beyond the cap is read and dropped (so the child never blocks on a full pipe)
and the result says ``truncated``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import TYPE_CHECKING, Any

from skillyard.errors import HostError
from skillyard.host.access import SAFE_PATH
from skillyard.host.common import arg, fail, invalid

if TYPE_CHECKING:
    from skillyard.host.access import Effective
    from skillyard.host.api import Host

MAX_ARGS = 4096
MAX_ARGV_BYTES = 256 * 1024
MAX_STDIN = 16 * 1024 * 1024


def check_argv(params: dict[str, Any]) -> list[str]:
    """``params.argv`` as a list of strings (a string command line is refused)."""
    argv = params.get("argv")
    if isinstance(argv, str):
        raise invalid(
            "shell.exec",
            "params.argv must be a list like ['git', 'status'], not a command line: "
            "commands are never run through a shell",
        )
    if not isinstance(argv, list) or not argv or len(argv) > MAX_ARGS:
        raise invalid("shell.exec", f"params.argv must be a non-empty list of 1-{MAX_ARGS} strings")
    total = 0
    for i, a in enumerate(argv):
        if not isinstance(a, str) or "\0" in a:
            raise invalid("shell.exec", f"params.argv[{i}] must be a string without NUL")
        total += len(a)
    if total > MAX_ARGV_BYTES:
        raise invalid("shell.exec", f"params.argv is longer than {MAX_ARGV_BYTES} characters")
    return argv


def guard(perms: Effective, params: dict[str, Any]) -> tuple[str, str]:
    """The permission check: (absolute executable, real cwd)."""
    argv = check_argv(params)
    exe = perms.shell_program(argv[0])
    return exe, perms.shell_cwd(params.get("cwd"))


async def _drain(stream: asyncio.StreamReader, cap: int, out: bytearray) -> bool:
    truncated = False
    while chunk := await stream.read(65536):
        room = cap - len(out)
        if room > 0:
            out += chunk[:room]
        if len(chunk) > room:
            truncated = True
    return truncated


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def exec_(host: Host, params: dict[str, Any], permit: tuple[str, str]) -> dict[str, Any]:
    exe, cwd = permit
    argv = params["argv"]
    limits = host.perms.shell_limits()
    timeout_ms = arg(params, "timeout_ms", int, "shell.exec", default=None)
    timeout = min(limits.timeout_sec, host.ctx.remaining)
    if timeout_ms is not None:
        if timeout_ms <= 0:
            raise invalid("shell.exec", "params.timeout_ms must be positive")
        timeout = min(timeout, timeout_ms / 1000)
    stdin = arg(params, "stdin", str, "shell.exec", default=None)
    data = stdin.encode() if stdin is not None else None
    if data is not None and len(data) > MAX_STDIN:
        raise invalid("shell.exec", f"params.stdin is larger than {MAX_STDIN} bytes")
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": cwd}
    for name in host.perms.declared.get("env", ()):
        if "*" not in name and name in os.environ:
            try:
                host.perms.env(name)
            except Exception:
                continue
            env[name] = os.environ[name]
    try:
        proc = await asyncio.create_subprocess_exec(
            exe,
            *argv[1:],
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise fail("shell.exec", "exec_failed", f"{argv[0]!r}: {exc.strerror or exc}") from None
    cap = limits.max_output_bytes
    out, err = bytearray(), bytearray()
    assert proc.stdout is not None and proc.stderr is not None

    async def feed() -> None:
        if data is not None and proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(data)
                await proc.stdin.drain()
            proc.stdin.close()

    try:
        async with asyncio.timeout(timeout):
            _, t_out, t_err = await asyncio.gather(
                feed(), _drain(proc.stdout, cap, out), _drain(proc.stderr, cap, err)
            )
            code = await proc.wait()
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        raise HostError(
            f"shell.exec: {argv[0]!r} ran past {timeout:.3g}s and was killed (with its group)",
            code="timeout",
        ) from None
    except BaseException:
        _kill_group(proc.pid)
        raise
    _kill_group(proc.pid)  # leftovers the program started in its group
    return {
        "exit_code": code,
        "stdout": out.decode("utf-8", "replace"),
        "stderr": err.decode("utf-8", "replace"),
        "truncated": t_out or t_err,
    }


__all__ = ["check_argv", "exec_", "guard"]
