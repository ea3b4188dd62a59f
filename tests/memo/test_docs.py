"""The examples in docs/memo.md run, so they cannot drift from the code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from skillyard.memo import MemoConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "memo.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_cache_example_runs() -> None:
    code = _blocks("python")[0]
    assert "geo-lookup" in code
    exec(compile(code, str(DOC), "exec"), {})


def test_the_operator_settings_example_is_a_valid_memo_section() -> None:
    section = next(b for b in _blocks("toml") if b.startswith("[memo]"))
    config = MemoConfig.from_mapping(tomllib.loads(section)["memo"], base_dir=Path("/h"))
    assert config.cache_private == frozenset({"no-raw"})
    assert config.cassette_dir == Path("/h/cassettes")
    assert config.cassette_mode == "none"


def test_the_card_policy_example_is_a_valid_policy() -> None:
    from skillyard.card import Policy

    section = next(b for b in _blocks("toml") if b.startswith("[policy]"))
    policy = Policy.from_dict(tomllib.loads(section)["policy"])
    assert policy.cache == "read-through" and policy.idempotent
