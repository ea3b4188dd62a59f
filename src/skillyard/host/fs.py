"""``fs.*``: files confined to the directories a skill was granted.

Every path is resolved (symlinks included) and checked by
:meth:`~skillyard.host.access.Effective.fs_resolve` before anything is touched.
The operation then walks the *resolved* path from ``/`` one component at a time
with ``O_NOFOLLOW`` and acts relative to the parent's directory descriptor, so a
symlink swapped in after the check makes the call fail instead of escaping. Only
regular files are read or written (no devices, FIFOs or sockets).
"""

from __future__ import annotations

import base64
import errno
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from skillyard.errors import HostError, PermissionDenied
from skillyard.host.common import arg, arg_int, fail, invalid

if TYPE_CHECKING:
    from skillyard.host.api import Host

MAX_READ_BYTES = 32 * 1024 * 1024
MAX_WRITE_BYTES = 64 * 1024 * 1024
MAX_LIST = 10_000
MAX_WALK = 100_000
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _os_error(method: str, path: str, exc: OSError) -> HostError:
    code = {
        errno.ENOENT: "not_found",
        errno.EEXIST: "exists",
        errno.ENOTDIR: "not_a_directory",
        errno.EISDIR: "is_a_directory",
        errno.ENOTEMPTY: "not_empty",
        errno.ENOSPC: "no_space",
    }.get(exc.errno or 0, "io_error")
    return fail(method, code, f"{path!r}: {exc.strerror or exc}")


def _raced(method: str, path: str) -> PermissionDenied:
    return PermissionDenied(
        f"{method} denied: {path!r} changed while it was being checked (a symlink appeared on the path); "
        "refused"
    )


@contextmanager
def _parent(
    real: str,
    method: str,
    shown: str,
    *,
    create: Callable[[str], bool] | None = None,
) -> Iterator[tuple[int, str]]:
    """Yield (fd of the parent directory, last name) reached without following symlinks."""
    parts = [p for p in real.split("/") if p]
    if not parts:
        raise PermissionDenied(f"{method} denied: refusing to operate on '/'")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        walked = ""
        for part in parts[:-1]:
            walked += "/" + part
            try:
                nfd = os.open(part, _DIR, dir_fd=fd)
            except NotADirectoryError:
                # A symlink here means the path changed after it was resolved and checked.
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise _raced(method, shown) from None
                raise
            except FileNotFoundError:
                if create is None or not create(walked):
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                nfd = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = nfd
        yield fd, parts[-1]
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _raced(method, shown) from exc
        raise _os_error(method, shown, exc) from exc
    finally:
        os.close(fd)


def _open_file(real: str, method: str, shown: str, flags: int, mode: int = 0o644) -> int:
    with _parent(real, method, shown) as (dfd, name):
        try:
            pre = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            pre = None
        if pre is not None and not (stat.S_ISREG(pre.st_mode) or stat.S_ISLNK(pre.st_mode)):
            kind = "a directory" if stat.S_ISDIR(pre.st_mode) else "a device, FIFO or socket"
            raise PermissionDenied(f"{method} denied: {shown!r} is {kind}, not a regular file")
        try:
            fd = os.open(
                name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dfd
            )
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PermissionDenied(
                    f"{method} denied: {shown!r} is a symbolic link; links are not followed here"
                ) from exc
            raise _os_error(method, shown, exc) from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, FIFO or socket"
        raise PermissionDenied(f"{method} denied: {shown!r} is {kind}, not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_file(real: str, method: str, shown: str, *, limit: int = MAX_READ_BYTES) -> bytes:
    """Read a regular file in full (refusing files over ``limit`` bytes)."""
    fd = _open_file(real, method, shown, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise fail(method, "too_large", f"{shown!r} is {size} bytes; the limit is {limit}")
        chunks = []
        total = 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > limit:
                raise fail(method, "too_large", f"{shown!r} grew past the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_file(real: str, method: str, shown: str, data: bytes, *, append: bool = False) -> int:
    """Write (or append to) a regular file; symlinks and special files are refused."""
    if len(data) > MAX_WRITE_BYTES:
        raise fail(method, "too_large", f"{len(data)} bytes; the limit is {MAX_WRITE_BYTES}")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else 0)
    fd = _open_file(real, method, shown, flags)
    try:
        if not append:
            os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return len(data)


# -- handlers: (host, params, permit) where permit is what the guard resolved ------------


def read_text(host: Host, params: dict[str, Any], real: str) -> str:
    encoding = arg(params, "encoding", str, "fs.read_text", default="utf-8")
    data = read_file(real, "fs.read_text", params["path"])
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise fail("fs.read_text", "decode_error", f"{params['path']!r}: {exc}") from exc


def read_bytes(host: Host, params: dict[str, Any], real: str) -> dict[str, str]:
    data = read_file(real, "fs.read_bytes", params["path"])
    return {"data_b64": base64.b64encode(data).decode("ascii")}


def write_text(host: Host, params: dict[str, Any], real: str) -> dict[str, int]:
    text = arg(params, "text", str, "fs.write_text")
    append = arg(params, "append", bool, "fs.write_text", default=False)
    n = write_file(real, "fs.write_text", params["path"], text.encode("utf-8"), append=append)
    return {"bytes": n}


def write_bytes(host: Host, params: dict[str, Any], real: str) -> dict[str, int]:
    raw = arg(params, "data_b64", str, "fs.write_bytes")
    try:
        data = base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise invalid("fs.write_bytes", "params.data_b64 is not valid base64") from exc
    append = arg(params, "append", bool, "fs.write_bytes", default=False)
    return {"bytes": write_file(real, "fs.write_bytes", params["path"], data, append=append)}


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def list_dir(host: Host, params: dict[str, Any], real: str) -> list[dict[str, Any]]:
    shown = params["path"]
    with _parent(real + "/.", "fs.list", shown) as (dfd, _):
        out = []
        with os.scandir(dfd) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                out.append({"name": entry.name, "type": _kind(st.st_mode), "size": st.st_size})
                if len(out) >= MAX_LIST:
                    break
    return sorted(out, key=lambda e: e["name"])


def stat_path(host: Host, params: dict[str, Any], real: str) -> dict[str, Any]:
    with _parent(real, "fs.stat", params["path"]) as (dfd, name):
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError as exc:
            raise _os_error("fs.stat", params["path"], exc) from exc
    return {
        "type": _kind(st.st_mode),
        "size": st.st_size,
        "mtime": st.st_mtime,
        "mode": stat.S_IMODE(st.st_mode),
    }


def exists(host: Host, params: dict[str, Any], real: str) -> bool:
    try:
        with _parent(real, "fs.exists", params["path"]) as (dfd, name):
            os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except HostError as exc:
        if exc.code in ("not_found", "not_a_directory"):
            return False
        raise
    except FileNotFoundError:
        return False
    return True


def mkdir(host: Host, params: dict[str, Any], real: str) -> None:
    parents = arg(params, "parents", bool, "fs.mkdir", default=False)

    def may_create(path: str) -> bool:
        try:
            host.perms.fs_resolve(path, write=True, method="fs.mkdir")
        except PermissionDenied:
            return False
        return True

    with _parent(real, "fs.mkdir", params["path"], create=may_create if parents else None) as (
        dfd,
        name,
    ):
        try:
            os.mkdir(name, 0o755, dir_fd=dfd)
        except FileExistsError:
            if not parents:
                raise fail("fs.mkdir", "exists", f"{params['path']!r} already exists") from None
    return None


def remove(host: Host, params: dict[str, Any], real: str) -> None:
    recursive = arg(params, "recursive", bool, "fs.remove", default=False)
    if real in host.perms.fs_roots():
        raise PermissionDenied(
            f"fs.remove denied: {params['path']!r} is a granted directory itself"
        )
    with _parent(real, "fs.remove", params["path"]) as (dfd, name):
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if recursive:
                shutil.rmtree(name, dir_fd=dfd)  # fd-based on Linux: no symlink following
            else:
                os.rmdir(name, dir_fd=dfd)
        else:
            os.unlink(name, dir_fd=dfd)
    return None


def rename(host: Host, params: dict[str, Any], permit: tuple[str, str]) -> None:
    src, dst = permit
    with (
        _parent(src, "fs.rename", params["src"]) as (sfd, sname),
        _parent(dst, "fs.rename", params["dst"]) as (dfd, dname),
    ):
        os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
    return None


def copy(host: Host, params: dict[str, Any], permit: tuple[str, str]) -> None:
    src, dst = permit
    data = read_file(src, "fs.copy", params["src"], limit=MAX_WRITE_BYTES)
    write_file(dst, "fs.copy", params["dst"], data)
    return None


def _walk(host: Host, root: str, method: str) -> Iterator[tuple[str, str]]:
    """(relative path, real path) of everything below ``root`` the skill may read."""
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            seen += 1
            if seen > MAX_WALK:
                raise fail(method, "too_large", f"more than {MAX_WALK} entries under the root")
            full = os.path.join(dirpath, name)
            try:
                host.perms.fs_resolve(full, write=False, method=method)
            except PermissionDenied:
                continue  # a link out of the granted area, or a narrower grant
            yield os.path.relpath(full, root), full


def _join(base: str | None, rel: str) -> str:
    return rel if base in (None, ".", "") else f"{base.rstrip('/')}/{rel}"


def glob(host: Host, params: dict[str, Any], root_real: str) -> list[str]:
    from skillyard.host.access import _glob_regex

    pattern = arg(params, "pattern", str, "fs.glob")
    if not pattern or pattern.startswith("/") or ".." in pattern.split("/")[1:]:
        raise invalid("fs.glob", "params.pattern must be a relative glob without '..'")
    regex = _glob_regex(pattern)
    out: list[str] = []
    if params.get("root") is None:
        # No root: search every granted directory, matching paths relative to the skill's dir.
        base = host.perms.bases["skill"]
        for root in host.perms.fs_roots():
            if not os.path.isdir(root):
                continue
            for _, full in _walk(host, root, "fs.glob"):
                rel = os.path.relpath(full, base)
                if regex.fullmatch(rel) and rel not in out:
                    out.append(rel)
                    if len(out) >= MAX_LIST:
                        return out
        return sorted(out)
    for rel, _ in _walk(host, root_real, "fs.glob"):
        if regex.fullmatch(rel):
            out.append(_join(params.get("root"), rel))
            if len(out) >= MAX_LIST:
                break
    return out


def grep(host: Host, params: dict[str, Any], real: str) -> list[dict[str, Any]]:
    from skillyard.host.access import _glob_regex

    method = "fs.grep"
    pattern = arg(params, "pattern", str, method)
    if len(pattern) > 1000:
        raise invalid(method, "params.pattern is longer than 1000 characters")
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise invalid(method, f"params.pattern is not a valid regular expression: {exc}") from exc
    file_glob = arg(params, "glob", str, method, default=None)
    name_re = _glob_regex(file_glob) if file_glob else None
    limit = arg_int(params, "max_matches", method, default=1000, lo=1, hi=MAX_LIST)
    shown = params["path"]
    if os.path.isdir(real):
        files = [
            (_join(shown, rel), full)
            for rel, full in _walk(host, real, method)
            if os.path.isfile(full) and (name_re is None or name_re.fullmatch(rel))
        ]
    else:
        files = [(shown, real)]
    out: list[dict[str, Any]] = []
    for shown_path, full in files:
        try:
            data = read_file(os.path.realpath(full), method, shown_path, limit=MAX_READ_BYTES)
        except (HostError, PermissionDenied):
            continue
        if b"\0" in data[:8192]:
            continue  # binary
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if regex.search(line):
                out.append({"path": shown_path, "line": n, "text": line[:1000]})
                if len(out) >= limit:
                    return out
    return out


__all__ = ["read_file", "write_file"]
