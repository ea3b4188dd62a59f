from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from skillyard import SyncRuntime
from skillyard.errors import ManifestError
from skillyard.manifests import load_package
from skillyard.manifests.luaskills import canonical_names, help_text, load

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "skills"


def make(tmp_path: Path, yaml_text: str, *, name: str = "demo", files: dict | None = None) -> Path:
    pkg = tmp_path / name
    (pkg / "runtime").mkdir(parents=True, exist_ok=True)
    (pkg / "skill.yaml").write_text(textwrap.dedent(yaml_text))
    (pkg / "runtime" / "go.lua").write_text("return function(args) return 'ok' end")
    for rel, text in (files or {}).items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


MINIMAL = """
entries:
  - name: go
    lua_entry: runtime/go.lua
"""


def test_the_example_package_loads_with_help_and_config():
    pkg = load_package(EXAMPLES / "lua-notes", root="project")
    assert pkg.format == "skill.yaml" and pkg.runtime == "lua"
    assert [c.name for c in pkg.cards] == [
        "lua-notes-add",
        "lua-notes-search",
        "lua-notes-summarize",
    ]
    assert pkg.cards[1].operation == "runtime/search.lua"
    assert pkg.cards[0].input_schema["required"] == ["title", "text"]
    assert set(pkg.help) == {"main", "usage"}
    assert "# Notes" in help_text(pkg)
    assert pkg.config[0]["key"] == "folder" and pkg.config[0]["default"] == "notes"
    assert all(c.digest.startswith("sha256:") and c.root == "project" for c in pkg.cards)


def test_minimal_package_and_defaults(tmp_path):
    pkg = load(make(tmp_path, MINIMAL), root="user")
    (card,) = pkg.cards
    assert (card.id, card.name, card.method, card.transport) == ("demo", "demo-go", "go", "lua")
    assert card.input_schema == {"type": "object"} and pkg.version == "0.0.0"


def test_canonical_names_get_a_suffix_on_conflict(tmp_path):
    assert canonical_names("s", ["a", "A", "a", "b"]) == ["s-a", "s-a-2", "s-a-3", "s-b"]
    text = """
    entries:
      - {name: go, lua_entry: runtime/go.lua}
      - {name: Go, lua_entry: runtime/go.lua}
    """
    assert [c.name for c in load(make(tmp_path, text)).cards] == ["demo-go", "demo-go-2"]


def test_disabled_packages_load_without_tools(tmp_path):
    pkg = load(make(tmp_path, "enable: false\n" + MINIMAL))
    assert pkg.cards == ()


def test_input_schema_file_and_inline(tmp_path):
    text = """
    entries:
      - {name: a, lua_entry: runtime/go.lua, input_schema_file: schemas/a.json}
      - name: b
        lua_module: go
        input_schema: {type: object, properties: {x: {type: integer}}}
    """
    files = {"schemas/a.json": '{"type": "object", "properties": {"y": {"type": "string"}}}'}
    a, b = load(make(tmp_path, text, files=files)).cards
    assert a.input_schema["properties"] == {"y": {"type": "string"}}
    assert b.input_schema["properties"] == {"x": {"type": "integer"}}


BAD = [
    ("entries: [", "(syntax)", "not valid YAML"),
    ("- a\n- b\n", "(document)", "mapping"),
    ("nmae: x\n" + MINIMAL, "nmae", "unknown key"),
    ("version: [1]\n" + MINIMAL, "version", "version string"),
    ("enable: 'yes'\n" + MINIMAL, "enable", "true or false"),
    ("entries: []\n", "entries", "at least one"),
    ("entries: {a: 1}\n", "entries", "a list"),
    ("entries:\n  - name: go\n", "entries[0]", "exactly one of lua_entry"),
    (
        "entries:\n  - {name: go, lua_entry: runtime/go.lua, lua_module: go}\n",
        "entries[0]",
        "exactly one",
    ),
    (
        "entries:\n  - {name: 'bad name!', lua_entry: runtime/go.lua}\n",
        "entries[0].name",
        "letters",
    ),
    ("entries:\n  - {name: go, lua_entry: ../../etc/passwd}\n", "entries[0].lua_entry", "outside"),
    ("entries:\n  - {name: go, lua_entry: /etc/passwd}\n", "entries[0].lua_entry", "absolute"),
    ("entries:\n  - {name: go, lua_entry: skill.yaml}\n", "entries[0]", ".lua file"),
    ("entries:\n  - {name: go, lua_module: '../x'}\n", "entries[0].lua_module", "module name"),
    ("entries:\n  - {name: go, lua_module: missing}\n", "entries[0].lua_module", "does not exist"),
    (
        "entries:\n  - {name: go, lua_entry: runtime/go.lua, colour: red}\n",
        "entries[0].colour",
        "unknown key",
    ),
    (
        "entries:\n  - {name: go, lua_entry: runtime/go.lua, parameters: [{name: x, type: text}]}\n",
        "entries[0].parameters[0].type",
        "not one of",
    ),
    (
        "entries:\n  - {name: go, lua_entry: runtime/go.lua, parameters: [{name: x}, {name: x}]}\n",
        "entries[0].parameters[1].name",
        "unique",
    ),
    (
        "entries:\n  - {name: go, lua_entry: runtime/go.lua, parameters: [], input_schema: {}}\n",
        "entries[0]",
        "only one of",
    ),
    (
        "entries:\n  - {name: go, lua_entry: runtime/go.lua, input_schema: {type: array}}\n",
        "entries[0]",
        "object",
    ),
    (
        "entries:\n  - {name: go, lua_entry: runtime/go.lua, input_schema: {type: 12}}\n",
        "entries[0].input_schema",
        "JSON Schema",
    ),
    (
        "entries:\n  - {name: go, lua_entry: runtime/go.lua, input_schema_file: ../x.json}\n",
        "entries[0].input_schema_file",
        "outside",
    ),
    ("help: {main: ../../etc/passwd}\n" + MINIMAL, "help.main", "outside"),
    ("help: {main: runtime/go.lua}\n" + MINIMAL, "help.main", "Markdown"),
    ("help: {extra: x}\n" + MINIMAL, "help.extra", "unknown key"),
    ("config: [{name: x, type: blob}]\n" + MINIMAL, "config[0].type", "not one of"),
    ("config: [{name: x}, {key: x}]\n" + MINIMAL, "config[1].name", "unique"),
    ("config: [{name: x, sensitive: 1}]\n" + MINIMAL, "config[0].sensitive", "true or false"),
    ("limits: {timeout_sec: -1}\n" + MINIMAL, "limits.timeout_sec", "positive"),
    ("policy: {cache: always}\n" + MINIMAL, "policy.cache", "not one of"),
    (
        "entries:\n  - {name: go, lua_entry: runtime/go.lua, isolation: shared}\n",
        "entries[0].isolation",
        "fresh, warm",
    ),
]


@pytest.mark.parametrize("text,field,message", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_malformed_manifests_name_the_file_and_field(tmp_path, text, field, message):
    with pytest.raises(ManifestError) as info:
        load(make(tmp_path, text))
    err = info.value
    assert err.file and err.file.endswith("skill.yaml")
    assert err.field == field
    assert message in err.message


def test_bad_directory_names_are_refused(tmp_path):
    with pytest.raises(ManifestError) as info:
        load(make(tmp_path, MINIMAL, name="Bad_Name"))
    assert info.value.field == "(directory name)"


@pytest.mark.parametrize(
    "text,message",
    [
        ("a: &x [1, 2]\nb: *x\n", "anchors and aliases"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: [*b, *b, *b, *b, *b, *b, *b, *b]\n",
            "anchors and aliases",
        ),
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ("".join(f"{'  ' * i}k{i}:\n" for i in range(300)), "nested too deeply"),
        ("x: [" + ", ".join(["1"] * 30_000) + "]\n", "YAML nodes"),
        ("x: !!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
    ],
    ids=["alias", "billion-laughs", "deep", "deep-blocks", "wide", "python-tag"],
)
def test_hostile_yaml_is_refused(tmp_path, text, message):
    with pytest.raises(ManifestError) as info:
        load(make(tmp_path, text))
    assert message in info.value.message


def test_huge_manifest_is_refused_before_parsing(tmp_path):
    pkg = make(tmp_path, MINIMAL)
    (pkg / "skill.yaml").write_text("description: '" + "x" * 2_000_000 + "'\n" + MINIMAL)
    with pytest.raises(ManifestError, match="limit"):
        load(pkg)


def test_a_broken_package_does_not_stop_the_others(tmp_path):
    make(tmp_path, MINIMAL, name="good")
    make(tmp_path, "entries: [\n", name="broken")
    with SyncRuntime.memory(roots={"user": [tmp_path]}) as rt:
        assert [c.name for c in rt.list()] == ["good-go"]
        assert rt.call("good-go", {}).output == "ok"
        assert [p.kind for p in rt.runtime.problems] == ["broken"]


def test_native_skill_toml_lua_packages(tmp_path):
    pkg = tmp_path / "calc"
    pkg.mkdir()
    (pkg / "skill.toml").write_text(
        'runtime = "lua"\nentry = "calc.lua"\n'
        '[[methods]]\nname = "add"\n'
        '[[methods]]\nname = "double-it"\n'
        '[[methods]]\nname = "neg"\nhandler = "negate"\n'
    )
    (pkg / "calc.lua").write_text(
        "local M = {}\nfunction M.add(a) return a.x + a.y end\n"
        "function M.double_it(a) return a.x * 2 end\nfunction M.negate(a) return -a.x end\n"
        "return M\n"
    )
    with SyncRuntime.memory() as rt:
        rt.runtime.add_package(pkg)
        assert rt.call("calc-add", {"x": 2, "y": 3}).output == 5
        assert rt.call("calc-double-it", {"x": 21}).output == 42
        assert rt.call("calc-neg", {"x": 1}).output == -1


@pytest.mark.parametrize(
    "entry,message",
    [("calc.py", ".lua file"), ("../x.lua", "outside"), ("missing.lua", "does not exist")],
)
def test_native_lua_entry_must_be_a_lua_file_inside(tmp_path, entry, message):
    pkg = tmp_path / "calc"
    pkg.mkdir()
    (pkg / "calc.py").write_text("")
    (tmp_path / "x.lua").write_text("")
    (pkg / "skill.toml").write_text(
        f'runtime = "lua"\nentry = "{entry}"\n[[methods]]\nname = "a"\n'
    )
    with pytest.raises(ManifestError) as info:
        load_package(pkg)
    assert info.value.field == "entry" and message in info.value.message
