from __future__ import annotations

from pathlib import Path

import orjson

from tests.cli_helpers import run


def test_session_lifecycle_across_invocations(tmp_path):
    home = tmp_path / "home"
    created = orjson.loads(run(home, "--json", "session", "create", "nb", "--ttl", "9999").stdout)
    assert created["ttl_sec"] == 3600 and created["generation"] == 1
    lease = created["lease_id"]
    listed = orjson.loads(run(home, "--json", "session", "list").stdout)
    assert [x["lease_id"] for x in listed] == [lease]
    again = run(home, "--json", "session", "create", "nb")
    assert again.returncode == 1
    assert orjson.loads(again.stdout)["error"]["code"] == "lease_exists"
    # the VM lived in the process that created the lease
    evaluated = run(home, "session", "eval", lease, "return 1")
    assert evaluated.returncode == 1 and "lease_expired" in evaluated.stderr
    assert run(home, "session", "close", lease).returncode == 0
    status = run(home, "--json", "session", "status", lease)
    assert orjson.loads(status.stdout)["error"]["code"] == "lease_closed"
    everything = orjson.loads(run(home, "--json", "session", "list", "--all").stdout)
    assert [x["state"] for x in everything] == ["closed"]


def test_session_run_and_repl_keep_globals(tmp_path):
    home = tmp_path / "home"
    out = run(
        home,
        "--json",
        "session",
        "run",
        "calc",
        "x = 40",
        "return x + (...).n",
        "--args",
        '{"n": 2}',
    )
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout)["values"] == [None, 42]
    repl = run(home, "session", "repl", "r", stdin="y = 6\nprint(y)\nerror('bad')\nreturn y * 7\n")
    assert repl.returncode == 0, repl.stderr
    assert repl.stdout.splitlines() == ["null", "6", "null", "42"]
    assert "eval:1: bad" in repl.stderr
    assert orjson.loads(run(home, "--json", "session", "list").stdout) == []


def test_describe_shows_the_luaskills_help(tmp_path):
    import shutil

    home = tmp_path / "home"
    user = home / "skills" / "user"
    user.mkdir(parents=True)
    examples = Path(__file__).resolve().parent.parent / "examples" / "skills"
    shutil.copytree(examples / "lua-notes", user / "lua-notes")
    out = run(home, "describe", "lua-notes-add")
    assert out.returncode == 0, out.stderr
    assert "help [usage]" in out.stdout and "# Notes" in out.stdout
