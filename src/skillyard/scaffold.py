"""`skillyard init`: write a small, working skill package to start from."""

from __future__ import annotations

from pathlib import Path

from skillyard.errors import ConfigError
from skillyard.manifests import check_skill_id

_MANIFEST = """\
version = "0.1.0"
description = "Counts the words in a text."
runtime = "{runtime}"
entry = {entry}
{options}
[limits]
timeout_sec = 10

[[methods]]
name = "count"
description = "Count the words and characters in `text`."
input_schema = "schemas/count.input.json"
output_schema = "schemas/count.output.json"
"""

_INPUT = """\
{
  "type": "object",
  "properties": {"text": {"type": "string", "description": "The text to count."}},
  "required": ["text"],
  "additionalProperties": false
}
"""

_OUTPUT = """\
{
  "type": "object",
  "properties": {"words": {"type": "integer"}, "chars": {"type": "integer"}},
  "required": ["words", "chars"]
}
"""

_PYTHON = '''\
"""{name}: an in-process Python skill. Each method is a function (args) or (args, ctx)."""


def count(args):
    text = args["text"]
    return {{"words": len(text.split()), "chars": len(text)}}
'''

_PROCESS = '''\
"""{name}: a process skill. Reads one JSON object on stdin, writes one JSON object on stdout."""

import json
import sys


def main():
    request = json.load(sys.stdin)
    text = request["text"]
    json.dump({{"words": len(text.split()), "chars": len(text)}}, sys.stdout)


if __name__ == "__main__":
    main()
'''


def scaffold(parent: Path, name: str, runtime: str) -> Path:
    """Create package ``name`` under ``parent`` for ``runtime`` (python or process)."""
    check_skill_id(name, file="(init)", field_path="NAME")
    if runtime not in ("python", "process"):
        raise ConfigError(f"cannot scaffold runtime {runtime!r}; use python or process")
    path = parent / name
    if path.exists():
        raise ConfigError(f"{path} already exists; choose another name or remove it")
    (path / "schemas").mkdir(parents=True)
    if runtime == "python":
        entry, options, code, file = '"skill.py"', "", _PYTHON, "skill.py"
    else:
        entry, file, code = '["{python}", "main.py"]', "main.py", _PROCESS
        options = '\n[options]\nmode = "json"\n'
    (path / "skill.toml").write_text(
        _MANIFEST.format(runtime=runtime, entry=entry, options=options)
    )
    (path / "schemas" / "count.input.json").write_text(_INPUT)
    (path / "schemas" / "count.output.json").write_text(_OUTPUT)
    (path / file).write_text(code.format(name=name))
    return path
