"""Hostile and hand-edited cassette files: clear errors, and nothing is lost or overwritten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skillyard import Policy, SyncRuntime
from skillyard.errors import ConfigError
from skillyard.memo import use_cassette

from .conftest import add_counter


def _good(tmp_path: Path, rt: SyncRuntime) -> dict[str, Any]:
    with use_cassette(rt.runtime, "c", directory=tmp_path, mode="once"):
        rt.call("t-count", {"x": 1})
    data: dict[str, Any] = json.loads((tmp_path / "c.json").read_text())
    return data


def _interaction(data: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = data["interactions"][0]
    return item


def _set(path: str, value: Any) -> Any:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[last] = value

    return edit


def _delete(path: str) -> Any:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        del node[last]

    return edit


BAD_EDITS = [
    ("interactions", _set("interactions", {"a": 1}), "interactions: expected a list"),
    ("args-type", _set("interactions.0.args", [1, 2]), r"interactions\[0\]\.args: expected an"),
    ("tool-type", _set("interactions.0.tool", 5), r"interactions\[0\]\.tool: expected a tool"),
    ("events", _set("interactions.0.result.events", "x"), r"result\.events: expected a list"),
    ("content", _set("interactions.0.result.content", 3), r"result\.content: expected a str"),
    (
        "error-class",
        _set("interactions.0.error", {"type": "SystemExit", "message": "x"}),
        r"needs exactly one of result and error",
    ),
    ("no-result", _delete("interactions.0.result"), "needs exactly one of result and error"),
    (
        "no-args",
        lambda d: [_delete("interactions.0.args")(d), _delete("interactions.0.args_sha256")(d)],
        "needs args",
    ),
    ("privacy", _set("interactions.0.privacy", "public"), r"privacy: 'public' is not one of"),
    ("version", _set("skillyard_cassette", 99), "format version 99"),
    ("unknown-key", _set("interactions.0.colour", "red"), r"colour: unknown key"),
    ("card-policy", _set("cards.t-count.policy", {"cache": "forever"}), r"cards\.t-count"),
    ("card-schema", _set("cards.t-count.input_schema", 7), r"input_schema: expected an object"),
    ("hash", _set("interactions.0.args_sha256", "zz"), None),  # args win: the hash is rebuilt
    ("duration", _set("interactions.0.result.duration_us", True), r"duration_us: expected a"),
]


@pytest.mark.parametrize(
    ("edit", "message"), [(e, m) for _, e, m in BAD_EDITS], ids=[i for i, _, _ in BAD_EDITS]
)
def test_wrong_types_are_refused_naming_file_and_field(
    mrt: SyncRuntime, tmp_path: Path, edit: Any, message: str | None
) -> None:
    add_counter(mrt, policy=Policy())
    data = _good(tmp_path, mrt)
    edit(data)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    if message is None:
        with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="none"):
            assert mrt.call("t-count", {"x": 1}).source == "cassette"
        return
    for mode in ("once", "new_episodes", "none", "all"):
        with pytest.raises(ConfigError, match=message) as err:
            with use_cassette(mrt.runtime, "c", directory=tmp_path, mode=mode):  # type: ignore[arg-type]
                pass
        assert str(path) in str(err.value) and "was not changed" in str(err.value)
        assert err.value.details["file"] == str(path)
    assert path.read_bytes() == before


def test_an_error_of_an_unknown_class_is_refused(mrt: SyncRuntime, tmp_path: Path) -> None:
    add_counter(mrt, policy=Policy())
    data = _good(tmp_path, mrt)
    item = _interaction(data)
    del item["result"]
    item["error"] = {"type": "os.system", "message": "rm -rf /"}
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"'os\.system' is not a skillyard error class"):
        with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="none"):
            pass


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[1, 2, 3]", b"\xff\xfe\x00garbage", b"null", b"[" * 5000 + b"]" * 5000],
    ids=["syntax", "empty", "list", "binary", "null", "deep"],
)
def test_corrupted_json_is_refused_and_left_alone(
    mrt: SyncRuntime, tmp_path: Path, body: bytes
) -> None:
    add_counter(mrt, policy=Policy())
    path = tmp_path / "c.json"
    path.write_bytes(body)
    for mode in ("once", "new_episodes", "all"):
        with pytest.raises(ConfigError, match=r"cassette .*c\.json"):
            with use_cassette(mrt.runtime, "c", directory=tmp_path, mode=mode):  # type: ignore[arg-type]
                mrt.call("t-count", {"x": 1})
    assert path.read_bytes() == body


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    with path.open("wb") as fh:
        fh.write(b'{"skillyard_cassette": 1, "interactions": [' + b" " * 2_000_000 + b"]}")
    config = {"memo": {"max_cassette_bytes": 1_000_000}}
    with SyncRuntime.memory(config=config) as rt:
        add_counter(rt, policy=Policy())
        with pytest.raises(ConfigError, match=r"2000045 bytes; the limit is 1000000"):
            with use_cassette(rt.runtime, "c", directory=tmp_path, mode="new_episodes"):
                pass
    assert path.stat().st_size == 2_000_045


YAML_BOMB = """\
skillyard_cassette: 1
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
interactions: [*c, *c, *c, *c, *c, *c, *c, *c, *c]
"""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (YAML_BOMB, "aliases"),
        (
            "skillyard_cassette: 1\ninteractions: !!python/object/apply:os.system ['true']\n",
            "not valid YAML",
        ),
        ("skillyard_cassette: 1\ninteractions:\n  - tool: [unclosed\n", "not valid YAML"),
        ("skillyard_cassette: 1\ninteractions: !!binary aGVsbG8=\n", "expected a list"),
    ],
    ids=["alias-bomb", "python-tag", "syntax", "binary"],
)
def test_hostile_yaml_is_refused(mrt: SyncRuntime, tmp_path: Path, body: str, message: str) -> None:
    add_counter(mrt, policy=Policy())
    path = tmp_path / "c.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message):
        with use_cassette(mrt.runtime, "c.yaml", directory=tmp_path, mode="new_episodes"):
            pass
    assert path.read_text() == body


def test_a_hand_edited_output_is_replayed_as_edited(mrt: SyncRuntime, tmp_path: Path) -> None:
    add_counter(mrt, policy=Policy())
    data = _good(tmp_path, mrt)
    _interaction(data)["result"]["output"] = {"n": 42, "note": "edited by hand"}
    _interaction(data)["args"] = {"x": 2}
    (tmp_path / "c.json").write_text(json.dumps(data))
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="none"):
        assert mrt.call("t-count", {"x": 2}).output == {"n": 42, "note": "edited by hand"}


def test_a_before_record_hook_that_breaks_the_format_fails_loudly(
    mrt: SyncRuntime, tmp_path: Path
) -> None:
    add_counter(mrt, policy=Policy())
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="once"):
        mrt.call("t-count", {"x": 1})
    before = (tmp_path / "c.json").read_bytes()

    def breaks(interaction: dict[str, Any]) -> dict[str, Any]:
        interaction["result"]["events"] = "oops"
        return interaction

    with pytest.raises(ConfigError, match=r"result\.events"):
        with use_cassette(
            mrt.runtime, "c", directory=tmp_path, mode="new_episodes", before_record=breaks
        ):
            mrt.call("t-count", {"x": 2})
    assert (tmp_path / "c.json").read_bytes() == before


def test_writes_are_atomic_and_leave_no_temporary_files(mrt: SyncRuntime, tmp_path: Path) -> None:
    add_counter(mrt, policy=Policy())
    with use_cassette(mrt.runtime, "c", directory=tmp_path, mode="new_episodes"):
        for i in range(5):
            mrt.call("t-count", {"x": i})
            assert len(json.loads((tmp_path / "c.json").read_text())["interactions"]) == i + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]


@pytest.mark.parametrize("name", ["../escape", "a/../../b", "", "nul\0byte"])
def test_cassette_names_cannot_escape_the_directory(
    mrt: SyncRuntime, tmp_path: Path, name: str
) -> None:
    with pytest.raises(ConfigError):
        with use_cassette(mrt.runtime, name, directory=tmp_path):
            pass
