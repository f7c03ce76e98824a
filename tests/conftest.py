"""Shared pytest fixtures.

`http_server` is a started `FixtureServer` on 127.0.0.1 (see tests/httpserver.py). Every test
that downloads goes through it: this machine, like a user's CI, cannot reach the real hosts,
and tests must never try.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `from httpserver import FixtureServer` in any test

from httpserver import FixtureServer  # noqa: E402


@pytest.fixture
def http_server() -> Iterator[FixtureServer]:
    """A fresh server per test: cheap to start, and no fixture bytes or faults leak between tests."""
    with FixtureServer() as server:
        yield server
