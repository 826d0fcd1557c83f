"""A real gateway with a real fs server (and the echo server for slow calls), for luca-shell's tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.gateway.harness import Env, GatewayProcess
from tests.support.procs import ServerHandle, start_server


@dataclass
class Appliance:
    env: Env
    gateway: GatewayProcess
    fs: ServerHandle
    root: Path

    @property
    def ws_url(self) -> str:
        return self.gateway.ws_url

    @property
    def token(self) -> str:
        return self.gateway.token


@pytest.fixture
def appliance() -> Iterator[Appliance]:
    env = Env()
    root = env.state / "user_files"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "notes.md").write_text("# Notes\nbuy milk\n", encoding="utf-8")
    (root / "hello.py").write_text("print('hello')\n", encoding="utf-8")
    try:
        fs = start_server("fs", {**env.env, "LLMBDO_VIRTUAL_ROOT": str(root)})
        env.backends.append(fs)
        env.start_backend("echo")
        gw = env.start_gateway()
        yield Appliance(env, gw, fs, root)
    finally:
        env.close()
