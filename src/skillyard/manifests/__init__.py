"""On-disk skill formats: each module turns one package directory into a :class:`SkillPackage`.

A directory is a package when it holds one of the manifest files in
:data:`FORMATS` (checked in that order). Loaders validate completely and raise
:class:`~skillyard.errors.ManifestError` naming the file and field.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillyard.card import Card
from skillyard.errors import ManifestError

SKILL_ID_RE = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_PACKAGE_BYTES = 64 * 1024 * 1024
MAX_PACKAGE_FILES = 10_000
_SKIP_DIRS = {"__pycache__", ".git", ".venv", "node_modules"}

# (manifest file name, "module:loader"), first match wins.
FORMATS: list[tuple[str, str]] = [
    ("skill.toml", "skillyard.manifests.native:load"),
    ("skill.yaml", "skillyard.manifests.luaskills:load"),
]


@dataclass(frozen=True, kw_only=True)
class SkillPackage:
    """A loaded package: its identity, where it came from, and its cards."""

    id: str
    version: str
    description: str
    runtime: str
    path: Path
    root: str
    digest: str
    format: str
    cards: tuple[Card, ...]
    permissions: dict[str, Any] = field(default_factory=dict)
    config: tuple[dict[str, Any], ...] = ()
    help: dict[str, Path] = field(default_factory=dict)

    __hash__ = object.__hash__


def manifest_file(path: Path) -> Path | None:
    """The manifest that makes ``path`` a package, or ``None``."""
    for name, _ in FORMATS:
        candidate = path / name
        if candidate.is_file():
            return candidate
    return None


def check_skill_id(skill_id: str, *, file: str, field_path: str = "id") -> str:
    """Validate a package id against ``^[a-z]([a-z0-9-]*[a-z0-9])?$`` (64 chars at most)."""
    if not isinstance(skill_id, str) or not SKILL_ID_RE.match(skill_id) or len(skill_id) > 64:
        raise ManifestError(
            f"{skill_id!r} is not a valid skill id: use lower-case letters, digits and '-', "
            "starting with a letter and not ending with '-' (64 characters at most)",
            file=file,
            field=field_path,
        )
    return skill_id


def read_limited(path: Path, *, limit: int = MAX_MANIFEST_BYTES, label: str | None = None) -> str:
    """Read a small text file, refusing files over ``limit`` bytes or not UTF-8."""
    where = label or str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ManifestError(f"cannot read: {exc.strerror}", file=where) from exc
    if size > limit:
        raise ManifestError(f"file is {size} bytes; the limit is {limit}", file=where)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError("file is not UTF-8 text", file=where) from exc


def inside(base: Path, rel: str, *, file: str, field_path: str, must_exist: bool = True) -> Path:
    """Resolve ``rel`` against ``base``, refusing absolute paths and escapes (also via symlinks)."""
    if not isinstance(rel, str) or not rel:
        raise ManifestError(
            "expected a relative path inside the package", file=file, field=field_path
        )
    if os.path.isabs(rel) or rel.startswith("~"):
        raise ManifestError(
            f"{rel!r} is absolute; use a path relative to the package directory",
            file=file,
            field=field_path,
        )
    base_real = base.resolve()
    target = (base_real / rel).resolve()
    if target != base_real and base_real not in target.parents:
        raise ManifestError(
            f"{rel!r} points outside the package directory", file=file, field=field_path
        )
    if must_exist and not target.exists():
        raise ManifestError(f"{rel!r} does not exist in the package", file=file, field=field_path)
    return target


def package_digest(path: Path) -> str:
    """sha256 over every file of the package (relative path and content), in a stable order."""
    h = hashlib.sha256()
    total = 0
    count = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(".pyc"):
                continue
            full = Path(dirpath) / name
            if full.is_symlink() or not full.is_file():
                continue
            rel = full.relative_to(path).as_posix()
            data = full.read_bytes()
            count += 1
            total += len(data)
            if count > MAX_PACKAGE_FILES or total > MAX_PACKAGE_BYTES:
                raise ManifestError(
                    f"package is larger than {MAX_PACKAGE_FILES} files or {MAX_PACKAGE_BYTES} bytes",
                    file=str(path),
                )
            h.update(rel.encode())
            h.update(b"\0")
            h.update(hashlib.sha256(data).digest())
    return "sha256:" + h.hexdigest()


def load_package(path: Path, *, root: str = "memory") -> SkillPackage:
    """Load the package in directory ``path`` with the loader its manifest calls for."""
    for name, target in FORMATS:
        if (path / name).is_file():
            module, func = target.split(":")
            try:
                mod = importlib.import_module(module)
            except ImportError as exc:
                raise ManifestError(
                    f"{name} packages need an optional part of skillyard that is not installed ({exc})",
                    file=str(path / name),
                ) from exc
            loader: Callable[..., SkillPackage] = getattr(mod, func)
            return loader(path, root=root)
    raise ManifestError(
        f"no manifest found; expected one of {', '.join(n for n, _ in FORMATS)}", file=str(path)
    )


__all__ = [
    "FORMATS",
    "SkillPackage",
    "check_skill_id",
    "inside",
    "load_package",
    "manifest_file",
    "package_digest",
    "read_limited",
]
