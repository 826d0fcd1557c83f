"""Fixtures shared by every test directory (the helpers live in tests/gateway/harness.py and tests/support/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.harness import Env
from tests.support.mcp_stack import McpStack


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    try:
        yield e
    finally:
        e.close()


@pytest.fixture(scope="module")
def stack() -> Iterator[McpStack]:
    """fs and echo behind a gateway with its defaults, shared by one module's tests (tests/support/mcp_stack.py)."""
    s = McpStack.start()
    try:
        yield s
    finally:
        s.close()
