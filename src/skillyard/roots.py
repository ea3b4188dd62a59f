"""The runtime home, the three layered roots, and who may see what.

Layers in priority order: ``root`` -> ``project`` -> ``user``. ROOT owns its
skill ids (a same-id package lower down is skipped with a warning); PROJECT
overrides USER. A broken package never stops the others from loading: it is
reported as a :class:`Problem`.
"""

from __future__ import annotations

import gc
import os
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from skillyard.card import Card
from skillyard.errors import ConfigError, PermissionDenied, SkillyardError
from skillyard.manifests import SkillPackage, load_package, manifest_file
from skillyard.transports.base import Caller

if TYPE_CHECKING:
    from skillyard.index import PackageIndex

LAYERS: tuple[str, ...] = ("root", "project", "user")
RootDirs = Mapping[str, Iterable[str | Path]]


@dataclass(frozen=True)
class Home:
    """A runtime home: the state database, config, keys and the default roots."""

    path: Path

    @classmethod
    def resolve(cls, home: str | Path | None = None) -> Home:
        """``home``, else ``$SKILLYARD_HOME``, else ``~/.skillyard``."""
        chosen = home or os.environ.get("SKILLYARD_HOME") or Path.home() / ".skillyard"
        return cls(Path(chosen).expanduser().absolute())

    @property
    def db_path(self) -> Path:
        return self.path / "state.db"

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    def layer_dir(self, layer: str) -> Path:
        """The default directory of one root layer inside the home."""
        return self.path / "skills" / layer

    def config(self) -> dict[str, Any]:
        """The parsed ``config.toml`` (empty when there is none)."""
        try:
            text = self.config_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{self.config_path}: not valid TOML: {exc}") from exc

    def root_dirs(self, config: Mapping[str, Any] | None = None) -> dict[str, list[Path]]:
        """Root directories per layer: ``[roots]`` in config.toml, else the home's defaults."""
        configured = (config or {}).get("roots", {})
        if not isinstance(configured, Mapping):
            raise ConfigError(f"{self.config_path}: [roots] must be a table of layer = [paths]")
        out: dict[str, list[Path]] = {}
        for layer in LAYERS:
            raw = configured.get(layer)
            if raw is None:
                out[layer] = [self.layer_dir(layer)]
                continue
            if isinstance(raw, str):
                raw = [raw]
            if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
                raise ConfigError(
                    f"{self.config_path}: roots.{layer} must be a path or a list of paths"
                )
            out[layer] = [(self.path / Path(p).expanduser()).absolute() for p in raw]
        unknown = sorted(set(configured) - set(LAYERS))
        if unknown:
            raise ConfigError(
                f"{self.config_path}: roots.{unknown[0]} is not a layer; use root, project or user"
            )
        return out


@dataclass(frozen=True)
class Problem:
    """A package that did not load, or was skipped, and why."""

    path: str
    layer: str
    kind: Literal["broken", "owned", "shadowed", "refused"]
    message: str
    skill_id: str | None = None
    error: SkillyardError | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "layer": self.layer,
            "kind": self.kind,
            "skill_id": self.skill_id,
            "message": self.message,
        }


@dataclass
class Discovery:
    """The result of scanning the roots: loaded packages and problems."""

    packages: dict[str, SkillPackage] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def _candidates(directory: str) -> list[str]:
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [e.path for e in entries if e.is_dir() and not e.name.startswith(".")]


@contextmanager
def _gc_paused() -> Iterator[bool]:
    # Rebuilding a thousand cached packages allocates ~10^5 containers, none of them garbage;
    # the cyclic collector would walk them over and over (a third of a warm discovery).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield enabled
    finally:
        if enabled:
            gc.enable()


@contextmanager
def _gc_resumed(enabled: bool) -> Iterator[None]:
    # Loaders parse and validate at length and may leave cycles behind: collect meanwhile.
    if enabled:
        gc.enable()
    try:
        yield
    finally:
        if enabled:
            gc.disable()


def discover(
    roots: Mapping[str, Iterable[str | Path]], *, index: PackageIndex | None = None
) -> Discovery:
    """Load every package under the roots, applying ownership and override rules.

    With an ``index``, packages whose files have not changed since they were last
    validated are taken from it instead of being loaded again.
    """
    unknown = sorted(set(roots) - set(LAYERS))
    if unknown:
        raise ConfigError(f"unknown root layer {unknown[0]!r}; use root, project or user")
    found = Discovery()
    scanned = []
    with _gc_paused() as collect:
        owner: dict[str, str] = {}
        for layer in LAYERS:
            for directory in roots.get(layer, ()):
                where = str(Path(directory))
                scanned.append((where, layer))
                for pkg_dir in _candidates(where):
                    _discover_one(found, owner, pkg_dir, layer, index, collect)
    if index is not None:
        index.flush(scanned)  # one commit for every package (re)stamped or gone
    return found


def _discover_one(
    found: Discovery,
    owner: dict[str, str],
    pkg_dir: str,
    layer: str,
    index: PackageIndex | None,
    collect: bool,
) -> None:
    # A package the index holds unchanged is known to have a manifest: no need to look.
    cached = index.fresh(pkg_dir, layer) if index is not None else None
    if cached is None and manifest_file(Path(pkg_dir)) is None:
        return
    skill_id = os.path.basename(pkg_dir)
    holder = owner.get(skill_id)
    if holder == "root":
        found.problems.append(
            Problem(
                pkg_dir,
                layer,
                "owned",
                f"skipped: skill id {skill_id!r} is owned by the ROOT layer",
                skill_id,
            )
        )
        return
    if holder is not None:
        found.problems.append(
            Problem(
                pkg_dir,
                layer,
                "shadowed",
                f"skipped: {holder.upper()} already provides {skill_id!r}",
                skill_id,
            )
        )
        return
    pkg = index.package(cached, pkg_dir, layer) if index is not None and cached else None
    if pkg is None:
        try:
            with _gc_resumed(collect):
                pkg = _load(pkg_dir, layer, index)
        except SkillyardError as exc:
            # A loader that refuses on permissions (a wasm module's requirements)
            # is a refusal, not a broken package.
            kind: Literal["broken", "refused"] = (
                "refused" if isinstance(exc, PermissionDenied) else "broken"
            )
            found.problems.append(Problem(pkg_dir, layer, kind, str(exc), skill_id, exc))
            return
        except Exception as exc:  # a loader bug must not stop the other packages
            found.problems.append(
                Problem(pkg_dir, layer, "broken", f"{type(exc).__name__}: {exc}", skill_id)
            )
            return
    owner[skill_id] = layer
    found.packages[skill_id] = pkg


def _load(pkg_dir: str, layer: str, index: PackageIndex | None) -> SkillPackage:
    if index is None:
        return load_package(Path(pkg_dir), root=layer)
    stamp = index.stamp(pkg_dir)  # taken before loading: an edit made meanwhile shows up later
    pkg = load_package(Path(pkg_dir), root=layer)
    index.put(pkg_dir, layer, stamp, pkg)
    return pkg


def visible(card: Card, caller: Caller) -> bool:
    """Whether ``caller`` may see and call ``card`` (authority and capabilities)."""
    if caller.authority != "system" and (card.root == "root" or card.hidden):
        return False
    return not card.capabilities or set(card.capabilities) <= caller.capabilities
