from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

from skillyard import SyncRuntime
from skillyard.cli.main import cli

from .conftest import FakeClock, add_counter, memo


def _fill(home: Path) -> None:
    with SyncRuntime.open(home) as rt:
        add_counter(rt, "t-a")
        add_counter(rt, "t-b")
        for args in ({"x": 1}, {"x": 1}, {"x": 2}):
            rt.call("t-a", args)
        rt.call("t-b", {})


def test_cache_stats_and_clear(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _fill(home)
    runner = CliRunner()
    out = runner.invoke(cli, ["--home", str(home), "--json", "cache", "stats"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    tools = {t["tool"]: t for t in data["tools"]}
    assert data["entries"] == 3
    assert (tools["t-a"]["entries"], tools["t-a"]["hits"], tools["t-a"]["misses"]) == (2, 1, 2)
    text = runner.invoke(cli, ["--home", str(home), "cache", "stats", "t-b"])
    assert text.exit_code == 0 and "t-b" in text.output and "t-a" not in text.output
    cleared = runner.invoke(cli, ["--home", str(home), "cache", "clear", "t-a"])
    assert cleared.exit_code == 0 and "removed 2 entries of t-a" in cleared.output
    after = json.loads(runner.invoke(cli, ["--home", str(home), "--json", "cache", "stats"]).output)
    assert after["entries"] == 1 and [t["tool"] for t in after["tools"]] == ["t-b"]
    everything = runner.invoke(cli, ["--home", str(home), "--json", "cache", "clear"])
    assert json.loads(everything.output)["removed"] == 1


def test_cache_clear_expired_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    clock = FakeClock(time.time() + 3600)  # this entry outlives the CLI's clock
    with SyncRuntime.open(home, config={"memo": {"default_ttl_sec": 60}}) as rt:
        memo(rt).cache.clock = clock
        add_counter(rt)
        rt.call("t-count", {"x": 1})
        clock.now = 0  # an entry written "long ago" has expired for the CLI's real clock
        rt.call("t-count", {"x": 2})
    out = CliRunner().invoke(cli, ["--home", str(home), "cache", "clear", "--expired"])
    assert out.exit_code == 0 and "removed 1 expired entries" in out.output


def test_cache_stats_on_an_empty_home(tmp_path: Path) -> None:
    out = CliRunner().invoke(cli, ["--home", str(tmp_path / "new"), "cache", "stats"])
    assert out.exit_code == 0 and "no cache entries" in out.output


def test_a_bad_memo_config_is_a_usage_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[memo]\nmax_entries = -3\n")
    out = CliRunner().invoke(cli, ["--home", str(home), "cache", "stats"])
    assert out.exit_code != 0
    assert "max_entries" in str(out.exception) or "max_entries" in out.output
