"""The non-Python examples of docs/process-protocol.md run as written (shell + jq)."""

from __future__ import annotations

import re
from pathlib import Path

from skillyard.errors import SkillCrashed

DOC = Path(__file__).resolve().parents[2] / "docs" / "process-protocol.md"


def _sh_blocks() -> dict[str, str]:
    """The ```sh blocks of the doc, keyed by the script name in their entry comment."""
    out = {}
    for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S):
        name = re.search(r'entry = \["\./([\w.-]+)"\]', block)
        if name:
            out[name.group(1)] = block
    return out


def _package(base: Path, name: str, script_name: str, script: str, mode: str) -> Path:
    pkg = base / name
    pkg.mkdir()
    (pkg / script_name).write_text(script)
    (pkg / script_name).chmod(0o755)
    (pkg / "skill.toml").write_text(
        f'runtime = "process"\nentry = ["./{script_name}"]\n[options]\nmode = "{mode}"\n'
        '[[methods]]\nname = "run"\n'
    )
    return pkg


def test_doc_json_mode_shell_skill(rt, tmp_path):
    script = _sh_blocks()["add.sh"]
    rt.runtime.add_package(_package(tmp_path, "adder", "add.sh", script, "json"))
    assert rt.call("adder-run", {"a": 1, "b": 2}).output == {"sum": 3}


def test_doc_worker_in_shell(rt, tmp_path):
    script = _sh_blocks()["echo.sh"]
    rt.runtime.add_package(_package(tmp_path, "sh-echo", "echo.sh", script, "worker"))
    assert rt.call("sh-echo-run", {"x": [1, 2]}).output == {"echo": {"x": [1, 2]}}
    assert rt.call("sh-echo-run", {"y": "z"}).output == {"echo": {"y": "z"}}


def test_doc_json_mode_reports_a_broken_program(rt, tmp_path):
    rt.runtime.add_package(_package(tmp_path, "broken", "add.sh", "#!/bin/sh\nexit 4\n", "json"))
    try:
        rt.call("broken-run", {})
    except SkillCrashed as exc:
        assert "status 4" in str(exc)
    else:
        raise AssertionError("a program exiting with status 4 must fail the call")
