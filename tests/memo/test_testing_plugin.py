"""The pytest plugin, run in a pytest of its own (pytester)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]

TEST_FILE = """
import pytest

CALLS = []


@pytest.fixture
def skillyard_runtime(skillyard_runtime):
    @skillyard_runtime.tool("t-greet")
    def greet(args):
        CALLS.append(args)
        return {"hi": args["name"]}

    return skillyard_runtime


@pytest.mark.skillyard_cassette("greet", mode="once")
def test_greet(skillyard_runtime, cassette):
    r = skillyard_runtime.call("t-greet", {"name": NAME})
    assert r.output == {"hi": NAME}
    print("SOURCE", r.source, len(CALLS), cassette.mode)


def test_default(skillyard_runtime, cassette):
    skillyard_runtime.call("t-greet", {"name": "bo"})
    print("DEFAULT", cassette.path.name)


def test_plain(skillyard_runtime):
    assert skillyard_runtime.call("t-greet", {"name": "cy"}).source == "live"
"""


def _write(pytester: pytest.Pytester, name: str) -> None:
    pytester.makepyfile(test_x=f"NAME = {name!r}\n" + TEST_FILE)


def test_the_marker_records_then_replays(pytester: pytest.Pytester) -> None:
    _write(pytester, "ann")
    first = pytester.runpytest("-s")
    first.assert_outcomes(passed=3)
    first.stdout.fnmatch_lines(["*SOURCE live 1 once*", "*DEFAULT test_default.json*"])
    cassettes = pytester.path / "cassettes" / "test_x"
    assert sorted(p.name for p in cassettes.iterdir()) == ["greet.json", "test_default.json"]
    second = pytester.runpytest("-s")
    second.assert_outcomes(passed=3)
    second.stdout.fnmatch_lines(["*SOURCE cassette 0 once*"])


def test_the_record_mode_option_overrides_markers(pytester: pytest.Pytester) -> None:
    _write(pytester, "ann")
    pytester.runpytest().assert_outcomes(passed=3)
    _write(pytester, "zed")
    replay_only = pytester.runpytest("-s", "--skillyard-record-mode=none", "-k", "greet")
    replay_only.assert_outcomes(failed=1)
    replay_only.stdout.fnmatch_lines(['*CassetteMiss: t-greet({"name":"zed"})*greet.json*'])
    rewrite = pytester.runpytest("-s", "--skillyard-record-mode=rewrite", "-k", "greet")
    rewrite.assert_outcomes(passed=1)
    rewrite.stdout.fnmatch_lines(["*SOURCE live 1 rewrite*"])


def test_the_cassette_directory_can_be_configured(pytester: pytest.Pytester) -> None:
    _write(pytester, "ann")
    pytester.makeini("[pytest]\nskillyard_cassette_dir = recorded\n")
    pytester.runpytest().assert_outcomes(passed=3)
    assert (pytester.path / "recorded" / "test_x" / "greet.json").exists()


def test_the_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["*skillyard_cassette(name=None*"])


def test_importing_the_plugin_stays_light() -> None:
    """Every pytest run of a project with skillyard installed imports the plugin."""
    code = (
        "import sys, pytest, skillyard; before = set(sys.modules); import skillyard.testing; "
        "print(sorted(set(sys.modules) - before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['skillyard.testing']"
