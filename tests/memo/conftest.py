from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skillyard import Policy, SyncRuntime
from skillyard.memo import Memo, memo_of

CACHED = Policy(cache="read-through", idempotent=True)


class Counter:
    """A skill body that counts its executions and can be told to fail or misbehave."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_next = False
        self.bad_output_next = False

    def __call__(self, args: dict[str, Any]) -> Any:
        self.calls.append(args)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("upstream unavailable")
        if self.bad_output_next:
            self.bad_output_next = False
            return {"n": "not a number"}
        return {"n": len(self.calls), "echo": args}


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def memo(rt: SyncRuntime) -> Memo:
    m = memo_of(rt.runtime)
    assert m is not None
    return m


def add_counter(
    rt: SyncRuntime, name: str = "t-count", policy: Policy = CACHED, **kw: Any
) -> Counter:
    counter = Counter()
    kw.setdefault(
        "output_schema",
        {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    )
    rt.tool(name, policy=policy, **kw)(counter)
    return counter


@pytest.fixture
def mrt() -> Iterator[SyncRuntime]:
    runtime = SyncRuntime.memory()
    yield runtime
    runtime.close()


def write_python_skill(root: Path, skill_id: str, body: str, policy: str = "") -> Path:
    pkg = root / skill_id
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "skill.toml").write_text(
        f'runtime = "python"\nentry = "skill.py"\n{policy}\n[[methods]]\nname = "run"\n'
    )
    (pkg / "skill.py").write_text(body)
    return pkg
