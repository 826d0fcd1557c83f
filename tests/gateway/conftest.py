"""Fixtures for the gateway tests (helpers live in tests/gateway/harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.harness import Env


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    try:
        yield e
    finally:
        e.close()
