"""Fixtures shared by the server tests.

`start_server` is a factory: `handle = start_server("fs", {"LLMBDO_VIRTUAL_ROOT": ...})` starts the real
server process (see tests/support/procs.py) and stops it when the test ends, whatever happens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.servers.sync_harness import SyncEnv, make_env
from tests.support.procs import ServerHandle
from tests.support.procs import start_server as _start_server


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerHandle]]:
    handles: list[ServerHandle] = []

    def start(name: str, env: dict[str, str] | None = None, **kwargs: Any) -> ServerHandle:
        handle = _start_server(name, env, **kwargs)
        handles.append(handle)
        return handle

    yield start
    for handle in reversed(handles):
        handle.stop()


@pytest.fixture
def senv() -> Iterator[SyncEnv]:
    """A fresh sync test world (tests/servers/sync_harness.py): a virtual root, remotes served over WebDAV on
    loopback and their rclone.conf; no sync server started."""
    env = make_env()
    yield env
    env.close()

