from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from skillyard.gate import keys

SKILLYARD = [sys.executable, "-m", "skillyard"]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gate"


def sk(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    pre = ["--home", str(home)] if home else []
    return subprocess.run([*SKILLYARD, *pre, *args], capture_output=True, text=True, timeout=60)


def test_keygen_writes_a_private_key_and_prints_what_to_pin(tmp_path):
    out = sk("--json", "approve", "keygen", "dana", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    data = orjson.loads(out.stdout)
    key_file = Path(data["key_file"])
    assert key_file.stat().st_mode & 0o777 == 0o600
    key_id, private = keys.load_key_file(key_file)
    assert key_id == "dana"
    assert data["public_key"] == "ed25519:" + keys.b64(keys.public_of(private))
    again = sk("approve", "keygen", "dana", "--out", str(tmp_path))
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr


def test_policy_check_reports_errors_with_exit_code_2(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text("[[rules]]\neffect = 'perhaps'\n")
    out = sk("policy", "check", str(bad))
    assert out.returncode == 2 and "rules[0].effect" in out.stderr
    ok = sk("--json", "policy", "check", str(EXAMPLE / "policy.toml"))
    assert (
        ok.returncode == 0 and orjson.loads(ok.stdout)["rules"][1]["effect"] == "require_approval"
    )


def test_policy_sign_then_required_signature_verifies(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text((EXAMPLE / "policy.toml").read_text())
    sk("approve", "keygen", "ops", "--out", str(tmp_path))
    signed = sk("--json", "policy", "sign", str(policy), "--key", str(tmp_path / "ops.key.json"))
    pub = orjson.loads(signed.stdout)["public_key"]
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[gate]\npolicy = "{policy}"\nrequire_signed_policy = true\n'
        f'policy_signers = {{ ops = "{pub}" }}\n'
    )
    status = sk("--json", "policy", "status", home=home)
    assert status.returncode == 0, status.stderr
    assert orjson.loads(status.stdout)["policy_signed_by"] == "ops"
    policy.write_text(policy.read_text() + "\n# changed\n")
    refused = sk("policy", "status", home=home)
    assert refused.returncode == 2 and "does not match" in refused.stderr


def test_ungoverned_home_says_so(tmp_path):
    out = sk("policy", "status", home=tmp_path)
    assert out.returncode == 0 and "UNGOVERNED" in out.stdout
    doctor = sk("doctor", home=tmp_path)
    assert "ungoverned" in doctor.stdout


def test_grant_without_known_keys_is_refused(tmp_path):
    out = sk("approvals", "grant", "act_x", "--approver", "alice", home=tmp_path)
    assert out.returncode != 0 and "act_x" in out.stderr


def test_the_example_key_is_the_pinned_one():
    config = orjson.loads((EXAMPLE / "gate.config.json").read_bytes())
    key_id, private = keys.load_key_file(EXAMPLE / "alice.example-key.json")
    assert config["gate"]["approvers"][key_id] == "ed25519:" + keys.b64(keys.public_of(private))
    assert "EXAMPLE" in (EXAMPLE / "alice.example-key.json").read_text()
