from __future__ import annotations

from pathlib import Path

import pytest

from skillyard import SyncRuntime

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "skills"


@pytest.fixture
def rt():
    """A sync runtime with in-memory state, closed after the test."""
    runtime = SyncRuntime.memory()
    yield runtime
    runtime.close()
