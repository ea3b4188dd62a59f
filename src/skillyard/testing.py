"""pytest helpers for skill authors (registered as the ``skillyard`` pytest plugin).

Light to import: nothing heavy loads until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skillyard.runtime import SyncRuntime


@pytest.fixture
def skillyard_runtime() -> Iterator[SyncRuntime]:
    """A runtime with in-memory state and no roots; closed after the test."""
    runtime = SyncRuntime.memory()
    yield runtime
    runtime.close()
