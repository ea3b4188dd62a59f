"""The permission examples in docs/security.md are valid as written."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from skillyard.host.grants import Grants, admit
from skillyard.host.permissions import parse_permissions

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def _blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)


def test_security_doc_examples_parse_and_the_grant_narrows_them() -> None:
    manifest, config = _blocks()[:2]
    declared = parse_permissions(tomllib.loads(manifest)["permissions"], file="docs/security.md")
    assert declared["http"]["hosts"][1]["ports"] == [443]
    assert declared["fs"][1]["base"] == "workspace"
    assert declared["optional"] == ["models"]
    grants = Grants.from_config(tomllib.loads(config)["grants"], file="docs/security.md")
    assert grants.layers_for("community-notes") and not grants.layers_for("mine")
    admit("mine", declared, grants, file="x")  # no rule: declared is granted
    try:
        admit("community-notes", declared, grants, file="x")
    except Exception as exc:
        assert "permissions.fs[0]" in str(exc)
    else:
        raise AssertionError("the community rule grants no fs, so the package is refused")
