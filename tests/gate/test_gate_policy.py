from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from skillyard import Caller, Card
from skillyard.errors import ConfigError
from skillyard.gate import keys
from skillyard.gate.policy import load_policy, parse_policy


def _policy(text: str):
    import tomllib

    return parse_policy(tomllib.loads(textwrap.dedent(text)), version="t")


def card(name: str, **kw) -> Card:
    skill, _, method = name.partition("-")
    return Card(id=skill, name=name, method=method or name, **kw)


ANY = Caller()


def test_first_match_wins_and_nothing_matching_is_denied():
    p = _policy(
        """
        [contracts."*"]
        level = "L1"
        [[rules]]
        name = "first"
        tool = "a-*"
        effect = "deny"
        [[rules]]
        name = "second"
        tool = "a-b"
        effect = "allow"
        """
    )
    assert p.evaluate(card("a-b"), {}, ANY).rule == "first"
    v = p.evaluate(card("zzz"), {}, ANY)
    assert (v.outcome, v.rule) == ("deny", "default:deny")


def test_floor_l5_denied_and_l4_held_whatever_the_rules_say():
    p = _policy(
        """
        [contracts.nuke]
        level = "L5"
        [contracts.mail]
        level = "L4"
        [[rules]]
        name = "allow-all"
        effect = "allow"
        """
    )
    assert p.evaluate(card("nuke"), {}, ANY).outcome == "deny"
    assert p.evaluate(card("nuke"), {}, ANY).rule == "floor:L5"
    v = p.evaluate(card("mail"), {}, ANY)
    assert v.outcome == "hold" and "floor" in v.reason
    # unknown tools get the conservative default contract (L4): held, not allowed
    assert p.evaluate(card("other"), {}, ANY).outcome == "hold"


def test_contract_exact_name_beats_glob_and_defaults_apply():
    p = _policy(
        """
        [defaults]
        level = "L3"
        [contracts."x-*"]
        level = "L4"
        [contracts.x-safe]
        level = "L0"
        """
    )
    assert p.contract_for(card("x-safe")).level == 0
    assert p.contract_for(card("x-other")).level == 4
    assert p.contract_for(card("y")).level == 3


def test_permissions_levels_roles_principal_and_reversibility_match():
    p = _policy(
        """
        [defaults]
        level = "L2"
        [contracts.rev]
        level = "L3"
        reversible = true
        [[rules]]
        name = "no-network"
        permissions = ["http"]
        effect = "deny"
        [[rules]]
        name = "no-writes"
        permissions = ["fs:rw"]
        effect = "deny"
        [[rules]]
        name = "ops-only"
        principal = "ops-*"
        max_level = "L3"
        reversible = true
        effect = "allow"
        [[rules]]
        name = "models"
        roles = ["model"]
        level = ["L2"]
        effect = "allow"
        """
    )
    net = card("web-get", permissions={"http": {"allow": ["example.com"]}})
    assert p.evaluate(net, {}, ANY).rule == "no-network"
    ro = card("fs-read", permissions={"fs": [{"path": "/tmp", "mode": "ro"}]})
    rw = card("fs-write", permissions={"fs": [{"path": "/tmp", "mode": "rw"}]})
    assert p.evaluate(rw, {}, ANY).rule == "no-writes"
    assert p.evaluate(ro, {}, ANY).rule == "default:deny"
    assert p.evaluate(card("rev"), {}, Caller(principal="ops-kim")).rule == "ops-only"
    assert p.evaluate(card("rev"), {}, Caller(principal="dev-kim")).outcome == "deny"
    assert p.evaluate(card("llm-chat", roles=("model",)), {}, ANY).rule == "models"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"env": "staging", "amount": 5}, "small-staging"),
        ({"env": "staging", "amount": 500}, "default:deny"),
        ({"env": "prod", "amount": 5}, "default:deny"),
        ({"env": "staging"}, "default:deny"),  # a missing argument fails the predicate
        ({"env": "staging", "amount": "5"}, "default:deny"),  # strings are not numbers
        ({"env": "staging", "amount": 5, "tag": "ok"}, "small-staging"),
    ],
    ids=["ok", "too-big", "wrong-env", "missing", "wrong-type", "extra-arg"],
)
def test_argument_predicates(args, expected):
    p = _policy(
        """
        [contracts."*"]
        level = "L1"
        [[rules]]
        name = "small-staging"
        tool = "pay"
        args = { "/env" = { in = ["staging", "dev"] }, "/amount" = { lt = 100 } }
        effect = "allow"
        """
    )
    assert p.evaluate(card("pay"), args, ANY).rule == expected


def test_explain_traces_every_rule_until_the_match():
    p = _policy(
        """
        [contracts."*"]
        level = "L1"
        [[rules]]
        name = "a"
        tool = "nope"
        effect = "allow"
        [[rules]]
        name = "b"
        effect = "allow"
        """
    )
    v = p.evaluate(card("t"), {}, ANY, explain=True)
    assert [s["rule"] for s in v.trace] == ["a", "b"]
    assert v.trace[0]["matched"] is False and "nope" in v.trace[0]["why"]
    assert v.trace[1]["matched"] is True


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[[rules]]\neffect = 'maybe'", "rules[0].effect"),
        ("[[rules]]\neffect = 'allow'\nlevel = 'L9'", "rules[0].level"),
        ("[[rules]]\neffect = 'allow'\nbogus = 1", "rules[0].bogus"),
        ("[[rules]]\neffect = 'allow'\napprovers = ['a']", "rules[0]"),
        ("[[rules]]\nname='x'\neffect='allow'\n[[rules]]\nname='x'\neffect='deny'", "twice"),
        ("[[rules]]\neffect = 'allow'\nargs = { '/a' = { between = 1 } }", "between"),
        ("[[rules]]\neffect = 'allow'\npermissions = ['teleport']", "teleport"),
        ("[contracts.x]\nlevel = 'L1'\nblast_radius = 'galaxy'", "contracts.x.blast_radius"),
        ("surprise = 1", "surprise"),
        ("rules = 'all'", "rules"),
        ("[[rules]]\neffect = 'require_approval'\ntimeout_sec = -1", "timeout_sec"),
    ],
)
def test_malformed_policies_are_refused_with_the_field(tmp_path: Path, text, where):
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_policy(f)
    assert where in err.value.message and str(f) in err.value.message


def test_unparseable_files_say_so(tmp_path: Path):
    bad = tmp_path / "p.toml"
    bad.write_text("[[rules]\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_policy(bad)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_policy(tmp_path / "missing.toml")
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError):
        load_policy(binary)


def test_yaml_policies_load_like_toml(tmp_path: Path):
    f = tmp_path / "p.yaml"
    f.write_text(
        "contracts:\n  echo: {level: L1}\nrules:\n  - name: echo\n    tool: echo\n    effect: allow\n"
    )
    p = load_policy(f)
    assert p.evaluate(card("echo"), {}, ANY).outcome == "allow"
    f.write_text("rules: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_policy(f)


def _sign(path: Path, signer: str, private: bytes) -> None:
    import orjson

    sig = {"signer": signer, "signature": keys.sign(private, path.read_bytes())}
    path.with_name(path.name + ".sig").write_bytes(orjson.dumps(sig))


def test_signed_policies_verify_and_tampering_is_refused(tmp_path: Path, policy_file, keypair):
    alice_priv, alice_pub = keypair["alice"]
    signers = {"alice": keys.parse_public_key(alice_pub, where="t")}
    with pytest.raises(ConfigError, match="must be signed"):
        load_policy(policy_file, require_signed=True, signers=signers)
    _sign(policy_file, "alice", alice_priv)
    assert load_policy(policy_file, require_signed=True, signers=signers).signed_by == "alice"
    # one byte changed after signing
    policy_file.write_text(
        policy_file.read_text().replace("timeout_sec = 300", "timeout_sec = 301")
    )
    with pytest.raises(ConfigError, match="does not match"):
        load_policy(policy_file, require_signed=True, signers=signers)
    # a signature by a key nobody pinned
    mallory_priv, _ = keypair["mallory"]
    _sign(policy_file, "mallory", mallory_priv)
    with pytest.raises(ConfigError, match="not a pinned policy signer"):
        load_policy(policy_file, signers=signers)
    # a present signature is checked even when not required
    with pytest.raises(ConfigError, match="no policy signer keys are pinned"):
        load_policy(policy_file)
