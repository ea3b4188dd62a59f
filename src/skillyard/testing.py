"""pytest helpers for skillyard: an in-memory runtime and record/replay cassettes.

This module is a pytest plugin (installed with skillyard, entry point
``pytest11``), so it stays light: skillyard itself is imported only when a
fixture is used. Fixtures and the marker::

    @pytest.mark.skillyard_cassette("forecast", mode="once", filter_args=["api_key"])
    def test_forecast(skillyard_runtime, cassette):
        skillyard_runtime.runtime.add_package("skills/weather")
        result = skillyard_runtime.call("weather-forecast", {"city": "Oslo"})
        assert result.output["city"] == "Oslo"

``skillyard_runtime`` is a :class:`~skillyard.runtime.SyncRuntime` with state in
memory; override the ``skillyard_runtime_options`` fixture to pass it options.
With the marker (or when the test asks for ``cassette``) every call goes through
the cassette ``cassettes/<test module>/<name>.json`` next to the test file.
``--skillyard-record-mode`` overrides every cassette's mode for one run.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from skillyard.memo.cassette import Cassette
    from skillyard.runtime import SyncRuntime

MODES = ("once", "new_episodes", "none", "all", "rewrite")
MARKER = "skillyard_cassette"
_ACTIVE = pytest.StashKey["Cassette"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("skillyard")
    group.addoption(
        "--skillyard-record-mode",
        choices=MODES,
        default=None,
        help="record mode for every skillyard cassette in this run (overrides markers)",
    )
    parser.addini(
        "skillyard_cassette_dir",
        "directory for skillyard cassettes, relative to the rootdir "
        "(default: cassettes/<module> next to each test file)",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(name=None, *, mode='once', **options): route the test's skillyard_runtime "
        "calls through a record/replay cassette",
    )


def _cassette_dir(request: pytest.FixtureRequest) -> Path:
    configured = request.config.getini("skillyard_cassette_dir")
    module = Path(str(request.node.path))
    if configured:
        return Path(request.config.rootpath) / configured / module.stem
    return module.parent / "cassettes" / module.stem


def _default_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_") or "cassette"


def _start(request: pytest.FixtureRequest, sync_rt: SyncRuntime) -> Generator[Cassette, None, None]:
    from skillyard.memo import use_cassette

    marker = request.node.get_closest_marker(MARKER)
    args: tuple[Any, ...] = marker.args if marker is not None else ()
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    if len(args) > 1:
        raise pytest.UsageError(f"@pytest.mark.{MARKER} takes one positional argument, the name")
    name = options.pop("name", None) or (args[0] if args else _default_name(request))
    mode = request.config.getoption("--skillyard-record-mode") or options.pop("mode", "once")
    options.pop("mode", None)
    options.setdefault("directory", _cassette_dir(request))
    with use_cassette(sync_rt.runtime, name, mode=mode, **options) as cassette:
        request.node.stash[_ACTIVE] = cassette
        yield cassette


@pytest.fixture
def skillyard_runtime_options() -> dict[str, Any]:
    """Keyword arguments for ``SyncRuntime.memory`` (override to add roots, config...)."""
    return {}


@pytest.fixture
def skillyard_runtime(
    request: pytest.FixtureRequest, skillyard_runtime_options: dict[str, Any]
) -> Iterator[SyncRuntime]:
    """A runtime with in-memory state; with the cassette marker, calls go through it."""
    from skillyard.runtime import SyncRuntime

    rt = SyncRuntime.memory(**skillyard_runtime_options)
    try:
        if request.node.get_closest_marker(MARKER) is not None:
            active = _start(request, rt)
            next(active)
            try:
                yield rt
            finally:
                active.close()
        else:
            yield rt
    finally:
        rt.close()


@pytest.fixture
def cassette(request: pytest.FixtureRequest, skillyard_runtime: SyncRuntime) -> Iterator[Cassette]:
    """The cassette of this test (from the marker, or named after the test, mode ``once``)."""
    active = request.node.stash.get(_ACTIVE, None)
    if active is not None:
        yield active
        return
    started = _start(request, skillyard_runtime)
    try:
        yield next(started)
    finally:
        started.close()
