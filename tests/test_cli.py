from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.cli_helpers import run

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "skills"


@pytest.fixture
def home(tmp_path):
    user = tmp_path / "home" / "skills" / "user"
    user.mkdir(parents=True)
    shutil.copytree(EXAMPLES / "text-tools", user / "text-tools")
    return tmp_path / "home"


def test_list_as_table_and_json(home):
    out = run(home, "list")
    assert out.returncode == 0, out.stderr
    assert "text-tools-stats" in out.stdout and "TOOL" in out.stdout
    data = orjson.loads(run(home, "--json", "list").stdout)
    assert {c["name"] for c in data} == {
        "text-tools-stats",
        "text-tools-slugify",
        "text-tools-extract-links",
    }


def test_call_with_inline_args_file_and_stdin(home, tmp_path):
    out = run(home, "call", "text-tools-slugify", '{"text": "Hello World"}')
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout) == {"slug": "hello-world"}
    args = tmp_path / "args.json"
    args.write_text('{"text": "From File"}')
    out = run(home, "--json", "call", "text-tools-slugify", "--args-file", str(args))
    assert orjson.loads(out.stdout)["result"]["output"] == {"slug": "from-file"}
    out = run(home, "call", "text-tools-slugify", "-", stdin='{"text": "From Stdin"}')
    assert orjson.loads(out.stdout) == {"slug": "from-stdin"}


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["call", "text-tools-slugify", "{not json"], 2, "not valid JSON"),
        (["call", "text-tools-slugify", "[1, 2]"], 2, "must be a JSON object"),
        (["call", "text-tools-slugify", '{"text": 5}'], 2, "/text"),
        (["call", "no-such-tool", "{}"], 3, "no tool named"),
        (["describe", "text-tools-slugifi"], 3, "did you mean text-tools-slugify"),
        (["frobnicate"], 2, "No such command"),
    ],
)
def test_user_errors_give_a_message_and_exit_code_not_a_traceback(home, args, code, needle):
    out = run(home, *args)
    assert out.returncode == code, (out.stdout, out.stderr)
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_json_errors_are_machine_readable(home):
    out = run(home, "--json", "call", "text-tools-slugify", '{"text": 5}')
    assert out.returncode == 2
    err = orjson.loads(out.stdout)["error"]
    assert err["code"] == "invalid_arguments" and err["details"]["pointer"] == "/text"


def test_describe_shows_schemas_and_help(home):
    out = run(home, "describe", "text-tools-stats")
    assert out.returncode == 0, out.stderr
    assert "input schema" in out.stdout and "reading time" in out.stdout
    data = orjson.loads(run(home, "--json", "describe", "text-tools-stats").stdout)
    assert data["card"]["policy"]["idempotent"] is True and "main" in data["help"]


@pytest.mark.parametrize("kind", ["python", "process"])
def test_init_scaffolds_a_skill_that_validates_and_runs(home, kind):
    user = home / "skills" / "user"
    out = run(home, "init", "word-counter", "--runtime", kind, "--dir", str(user))
    assert out.returncode == 0, out.stderr
    out = run(home, "validate", str(user / "word-counter"))
    assert out.returncode == 0 and "word-counter-count" in out.stdout, out.stderr
    if kind == "python":  # the process transport has its own tests
        out = run(home, "call", "word-counter-count", '{"text": "a b c"}')
        assert orjson.loads(out.stdout) == {"words": 3, "chars": 5}
    again = run(home, "init", "word-counter", "--dir", str(user))
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = run(home, "init", "Bad_Name")
    assert bad.returncode == 2 and "not a valid skill id" in bad.stderr


def test_validate_reports_the_field(home, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(EXAMPLES / "text-tools", broken)
    manifest = broken / "skill.toml"
    manifest.write_text(manifest.read_text().replace('runtime = "python"', 'runtime = "perl"'))
    out = run(home, "validate", str(broken))
    assert out.returncode == 2
    assert "skill.toml: runtime:" in out.stderr


def test_doctor_reports_broken_packages_and_exits_nonzero(home):
    assert run(home, "doctor").returncode == 0
    bad = home / "skills" / "project" / "oops"
    bad.mkdir(parents=True)
    (bad / "skill.toml").write_text("runtime = 1\n")
    out = run(home, "doctor")
    assert out.returncode == 1
    assert "broken: [project]" in out.stdout and "oops" in out.stdout
    data = orjson.loads(run(home, "--json", "doctor").stdout)
    assert data["packages"] == 1 and data["problems"][0]["kind"] == "broken"


def test_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "skillyard", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for name in ("list", "describe", "call", "validate", "init", "doctor"):
        assert name in out.stdout


def test_help_imports_no_command_module_and_every_command_has_a_summary():
    from skillyard.cli.main import COMMANDS, SUMMARIES

    assert set(SUMMARIES) == set(COMMANDS)
    code = (
        "import sys; from skillyard.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m in ('asyncio', 'skillyard.runtime', "
        "'skillyard.memo', 'skillyard.gate', 'skillyard.host')), file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip() == "[]"
    assert "approvals" in out.stdout and "Serve the runtime's skills" in out.stdout
