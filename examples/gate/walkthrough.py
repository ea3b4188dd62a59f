"""The examples/gate walkthrough as one script: allow, deny, hold -> signed grant -> run.

Run from the repository root:  .venv/bin/python examples/gate/walkthrough.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lodestar_runtime_client import GateClient

HERE = Path(__file__).resolve().parent
CONFIG = str(HERE / "gate.config.json")
SKILLYARD = [sys.executable, "-m", "skillyard"]


def deploy(args: dict) -> dict:
    print(f"  (deploy body runs: env={args.get('env')})")
    return {"output": {"deployed": args.get("env")}}


def main() -> None:
    with GateClient(CONFIG, launcher=SKILLYARD) as gate:
        print(f"gate ready: session {gate.session_id}, project {gate.project_id}")
        gate.register_tool("echo", lambda args: {"output": args})
        gate.register_tool("deploy", deploy)
        gate.register_tool("rm_rf", lambda args: {"output": "should never run"})

        print("echo   ->", gate.govern("echo", {"text": "hello"})["phase"])
        denied = gate.govern("rm_rf", {"path": "/"})
        print("rm_rf  ->", denied["phase"], denied["kind"])
        held = gate.govern("deploy", {"env": "prod"})
        print("deploy ->", held["phase"], held["action_id"], "deadline", held["deadline"])

        print("alice approves from another process:")
        subprocess.run(
            [
                *SKILLYARD,
                "approvals",
                "grant",
                "--config",
                CONFIG,
                held["action_id"],
                "--key",
                str(HERE / "alice.example-key.json"),
                "--reason",
                "release 1.2",
            ],
            check=True,
        )
        done = gate.resume(held["action_id"], held["request_id"], wait_ms=5000)
        print("resume ->", done["phase"], done["output"])
        again = gate.resume(held["action_id"], held["request_id"])
        print("resume again ->", again["phase"], "(recorded outcome; the body did not run again)")
    subprocess.run([*SKILLYARD, "audit", "verify", "--config", CONFIG], check=True)


if __name__ == "__main__":
    main()
