"""Call memo: a persistent result cache and record/replay cassettes, as pipeline middleware.

``install(runtime)`` is listed in ``skillyard.runtime.EXTENSIONS``; it reads the
``[memo]`` section of the runtime's config. :func:`use_cassette` puts a cassette
in front of every call of a runtime::

    with use_cassette(runtime, "weather", mode="once") as cassette:
        await runtime.call("weather-forecast", {"city": "Oslo"})
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skillyard.errors import ConfigError
from skillyard.memo.config import MemoConfig, RecordMode
from skillyard.memo.middleware import Memo

if TYPE_CHECKING:
    from skillyard.memo.cassette import ArgsFilter, BeforeRecord, Cassette, Matcher
    from skillyard.runtime import Runtime


def install(runtime: Runtime) -> Memo:
    """Add the memo middleware to ``runtime`` (once), configured from ``config["memo"]``."""
    existing = memo_of(runtime)
    if existing is not None:
        return existing
    base = runtime.home.path if runtime.home is not None else None
    config = MemoConfig.from_mapping(runtime.config.get("memo"), base_dir=base)
    memo = Memo(runtime, config)
    runtime.use(memo)
    if config.cassette is not None:
        cassette = _make(memo, config.cassette, mode=config.cassette_mode)
        cassette.open()
        if cassette.replays:
            cassette.register_cards(runtime)
        memo.push_cassette(cassette)
    return memo


def memo_of(runtime: Runtime) -> Memo | None:
    """The memo middleware installed in ``runtime``, if any."""
    for mw in runtime.middleware:
        if isinstance(mw, Memo):
            return mw
    return None


def cassette_path(memo: Memo, name: str | Path, *, directory: str | Path | None = None) -> Path:
    """Where the cassette ``name`` lives: a path as given, or ``<dir>/<name>.<format>``."""
    raw = str(name)
    if not raw or "\0" in raw:
        raise ConfigError(f"invalid cassette name {raw!r}")
    path = Path(raw)
    if not path.is_absolute():
        if ".." in path.parts:
            raise ConfigError(f"cassette name {raw!r} must not contain '..'")
        path = Path(directory) / path if directory is not None else memo.cassette_dir / path
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        path = path.with_name(f"{path.name}.{memo.config.cassette_format}")
    return path


def _make(memo: Memo, name: str | Path, **kw: Any) -> Cassette:
    from skillyard.memo.cassette import Cassette

    kw.setdefault("match_on", memo.config.cassette_match_on)
    kw.setdefault("record_private", memo.config.record_private)
    kw.setdefault("max_bytes", memo.config.max_cassette_bytes)
    directory = kw.pop("directory", None)
    return Cassette(cassette_path(memo, name, directory=directory), **kw)


@contextmanager
def use_cassette(
    runtime: Runtime,
    name: str | Path,
    *,
    mode: RecordMode = "once",
    directory: str | Path | None = None,
    match_on: Iterable[str | Matcher] | None = None,
    filter_args: Sequence[str] | ArgsFilter = (),
    before_record: BeforeRecord | None = None,
    record_private: Iterable[str] | None = None,
    redact_secrets: bool = True,
    allow_playback_repeats: bool = False,
    register_cards: bool = True,
) -> Iterator[Cassette]:
    """Route every call of ``runtime`` through the cassette ``name`` inside the block.

    In modes that replay, tools the runtime lacks are added from the cards the
    cassette recorded, so a recording replays with the skill gone.
    """
    memo = install(runtime)
    kw: dict[str, Any] = {
        "mode": mode,
        "directory": directory,
        "filter_args": filter_args,
        "before_record": before_record,
        "redact_secrets": redact_secrets,
        "allow_playback_repeats": allow_playback_repeats,
    }
    if match_on is not None:
        kw["match_on"] = tuple(match_on)
    if record_private is not None:
        kw["record_private"] = frozenset(record_private)
    cassette = _make(memo, name, **kw).open()
    if register_cards and cassette.replays:
        cassette.register_cards(runtime)
    memo.push_cassette(cassette)
    try:
        yield cassette
    finally:
        memo.pop_cassette(cassette)


__all__ = ["Memo", "MemoConfig", "cassette_path", "install", "memo_of", "use_cassette"]
