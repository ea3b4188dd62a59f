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
Like the card digest, stamps leave out the ``__pycache__``, ``.git``, ``.venv`` and
``node_modules`` directories: what changes inside them does not make a package stale.

The cached package is stored as compact JSON and rebuilt without re-running
validation. Cards that come out of the index are :class:`~skillyard.card.Card`
instances equal to the loader's (a private subclass that decodes its two schemas on
first access; listing and resolving tools never need them), with the same
:attr:`~skillyard.card.Card.digest`: sha256 over the relative names and contents of
the package's files, computed by the loader. Rows of packages a discovery no longer
finds under the roots it walked are dropped at its end, in the same transaction as
the rows it wrote.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from skillyard import __version__
from skillyard.card import Card, Limits, Policy
from skillyard.manifests import _SKIP_DIRS, MAX_PACKAGE_BYTES, MAX_PACKAGE_FILES, SkillPackage
from skillyard.store import Store

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


def _unchanged(path: str, names: list[str], sig: bytes) -> bool:
    # One stat per entry the stamp names (the package directory followed, as discovery does)
    # and no file read; the signatures are compared as the JSON bytes they were stored as.
    try:
        st = os.stat(path)
        cur = [st.st_mode, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        lstat = os.lstat
        for i in range(1, len(names)):
            st = lstat(path + names[i])
            cur += (st.st_mode, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except (OSError, ValueError):
        return False
    return orjson.dumps(cur) == sig


def _newest(sig: list[int]) -> int:
    return max(max(sig[4::_SIG]), max(sig[5::_SIG]))


def content_hash(path: str, names: list[str], sig: list[int]) -> str:
    """sha256 over every entry's name and content (a symlink's target for links).

    Raises OSError for a package larger than a package may be (the loader then says so)
    and for a file that is no longer a regular file (it is never opened as a FIFO).
    """
    if sum(sig[3::_SIG]) > MAX_PACKAGE_BYTES:
        raise OSError(f"{path}: larger than {MAX_PACKAGE_BYTES} bytes")
    h = hashlib.sha256()
    for n, rel in enumerate(names):
        mode = sig[n * _SIG]
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        if stat.S_ISREG(mode):
            fd = os.open(path + rel, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(f"{path + rel}: no longer a regular file")
                h.update(hashlib.file_digest(f, "sha256").digest())
        elif stat.S_ISLNK(mode):
            h.update(os.fsencode(os.readlink(path + rel)))
        h.update(b"\n")
    return h.hexdigest()


# -- the stored package ---------------------------------------------------------------------

# A stored package is a JSON array; each card a JSON object holding the card's fields, except
# that its policy and limits are indexes into the package's list of distinct ones, kept as JSON
# text (their exact interning key: most cards of a home share a handful, built once and rarely
# even parsed), its schemas are JSON text decoded on first use (listing and resolving tools
# never need them), and the fields that repeat the package's id, version, digest, layer and
# path are left out.
_CARD_FIELDS = tuple(Card.__dataclass_fields__)
_LAZY = ("input_schema", "output_schema")
_SAME = ("id", "version", "digest", "root", "source")
_STORED_KEYS = frozenset(set(_CARD_FIELDS) - set(_LAZY) | {"_schemas"})
_TRIMMED = len(_STORED_KEYS) - len(_SAME)
_PKG_FIELDS = (
    "id",
    "version",
    "description",
    "runtime",
    "path",
    "root",
    "digest",
    "format",
    "cards",
    "permissions",
    "config",
    "help",
)
# SkillPackage is rebuilt without its frozen __init__ (as costly as the rest of a package's
# decoding) while it stays a plain dataclass of exactly these fields.
_PKG_DIRECT = tuple(SkillPackage.__dataclass_fields__) == _PKG_FIELDS and not hasattr(
    SkillPackage, "__post_init__"
)
_LAYOUT = hashlib.sha1(
    repr(
        (_CARD_FIELDS, tuple(Policy.__dataclass_fields__), tuple(Limits.__dataclass_fields__))
    ).encode(),
    usedforsecurity=False,
).hexdigest()[:12]
# Rows of another layout or another release are misses; bump the first number when a loader's
# output changes shape within a release.
_VERSION = f"7:{__version__}:{_LAYOUT}"

_interned: dict[tuple[type, str], Any] = {}


def _value(cls: type, text: str) -> Any:
    key = (cls, text)
    hit = _interned.get(key)
    if hit is None:
        if len(_interned) > 4096:
            _interned.clear()
        hit = _interned[key] = cls(**orjson.loads(text))
    return hit


class _Schemas:
    """Decodes a stored card's schemas into its ``__dict__`` the first time either is read.

    A non-data descriptor: once the values are in the instance dict, attribute lookup finds
    them there and this is never called again.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, card: Card | None, owner: type | None = None) -> Any:
        if card is None:
            return self
        d = card.__dict__
        raw = d.get("_schemas")
        if raw is not None:
            d["input_schema"], d["output_schema"] = orjson.loads(raw)
            d.pop("_schemas", None)
        return d[self.name]


class _StoredCard(Card):
    """A :class:`Card` rebuilt from the index: equal to the loader's card, schemas decoded
    on first access (``to_dict``, ``==``, ``dataclasses.replace`` all see the same values)."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Card):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _CARD_FIELDS)

    __hash__ = object.__hash__  # cards are compared by value but keyed by identity

    def __repr__(self) -> str:
        return Card.__repr__(self).replace(type(self).__qualname__, "Card", 1)


for _name in _LAZY:
    setattr(_StoredCard, _name, _Schemas(_name))


def _card(data: dict[str, Any], same: dict[str, str], shared: list[Any]) -> Card:
    # Rows were written by _encode from validated cards, so they are rebuilt without the
    # frozen dataclass __init__ (~6 us a card, most of a warm start's cost).
    policy, limits = data["policy"], data["limits"]
    data["policy"] = shared[policy]
    data["limits"] = shared[limits]
    if type(data["policy"]) is not Policy or type(data["limits"]) is not Limits:
        raise ValueError("index row does not hold a complete card")
    data["roles"] = tuple(data["roles"])
    data["capabilities"] = tuple(data["capabilities"])
    if len(data) == _TRIMMED:  # the usual case: every repeated field was left out
        data.update(same)
    else:
        for key, value in same.items():
            if key not in data:
                data[key] = value
    # Rows come from _encode and a damaged one fails to parse; a count is enough here.
    if len(data) != len(_STORED_KEYS) or not isinstance(data["_schemas"], str):
        raise ValueError("index row does not hold a complete card")
    card = object.__new__(_StoredCard)
    object.__setattr__(card, "__dict__", data)
    return card


def _encode(pkg: SkillPackage, path: str, layer: str) -> bytes:
    same = dict(zip(_SAME, (pkg.id, pkg.version, pkg.digest, layer, path), strict=True))
    cards = []
    shared: list[list[str]] = []  # ["policy", json text] or ["Limits", json text], each once
    for card in pkg.cards:
        data = card.to_dict()  # the documented lossless JSON form
        for key in ("policy", "limits"):
            entry = [key, orjson.dumps(data[key]).decode()]
            if entry not in shared:
                shared.append(entry)
            data[key] = shared.index(entry)
        data["_schemas"] = orjson.dumps([data.pop(name) for name in _LAZY]).decode()
        for key, value in same.items():
            if data[key] == value:
                del data[key]
        cards.append(data)
    return orjson.dumps(
        [
            pkg.id,
            pkg.version,
            pkg.description,
            pkg.runtime,
            pkg.digest,
            pkg.format,
            cards,
            pkg.permissions,
            list(pkg.config),
            {k: _help_path(str(v), path) for k, v in pkg.help.items()},
            shared,
        ]
    )


def _help_path(value: str, path: str) -> str | list[str]:
    # A help file inside the package is stored relative to it, as a one-item list.
    if value.startswith(path + "/") and Path(path) / value[len(path) + 1 :] == Path(value):
        return [value[len(path) + 1 :]]
    return value


def _decode(blob: bytes, path: str, layer: str, parents: dict[str, Path]) -> SkillPackage:
    (pid, version, description, runtime, digest, fmt, cards, perms, config, help_, values) = (
        orjson.loads(blob)
    )
    shared = [_value(Policy if kind == "policy" else Limits, text) for kind, text in values]
    same = {"id": pid, "version": version, "digest": digest, "root": layer, "source": path}
    # Joining a name to its root's Path, parsed once, costs half of parsing the whole path.
    parent, _, name = path.rpartition("/")
    if parent and name:
        base = parents.get(parent)
        if base is None:
            base = parents[parent] = Path(parent)
        pkg_path = base / name
    else:
        pkg_path = Path(path)
    fields = {
        "id": pid,
        "version": version,
        "description": description,
        "runtime": runtime,
        "path": pkg_path,
        "root": layer,
        "digest": digest,
        "format": fmt,
        "cards": tuple([_card(c, same, shared) for c in cards]),
        "permissions": perms,
        "config": tuple(config),
        "help": {k: pkg_path / v[0] if type(v) is list else Path(v) for k, v in help_.items()},
    }
    if not _PKG_DIRECT:
        return SkillPackage(**fields)
    pkg = object.__new__(SkillPackage)
    object.__setattr__(pkg, "__dict__", fields)
    return pkg


class _Row(NamedTuple):
    version: str
    names: bytes  # UTF-8 entry names joined by NUL, the package directory ("") first
    sig: bytes  # JSON array of _SIG ints per entry
    racy: str | None  # content hash when the stamp is racy
    package: bytes


class PackageIndex:
    """Loaded packages cached in the runtime's SQLite, keyed by (directory, layer)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate(
            "package_index",
            [
                "CREATE TABLE package_index (path TEXT NOT NULL, layer TEXT NOT NULL, "
                "fingerprint TEXT NOT NULL, package BLOB NOT NULL, PRIMARY KEY (path, layer))",
                # Stamps replaced a hash of the walk, then got columns of their own; the
                # index is a cache, so old rows are simply dropped.
                [
                    "DROP TABLE package_index",
                    "CREATE TABLE package_index (path TEXT NOT NULL, layer TEXT NOT NULL, "
                    "stamp BLOB NOT NULL, package BLOB NOT NULL, PRIMARY KEY (path, layer))",
                ],
                [
                    "DROP TABLE package_index",
                    "CREATE TABLE package_index (path TEXT NOT NULL, layer TEXT NOT NULL, "
                    "version TEXT NOT NULL, names BLOB NOT NULL, sig BLOB NOT NULL, racy TEXT, "
                    "package BLOB NOT NULL, PRIMARY KEY (path, layer))",
                ],
            ],
        )
        self._rows: dict[tuple[str, str], _Row] | None = None
        self._pending: dict[tuple[str, str], _Row] = {}
        self._parents: dict[str, Path] = {}
        self._kept: set[tuple[str, str]] = set()

    def _all(self) -> dict[tuple[str, str], _Row]:
        if self._rows is None:
            rows = self.store.query(
                "SELECT path, layer, version, names, sig, racy, package FROM package_index"
            )
            self._rows = {(r[0], r[1]): _Row(*r[2:]) for r in rows}
        return self._rows

    def fresh(self, path: str, layer: str) -> bytes | None:
        """The stored package of ``path`` when none of its files changed, else ``None``."""
        row = self._all().get((path, layer))
        if row is None or row.version != _VERSION:
            return None
        try:
            names = row.names.decode().split("\0")
            if row.racy is None:
                blob = row.package if _unchanged(path, names, row.sig) else None
            else:
                blob = self._verify(path, layer, names, row)
        except Exception:  # a damaged stamp, or a file that vanished mid-check: a miss
            return None
        if blob is not None:
            self._kept.add((path, layer))
        return blob

    def _verify(self, path: str, layer: str, names: list[str], row: _Row) -> bytes | None:
        # A racy stamp: equal signatures may hide an edit made within one timestamp tick,
        # so walk again and compare contents before trusting it.
        started = time.time_ns()
        stamp = scan(path)
        if stamp is None or stamp[0] != names or orjson.dumps(stamp[1]) != row.sig:
            return None
        if content_hash(path, *stamp) != row.racy:
            return None
        if _newest(stamp[1]) < started - RACY_NS:  # aged: later edits will show in the stamp
            self._store(path, layer, row._replace(racy=None))
        return row.package

    def package(self, blob: bytes, path: str, layer: str) -> SkillPackage | None:
        """Rebuild a stored package (``None`` for a damaged row)."""
        try:
            return _decode(blob, path, layer, self._parents)
        except Exception:  # a damaged row is a miss: the package is loaded afresh
            return None

    def stamp(self, path: str) -> _Row | None:
        """Walk a package about to be loaded (before loading it, so that an edit made while
        it loads shows up next time); ``None`` when it cannot be stamped."""
        started = time.time_ns()
        try:
            stamp = scan(path)
            if stamp is None:
                return None
            names, sig = stamp
            # A name that is not UTF-8 cannot be stored: such packages stay uncached.
            joined = "\0".join(names).encode()
            racy = content_hash(path, names, sig) if _newest(sig) >= started - RACY_NS else None
        except (OSError, UnicodeError):
            return None
        return _Row(_VERSION, joined, orjson.dumps(sig), racy, b"")

    def put(self, path: str, layer: str, stamp: _Row | None, pkg: SkillPackage) -> None:
        """Remember a package just loaded from scratch under the stamp taken before."""
        if stamp is not None:
            self._store(path, layer, stamp._replace(package=_encode(pkg, path, layer)))

    def _store(self, path: str, layer: str, row: _Row) -> None:
        self._all()[(path, layer)] = row
        self._pending[(path, layer)] = row
        self._kept.add((path, layer))

    def flush(self, scanned: Iterable[tuple[str, str]] = ()) -> None:
        """Write the rows stored since the last flush, in one transaction.

        ``scanned`` names the (root directory, layer) pairs a discovery walked completely:
        their rows that it neither found fresh nor stored (removed packages, directories
        that are no longer packages, packages now broken) are dropped.
        """
        where = set(scanned)
        gone = [
            key
            for key in self._all()
            if key not in self._kept and (key[0].rpartition("/")[0], key[1]) in where
        ]
        rows = [(path, layer, *row) for (path, layer), row in self._pending.items()]
        self._pending.clear()
        self._kept.clear()
        if not rows and not gone:
            return
        for key in gone:
            del self._all()[key]
        try:
            self._write(rows, gone)
        except sqlite3.Error:
            # The index is a cache: a state file that is locked or read-only only means the
            # packages are validated again next time, never a failed discovery.
            self._rows = None

    def _write(self, rows: list[tuple[Any, ...]], gone: list[tuple[str, str]]) -> None:
        with self.store.transaction() as conn:
            conn.executemany("DELETE FROM package_index WHERE path = ? AND layer = ?", gone)
            conn.executemany(
                "INSERT INTO package_index(path, layer, version, names, sig, racy, package) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path, layer) DO UPDATE SET "
                "version=excluded.version, names=excluded.names, sig=excluded.sig, "
                "racy=excluded.racy, package=excluded.package",
                rows,
            )
