"""Fixtures shared by every test directory (the helpers live in tests/gateway/harness.py and tests/support/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.harness import Env, GatewayProcess
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


@pytest.fixture(scope="module")
def shared() -> Iterator[Env]:
    """The echo backend behind a gateway with its defaults, shared by one module's tests (a module may define
    its own `shared` to start something else; `gw` then serves that one)."""
    e = Env()
    try:
        e.start_backend("echo")
        e.start_gateway()
        yield e
    finally:
        e.close()


@pytest.fixture
def gw(shared: Env) -> GatewayProcess:
    return shared.gateways[0]

