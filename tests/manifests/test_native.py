from __future__ import annotations

import os
from pathlib import Path

import pytest

from skillyard.errors import ManifestError
from skillyard.manifests import MAX_MANIFEST_BYTES, load_package

GOOD = """\
version = "1.0.0"
description = "demo"
runtime = "python"
entry = "skill.py"

[policy]
idempotent = true

[[methods]]
name = "run"
input_schema = { type = "object", properties = { n = { type = "integer" } } }
"""


def make_pkg(
    tmp_path: Path, manifest: str, *, name: str = "demo", files: dict[str, str] | None = None
) -> Path:
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "skill.toml").write_text(manifest)
    (pkg / "skill.py").write_text("def run(args):\n    return args\n")
    for rel, text in (files or {}).items():
        target = pkg / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return pkg


def test_good_manifest_gives_cards_with_canonical_names(tmp_path):
    pkg = load_package(make_pkg(tmp_path, GOOD), root="user")
    (card,) = pkg.cards
    assert card.name == "demo-run"
    assert card.operation == "skill.py:run"
    assert card.root == "user"
    assert card.policy.idempotent is True
    assert card.digest.startswith("sha256:") and len(card.digest) == 71


def test_schema_files_load_from_schemas_dir(tmp_path):
    manifest = GOOD.replace(
        'input_schema = { type = "object", properties = { n = { type = "integer" } } }',
        'input_schema = "schemas/in.json"',
    )
    pkg = load_package(
        make_pkg(tmp_path, manifest, files={"schemas/in.json": '{"type": "object"}'})
    )
    assert pkg.cards[0].input_schema == {"type": "object"}


def test_digest_changes_when_any_file_changes(tmp_path):
    path = make_pkg(tmp_path, GOOD)
    before = load_package(path).digest
    (path / "skill.py").write_text("def run(args):\n    return {}\n")
    assert load_package(path).digest != before


BAD_CASES = [
    ("toml syntax", "runtime = \n", "(syntax)", "not valid TOML"),
    ("unknown top key", "bogus = 1\n" + GOOD, "bogus", "unknown key"),
    ("wrong runtime", GOOD.replace('"python"', '"cobol"'), "runtime", "not one of"),
    ("version type", GOOD.replace('"1.0.0"', "1"), "version", "expected a version string"),
    ("id mismatch", 'id = "other"\n' + GOOD, "id", "must equal the directory name"),
    ("entry traversal", GOOD.replace('"skill.py"', '"../evil.py"'), "entry", "outside the package"),
    ("entry absolute", GOOD.replace('"skill.py"', '"/etc/passwd"'), "entry", "absolute"),
    ("entry home", GOOD.replace('"skill.py"', '"~/x.py"'), "entry", "absolute"),
    ("entry missing", GOOD.replace('"skill.py"', '"nope.py"'), "entry", "does not exist"),
    ("no methods", GOOD.split("[[methods]]")[0], "methods", "at least one"),
    (
        "method name",
        GOOD.replace('name = "run"', 'name = "Run Me"'),
        "methods[0].name",
        "lower-case",
    ),
    (
        "method key",
        GOOD.replace('name = "run"', 'name = "run"\nsecret = 1'),
        "methods[0].secret",
        "unknown key",
    ),
    (
        "roles",
        GOOD.replace('name = "run"', 'name = "run"\nroles = ["god"]'),
        "methods[0].roles[0]",
        "not one of",
    ),
    (
        "policy key",
        GOOD.replace("idempotent = true", "turbo = true"),
        "policy.turbo",
        "unknown key",
    ),
    (
        "privacy",
        GOOD.replace("idempotent = true", 'privacy = "public"'),
        "policy.privacy",
        "not one of",
    ),
    (
        "schema not object",
        GOOD.replace(
            '{ type = "object", properties = { n = { type = "integer" } } }', '{ type = "array" }'
        ),
        "methods[0].input_schema",
        "must describe an object",
    ),
    (
        "invalid schema",
        GOOD.replace('{ type = "integer" }', '{ type = "integr" }'),
        "methods[0].input_schema",
        "not a valid JSON Schema",
    ),
    (
        "schema traversal",
        GOOD.replace(
            '{ type = "object", properties = { n = { type = "integer" } } }',
            '"schemas/../../x.json"',
        ),
        "methods[0].input_schema",
        "outside the package",
    ),
    (
        "schema outside schemas dir",
        GOOD.replace(
            '{ type = "object", properties = { n = { type = "integer" } } }', '"skill.py"'
        ),
        "methods[0].input_schema",
        "under schemas/",
    ),
    (
        "duplicate method",
        GOOD + '\n[[methods]]\nname = "run"\n',
        "methods[1].name",
        "declared twice",
    ),
    (
        "limits negative",
        GOOD.replace("[policy]", "[limits]\ntimeout_sec = -5\n[policy]"),
        "limits.timeout_sec",
        "positive",
    ),
    (
        "permission kind",
        GOOD.replace("[policy]", "[permissions]\nroot = true\n[policy]"),
        "permissions.root",
        "unknown permission",
    ),
    (
        "handler",
        GOOD.replace('name = "run"', 'name = "run"\nhandler = "os.system"'),
        "methods[0].handler",
        "identifier",
    ),
    (
        "methods type",
        'methods = "run"\n' + GOOD.split("[[methods]]")[0],
        "methods",
        "expected an array",
    ),
]


@pytest.mark.parametrize(
    ("label", "manifest", "field", "message"), BAD_CASES, ids=[c[0] for c in BAD_CASES]
)
def test_malformed_manifests_name_file_field_and_rule(tmp_path, label, manifest, field, message):
    path = make_pkg(tmp_path, manifest)
    with pytest.raises(ManifestError) as info:
        load_package(path)
    err = info.value
    assert err.field == field, str(err)
    assert message in str(err)
    assert str(path / "skill.toml") in str(err)


@pytest.mark.parametrize("dirname", ["Demo", "1demo", "demo-", "de_mo", "d" * 65])
def test_directory_name_must_be_a_valid_skill_id(tmp_path, dirname):
    with pytest.raises(ManifestError, match="not a valid skill id"):
        load_package(make_pkg(tmp_path, GOOD, name=dirname))


def test_huge_manifest_is_refused_before_parsing(tmp_path):
    path = make_pkg(tmp_path, GOOD + "#" * (MAX_MANIFEST_BYTES + 1))
    with pytest.raises(ManifestError, match="the limit is"):
        load_package(path)


def test_non_utf8_manifest_is_refused(tmp_path):
    path = make_pkg(tmp_path, GOOD)
    (path / "skill.toml").write_bytes(b'runtime = "\xff\xfe"\n')
    with pytest.raises(ManifestError, match="not UTF-8"):
        load_package(path)


def test_symlinked_entry_pointing_outside_is_refused(tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_text("def run(args): return args\n")
    path = make_pkg(tmp_path, GOOD.replace('"skill.py"', '"link.py"'))
    os.symlink(outside, path / "link.py")
    with pytest.raises(ManifestError, match="outside the package"):
        load_package(path)


def test_symlinked_schema_pointing_outside_is_refused(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"type": "object"}')
    manifest = GOOD.replace(
        '{ type = "object", properties = { n = { type = "integer" } } }', '"schemas/in.json"'
    )
    path = make_pkg(tmp_path, manifest)
    (path / "schemas").mkdir()
    os.symlink(secret, path / "schemas" / "in.json")
    with pytest.raises(ManifestError, match="outside the package"):
        load_package(path)


def test_process_entry_is_validated(tmp_path):
    manifest = GOOD.replace('runtime = "python"', 'runtime = "process"').replace(
        'entry = "skill.py"', 'entry = ["{python}", "../x.py"]\n[options]\nmode = "json"'
    )
    with pytest.raises(ManifestError, match="outside the package"):
        load_package(make_pkg(tmp_path, manifest))
    bad_mode = GOOD.replace('runtime = "python"', 'runtime = "process"').replace(
        'entry = "skill.py"', 'entry = ["{python}", "skill.py"]\n[options]\nmode = "telepathy"'
    )
    with pytest.raises(ManifestError) as info:
        load_package(make_pkg(tmp_path, bad_mode, name="other"))
    assert info.value.field == "options.mode"
