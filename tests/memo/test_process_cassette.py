"""A cassette recorded against a real process skill replays with that skill gone."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from skillyard import SyncRuntime
from skillyard.errors import CassetteMiss, SkillError
from skillyard.memo import use_cassette

WORKER = """
import os
from skillyard.worker import Error, Result, serve

def shout(args, ctx):
    if args["text"] == "":
        raise Error("nothing to shout")
    ctx.emit("progress", done=1.0)
    return Result({"text": args["text"].upper(), "pid": os.getpid()}, content=args["text"].upper())

serve({"shout": shout})
"""


def _skill(root: Path) -> Path:
    pkg = root / "loud"
    pkg.mkdir(parents=True)
    (pkg / "worker.py").write_text(textwrap.dedent(WORKER))
    (pkg / "skill.toml").write_text(
        'version = "1.0.0"\nruntime = "process"\nentry = ["{python}", "worker.py"]\n'
        '[options]\nmode = "worker"\n'
        '[[methods]]\nname = "shout"\n'
        'input_schema = { type = "object", required = ["text"], '
        'properties = { text = { type = "string" } } }\n'
    )
    return pkg


def test_a_process_skill_cassette_replays_with_the_skill_removed(tmp_path: Path) -> None:
    skills, cassettes = tmp_path / "skills", tmp_path / "cassettes"
    pkg = _skill(skills)
    with SyncRuntime.open(tmp_path / "home", roots={"project": [skills]}) as rt:
        assert rt.card("loud-shout").transport == "process"
        with use_cassette(rt.runtime, "loud", directory=cassettes, mode="once"):
            live = rt.call("loud-shout", {"text": "hi"})
            with pytest.raises(SkillError) as live_error:
                rt.call("loud-shout", {"text": ""})
    assert live.source == "live" and live.output["text"] == "HI"
    assert live.output["pid"] > 0  # it really ran in a child process

    shutil.rmtree(pkg)  # the skill is gone: no package, no worker script
    with SyncRuntime.open(tmp_path / "home2", roots={"project": [skills]}) as rt:
        assert rt.list() == []
        events: list[dict] = []
        with use_cassette(rt.runtime, "loud", directory=cassettes, mode="none"):
            assert rt.card("loud-shout").transport == "process"
            replay = rt.call("loud-shout", {"text": "hi"}, sink=events.append)
            with pytest.raises(SkillError) as replay_error:
                rt.call("loud-shout", {"text": ""})
            with pytest.raises(CassetteMiss, match=r'loud-shout\({"text":"new"}\)'):
                rt.call("loud-shout", {"text": "new"})
    assert replay.source == "cassette"
    assert (replay.output, replay.content) == (live.output, live.content)
    assert [e["kind"] for e in events] == ["progress"]
    assert replay_error.value.message == live_error.value.message


def test_a_loaded_process_skill_whose_files_vanished_still_replays(tmp_path: Path) -> None:
    skills, cassettes = tmp_path / "skills", tmp_path / "cassettes"
    pkg = _skill(skills)
    with SyncRuntime.open(tmp_path / "home", roots={"project": [skills]}) as rt:
        with use_cassette(rt.runtime, "loud", directory=cassettes, mode="once"):
            live = rt.call("loud-shout", {"text": "hey"})
    with SyncRuntime.open(tmp_path / "home", roots={"project": [skills]}) as rt:
        shutil.rmtree(pkg)  # loaded, then deleted: a live call could not start it now
        with use_cassette(rt.runtime, "loud", directory=cassettes, mode="once"):
            assert rt.call("loud-shout", {"text": "hey"}).output == live.output
