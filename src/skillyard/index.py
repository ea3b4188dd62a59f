"""The warm package index: skip re-validating packages whose files have not changed.

Validating a manifest completely (TOML, JSON Schema meta-checks, path checks,
content digest) costs milliseconds per package; a runtime home with a thousand
packages would pay seconds at every start. The index keeps each loaded package in
the state database, keyed by its directory and layer, next to a *stamp*: the
relative name and stat signature (mode, inode, device, size, mtime_ns, ctime_ns)
of the package directory and of every directory and file below it, taken by a
walk made before the package was loaded.

Freshness check (every discovery, no file is read):

- ``os.stat`` the package directory and each sub-directory the stamp names. Adding,
  removing or renaming an entry changes its directory's mtime and ctime, so equal
  directory signatures mean the same listing.
- ``os.lstat`` each file the stamp names. An edit in place changes its ctime (which,
  unlike mtime, user space cannot set back) even when the size stays the same.

Timestamps have a granularity (a clock tick on a local disk, more on network and FAT
file systems), so an edit made within one tick of the walk could leave every
signature equal. As git does for its index, a stamp whose newest mtime or ctime lies
within :data:`RACY_NS` of the walk is *racy*: it also records a hash of the files'
contents, and the next discovery trusts it only after a full walk and that hash agree
(then the stamp is stored again, no longer racy when the files have aged). Anything
that differs, or fails, is a miss: the package is loaded and validated again from
scratch. Broken packages are never cached, so their error is reported every time.

The cached package itself is stored as compact JSON and rebuilt without re-running
validation; cards that came out of the index are equal to the loader's cards, with
the same :attr:`~skillyard.card.Card.digest` (sha256 over the package's files).
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any

import orjson

from skillyard.card import Card, Limits, Policy
from skillyard.manifests import _SKIP_DIRS, MAX_PACKAGE_FILES, SkillPackage
from skillyard.store import Store

_VERSION = 2  # bump when the loaders' output or the row layout changes shape

RACY_NS = 3_000_000_000
"""Files changed this close to the walk that stamped them are verified by content."""

_SIG = 6  # ints per entry in a stamp's signature

Stamp = tuple[list[str], list[int]]


def _sig(st: os.stat_result) -> tuple[int, int, int, int, int, int]:
    return (st.st_mode, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def scan(path: str) -> Stamp | None:
    """Walk a package: names relative to ``path`` ("" first) and their stat signatures.

    A directory is stat'ed before it is listed, so a change made while walking shows
    up as a different signature next time. ``None`` when the package has more
    entries than a package may hold (the loader then reports it).
    """
    names = [""]
    sig = list(_sig(os.stat(path)))  # a symlinked package directory is followed, as discovery does
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(path + rel) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            is_dir = e.is_dir(follow_symlinks=False)
            if is_dir and e.name in _SKIP_DIRS:
                continue
            sub = f"{rel}/{e.name}"
            names.append(sub)
            sig.extend(_sig(e.stat(follow_symlinks=False)))
            if is_dir:
                stack.append(sub)
        if len(names) > MAX_PACKAGE_FILES * 2:
            return None
    return names, sig


def fingerprint(path: Path) -> str:
    """A hex identity of a package's entries and their stat signatures (for diagnostics)."""
    stamp = scan(str(path))
    return hashlib.sha1(orjson.dumps(stamp), usedforsecurity=False).hexdigest()


def _unchanged(path: str, names: list[str], sig: list[int]) -> bool:
    # One stat per entry the stamp names, the package directory followed like discovery does.
    try:
        st = os.stat(path)
        if sig[0:_SIG] != [*_sig(st)]:
            return False
        i = _SIG
        for rel in names[1:]:
            st = os.lstat(path + rel)
            if sig[i : i + _SIG] != [*_sig(st)]:
                return False
            i += _SIG
    except (OSError, ValueError):
        return False
    return True


def _newest(sig: list[int]) -> int:
    return max(max(sig[4::_SIG]), max(sig[5::_SIG]))


def content_hash(path: str, names: list[str], sig: list[int]) -> str:
    """sha256 over every entry's name and content (a symlink's target for links)."""
    h = hashlib.sha256()
    for n, rel in enumerate(names):
        mode = sig[n * _SIG]
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        if stat.S_ISREG(mode):
            with open(path + rel, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
        elif stat.S_ISLNK(mode):
            h.update(os.fsencode(os.readlink(path + rel)))
        h.update(b"\n")
    return h.hexdigest()


# -- the stored package ---------------------------------------------------------------------

_CARD_KEYS = frozenset(f for f in Card.__dataclass_fields__)
_interned: dict[tuple[Any, ...], Any] = {}


def _value(cls: type, data: dict[str, Any]) -> Any:
    # Most cards share a handful of policies and limits: build each distinct one once.
    key = (cls, *data.items())
    hit = _interned.get(key)
    if hit is None:
        if len(_interned) > 4096:
            _interned.clear()
        hit = _interned[key] = cls(**data)
    return hit


def _card(data: dict[str, Any]) -> Card:
    # Rows were written by _encode from validated cards, so they are rebuilt without the
    # frozen dataclass __init__ (~6 us a card, most of a warm start's cost).
    data["policy"] = _value(Policy, data["policy"])
    data["limits"] = _value(Limits, data["limits"])
    data["roles"] = tuple(data["roles"])
    data["capabilities"] = tuple(data["capabilities"])
    if data.keys() != _CARD_KEYS:
        raise ValueError("index row does not hold a complete card")
    card = object.__new__(Card)
    object.__setattr__(card, "__dict__", data)
    return card


def _encode(pkg: SkillPackage) -> bytes:
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


def _decode(blob: bytes, path: str, layer: str) -> SkillPackage:
    data = orjson.loads(blob)
    return SkillPackage(
        id=data["id"],
        version=data["version"],
        description=data["description"],
        runtime=data["runtime"],
        path=Path(path),
        root=layer,
        digest=data["digest"],
        format=data["format"],
        cards=tuple([_card(c) for c in data["cards"]]),
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
                "fingerprint TEXT NOT NULL, package BLOB NOT NULL, PRIMARY KEY (path, layer))",
                # The stamp replaced a hash of the walk; old rows are simply dropped.
                [
                    "DROP TABLE package_index",
                    "CREATE TABLE package_index (path TEXT NOT NULL, layer TEXT NOT NULL, "
                    "stamp BLOB NOT NULL, package BLOB NOT NULL, PRIMARY KEY (path, layer))",
                ],
            ],
        )
        self._rows: dict[tuple[str, str], tuple[bytes, bytes]] | None = None

    def _all(self) -> dict[tuple[str, str], tuple[bytes, bytes]]:
        if self._rows is None:
            rows = self.store.query("SELECT path, layer, stamp, package FROM package_index")
            self._rows = {(p, layer): (st, blob) for p, layer, st, blob in rows}
        return self._rows

    def fresh(self, path: str, layer: str) -> bytes | None:
        """The stored package of ``path`` when none of its files changed, else ``None``."""
        row = self._all().get((path, layer))
        if row is None:
            return None
        try:
            version, names, sig, racy = orjson.loads(row[0])
            if version != _VERSION:
                return None
            if racy is None:
                return row[1] if _unchanged(path, names, sig) else None
            return self._verify(path, layer, names, sig, racy, row[1])
        except Exception:  # a damaged stamp, or a file that vanished mid-check: a miss
            return None

    def _verify(
        self, path: str, layer: str, names: list[str], sig: list[int], racy: str, blob: bytes
    ) -> bytes | None:
        # A racy stamp: equal signatures may hide an edit made within one timestamp tick,
        # so walk again and compare contents before trusting it.
        started = time.time_ns()
        stamp = scan(path)
        if stamp is None or stamp != (names, sig) or content_hash(path, names, sig) != racy:
            return None
        if _newest(sig) < started - RACY_NS:  # aged: later edits will show in the stamp
            self._store(path, layer, orjson.dumps([_VERSION, names, sig, None]), blob)
        return blob

    def package(self, blob: bytes, path: str, layer: str) -> SkillPackage | None:
        """Rebuild a stored package (``None`` for a damaged row)."""
        try:
            return _decode(blob, path, layer)
        except Exception:  # a damaged row is a miss: the package is loaded afresh
            return None

    def stamp(self, path: str) -> bytes | None:
        """Walk a package about to be loaded (before loading it, so that an edit made while
        it loads shows up next time); ``None`` when it cannot be stamped."""
        started = time.time_ns()
        try:
            stamp = scan(path)
            if stamp is None:
                return None
            names, sig = stamp
            racy = content_hash(path, names, sig) if _newest(sig) >= started - RACY_NS else None
        except OSError:
            return None
        return orjson.dumps([_VERSION, names, sig, racy])

    def put(self, path: str, layer: str, stamp: bytes | None, pkg: SkillPackage) -> None:
        """Remember a package just loaded from scratch under the stamp taken before."""
        if stamp is not None:
            self._store(path, layer, stamp, _encode(pkg))

    def _store(self, path: str, layer: str, stamp: bytes, blob: bytes) -> None:
        self.store.execute(
            "INSERT INTO package_index(path, layer, stamp, package) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(path, layer) DO UPDATE SET stamp=excluded.stamp, "
            "package=excluded.package",
            (path, layer, stamp, blob),
        )
        self._all()[(path, layer)] = (stamp, blob)
