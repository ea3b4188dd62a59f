from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from skillyard import Runtime

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gate"
SKILLYARD = [sys.executable, "-m", "skillyard.cli.main"]

POLICY = """
version = "test"
[contracts.echo]
level = "L1"
reversible = true
blast_radius = "none"
[contracts.deploy]
level = "L4"
[contracts."safe-*"]
level = "L2"

[[rules]]
name = "echo"
tool = ["echo", "safe-*", "meta", "nohash", "local"]
effect = "allow"
[[rules]]
name = "deploy"
tool = "deploy"
effect = "require_approval"
approvers = ["alice"]
timeout_sec = 300
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(textwrap.dedent(POLICY))
    return p


@pytest.fixture
def keypair(tmp_path: Path):
    """Approver keys: alice and bob pinned, mallory not."""
    from skillyard.gate import keys

    out = {}
    for name in ("alice", "bob", "mallory"):
        k = keys.generate(name)
        out[name] = (keys.unb64(k["private_key"], what="k"), "ed25519:" + k["public_key"])
    return out


@pytest.fixture
def make_rt(policy_file: Path):
    """Factory: an in-memory runtime governed by ``policy_file`` (closed after the test)."""
    made: list[Runtime] = []

    def make(**gate) -> Runtime:
        rt = Runtime.memory(config={"gate": {"policy": str(policy_file), **gate}})
        made.append(rt)
        return rt

    yield make
    import asyncio

    for rt in made:
        asyncio.run(rt.aclose())
