"""The warm package index: skip re-validating packages whose files have not changed.

Validating a manifest completely (TOML, JSON Schema meta-checks, path checks,
content digest) costs milliseconds per package; a runtime home with a thousand
packages would pay seconds at every start. The index keeps each loaded package's
cards in the state database, keyed by its directory, layer and a fingerprint of
every file's (path, size, mtime). A changed, added or removed file changes the
fingerprint and the package is loaded and validated again from scratch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import orjson

from skillyard.card import Card, Limits, Policy
from skillyard.manifests import _SKIP_DIRS, SkillPackage
from skillyard.store import Store

_CARD_KEYS = {f.name for f in dataclasses.fields(Card)}

_VERSION = "1"  # bump when the loaders' output changes shape


def fingerprint(path: Path) -> str:
    """A cheap identity of a package's files: names, sizes and modification times."""
    h = hashlib.sha1(_VERSION.encode(), usedforsecurity=False)
    stack = [str(path)]
    while stack:
        with os.scandir(stack.pop()) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if e.name not in _SKIP_DIRS:
                    stack.append(e.path)
                continue
            st = e.stat(follow_symlinks=False)
            h.update(f"{e.path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n".encode())
    return h.hexdigest()


_interned: dict[tuple[Any, ...], Any] = {}


def _value(cls: type, data: dict[str, Any]) -> Any:
    # Most cards share a handful of policies and limits: build each distinct one once.
    key = (cls, *sorted(data.items()))
    hit = _interned.get(key)
    if hit is None:
        if len(_interned) > 4096:
            _interned.clear()
        hit = _interned[key] = cls(**data)
    return hit


def _card(data: dict[str, Any]) -> Card:
    # Rows were written by _to_json from validated cards, so they are rebuilt without the
    # frozen dataclass __init__ (~6 us a card, most of a warm start's cost).
    kw = dict(data)
    kw["policy"] = _value(Policy, data["policy"])
    kw["limits"] = _value(Limits, data["limits"])
    kw["roles"] = tuple(data["roles"])
    kw["capabilities"] = tuple(data["capabilities"])
    if kw.keys() != _CARD_KEYS:
        raise ValueError("index row does not hold a complete card")
    card = object.__new__(Card)
    card.__dict__.update(kw)
    return card


def _to_json(pkg: SkillPackage) -> bytes:
    return orjson.dumps(
        {
            "id": pkg.id,
            "version": pkg.version,
            "description": pkg.description,
            "runtime": pkg.runtime,
            "digest": pkg.digest,
            "format": pkg.format,
            "cards": [c.to_dict() for c in pkg.cards],
            "permissions": pkg.permissions,
            "config": list(pkg.config),
            "help": {k: str(v) for k, v in pkg.help.items()},
        }
    )


def _from_json(data: dict[str, Any], path: Path, layer: str) -> SkillPackage:
    return SkillPackage(
        id=data["id"],
        version=data["version"],
        description=data["description"],
        runtime=data["runtime"],
        path=path,
        root=layer,
        digest=data["digest"],
        format=data["format"],
        cards=tuple(_card(c) for c in data["cards"]),
        permissions=data["permissions"],
        config=tuple(data["config"]),
        help={k: Path(v) for k, v in data["help"].items()},
    )


class PackageIndex:
    """Loaded packages cached in the runtime's SQLite, keyed by (directory, layer)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate(
            "package_index",
            [
                "CREATE TABLE package_index (path TEXT NOT NULL, layer TEXT NOT NULL, "
                "fingerprint TEXT NOT NULL, package BLOB NOT NULL, PRIMARY KEY (path, layer))"
            ],
        )
        self._rows: dict[tuple[str, str], tuple[str, bytes]] | None = None

    def _all(self) -> dict[tuple[str, str], tuple[str, bytes]]:
        if self._rows is None:
            rows = self.store.query("SELECT path, layer, fingerprint, package FROM package_index")
            self._rows = {(p, layer): (fp, blob) for p, layer, fp, blob in rows}
        return self._rows

    def get(self, path: Path, layer: str, fp: str) -> SkillPackage | None:
        """The cached package when its fingerprint still matches, else ``None``."""
        row = self._all().get((str(path), layer))
        if row is None or row[0] != fp:
            return None
        try:
            return _from_json(orjson.loads(row[1]), path, layer)
        except Exception:  # a damaged row is a miss: the package is loaded afresh
            return None

    def put(self, pkg: SkillPackage, layer: str, fp: str) -> None:
        """Remember a freshly loaded package."""
        blob = _to_json(pkg)
        self.store.execute(
            "INSERT INTO package_index(path, layer, fingerprint, package) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(path, layer) DO UPDATE SET fingerprint=excluded.fingerprint, "
            "package=excluded.package",
            (str(pkg.path), layer, fp, blob),
        )
        self._all()[(str(pkg.path), layer)] = (fp, blob)
