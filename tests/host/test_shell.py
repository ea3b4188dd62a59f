"""shell.exec: argv only, program allow-list, never a shell; timeout kills the group; cap."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.host.conftest import Probe


@pytest.fixture
def probe(make_probe, workspace: Path) -> Probe:
    (workspace / "keep.txt").write_text("precious")
    return make_probe(
        {
            "shell": {
                "programs": ["echo", "cat", "printf", "sleep", "sh_not_here"],
                "cwd": ["."],
                "timeout_sec": 5,
                "max_output_bytes": 64,
            }
        }
    )


def test_exec_runs_an_allowed_program_with_argv(probe: Probe) -> None:
    out = probe.value("shell.exec", argv=["echo", "hello", "world"])
    assert out == {"exit_code": 0, "stdout": "hello world\n", "stderr": "", "truncated": False}
    assert probe.value("shell.exec", argv=["cat"], stdin="piped")["stdout"] == "piped"
    assert probe.value("shell.exec", argv=["cat", "/nonexistent"])["exit_code"] != 0


@pytest.mark.parametrize(
    "arg",
    [
        "x; rm -rf keep.txt",
        "$(rm keep.txt)",
        "`rm keep.txt`",
        "x\nrm keep.txt",
        "x && rm keep.txt",
        "x | rm keep.txt",
        "> keep.txt",
    ],
    ids=["semicolon", "dollar-paren", "backticks", "newline", "and", "pipe", "redirect"],
)
def test_shell_operators_in_arguments_are_inert(probe: Probe, workspace: Path, arg: str) -> None:
    out = probe.value("shell.exec", argv=["echo", arg])
    assert out["stdout"] == arg + "\n"  # printed literally, never interpreted
    assert (workspace / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "argv",
    [
        ["sh", "-c", "rm keep.txt"],
        ["bash", "-c", "true"],
        ["echo hi; rm keep.txt"],
        ["rm", "keep.txt"],
        ["/bin/sh", "-c", "true"],
        ["./echo"],
        [sys.executable, "-c", "1"],
    ],
    ids=["sh", "bash", "command-line-as-argv0", "rm", "abs-sh", "relative", "python"],
)
def test_programs_not_allowed_are_refused(probe: Probe, workspace: Path, argv: list[str]) -> None:
    assert "is not allowed" in probe.denied("shell.exec", argv=argv)
    assert (workspace / "keep.txt").exists()


def test_command_line_strings_are_refused(probe: Probe) -> None:
    out = probe.error("shell.exec", argv="echo hi; rm keep.txt")
    assert out["code"] == "invalid_argument" and "never run through a shell" in out["message"]
    assert probe.error("shell.exec", argv=[])["code"] == "invalid_argument"
    assert probe.error("shell.exec", argv=["echo", 1])["code"] == "invalid_argument"
    assert probe.error("shell.exec", argv=["echo", "a\0b"])["code"] == "invalid_argument"


def test_program_listed_but_missing(probe: Probe) -> None:
    assert "was not found" in probe.denied("shell.exec", argv=["sh_not_here"])


def test_absolute_path_of_an_allowed_program_is_the_same_program(probe: Probe) -> None:
    echo = next(p for p in ("/usr/bin/echo", "/bin/echo") if os.path.exists(p))
    assert probe.value("shell.exec", argv=[echo, "x"])["stdout"] == "x\n"


def test_cwd_is_confined(probe: Probe, workspace: Path) -> None:
    (workspace / "sub").mkdir()
    assert probe.value("shell.exec", argv=["cat", "../keep.txt"], cwd="sub")["stdout"] == "precious"
    assert "working directory" in probe.denied("shell.exec", argv=["echo"], cwd="/")
    probe.denied("shell.exec", argv=["echo"], cwd="..")


def test_output_is_capped(probe: Probe) -> None:
    out = probe.value("shell.exec", argv=["printf", "%0200d", "0"])
    assert out["truncated"] is True and len(out["stdout"]) == 64


def test_timeout_kills_the_program(probe: Probe) -> None:
    out = probe.error("shell.exec", argv=["sleep", "30"], timeout_ms=200)
    assert out["code"] == "timeout" and "killed" in out["message"]


def test_environment_is_scrubbed(make_probe, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")
    monkeypatch.setenv("GRANTED_VAR", "visible")
    p = make_probe({"shell": ["env"], "env": ["GRANTED_VAR"]})
    out = p.value("shell.exec", argv=["env"])["stdout"]
    assert "s3cr3t" not in out and "GRANTED_VAR=visible" in out


def test_no_shell_permission(make_probe) -> None:
    assert "not allowed" in make_probe({}).denied("shell.exec", argv=["echo"])


def test_links_to_the_same_binary_are_different_programs(make_probe, tmp_path: Path) -> None:
    """Multi-call binaries (busybox): allowing one name must not allow its siblings."""
    echo = next(p for p in ("/usr/bin/echo", "/bin/echo") if os.path.exists(p))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(echo, bindir / "allowed")
    os.symlink(echo, bindir / "sibling")
    p = make_probe({"shell": {"programs": [str(bindir / "allowed")], "cwd": ["."]}})
    assert p.value("shell.exec", argv=[str(bindir / "allowed"), "ok"])["stdout"] == "ok\n"
    p.denied("shell.exec", argv=[str(bindir / "sibling"), "no"])
    p.denied("shell.exec", argv=[str(bindir / "x" / ".." / "allowed")])
