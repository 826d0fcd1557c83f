"""The upstream program under test: a registry file, the real program, and a socket client to it.

    world = UpstreamWorld.start(start_server, {"odd": odd_server().registry_entry()})
    result = await world.call("mcp.odd.echo", {"text": "hi"})
    world.write_registry({...})            # the program picks it up within seconds
    world.wait_state("odd", "ready")

The program runs exactly as under supervisord (`python -m llmbasedos.servers.upstream`), with its own config
dir holding mcp_servers.yaml.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from llmbasedos.rpc.client import RPCClient
from tests.support.procs import ServerHandle, wait_for

__all__ = ["UpstreamWorld", "pid_alive", "until"]


async def until(predicate: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
    """Like procs.wait_for, but lets the event loop run meanwhile (calls in flight go on)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := predicate()):
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by a parent that is gone) is not alive.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
        if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


class UpstreamWorld:
    def __init__(self, base: Path, handle: ServerHandle) -> None:
        self.base = base
        self.handle = handle
        self._client: RPCClient | None = None

    @classmethod
    def start(cls, start_server: Callable[..., ServerHandle], servers: dict[str, Any],
              env: dict[str, str] | None = None) -> UpstreamWorld:
        base = Path(tempfile.mkdtemp(prefix="lbup", dir="/tmp"))
        config = base / "config"
        config.mkdir()
        (config / "mcp_servers.yaml").write_text(yaml.safe_dump({"servers": servers}), encoding="utf-8")
        handle = start_server("upstream", {"LLMBDO_CONFIG_DIR": str(config), "LLMBDO_RUN_DIR": str(base / "run"),
                                           "LLMBDO_LOG_DIR": str(base / "logs"), **(env or {})})
        return cls(base, handle)

    @property
    def config_dir(self) -> Path:
        return self.base / "config"

    @property
    def run_dir(self) -> Path:
        return self.base / "run"

    def write_registry(self, servers: dict[str, Any] | str) -> None:
        text = servers if isinstance(servers, str) else yaml.safe_dump({"servers": servers})
        tmp = self.config_dir / ".mcp_servers.yaml.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.config_dir / "mcp_servers.yaml")

    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.run_dir / "upstream.state.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {"servers": {}}
        return data

    def server(self, name: str) -> dict[str, Any]:
        row: dict[str, Any] = self.state()["servers"].get(name, {})
        return row

    def wait_state(self, name: str, *states: str, timeout: float = 30.0) -> dict[str, Any]:
        wait_for(lambda: self.server(name).get("state") in states, timeout,
                 what=f"{name} in state {states} (now {self.server(name)})")
        return self.server(name)

    def cap(self, name: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.run_dir / f"{name}.cap.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return data

    def wait_cap(self, name: str, predicate: Callable[[dict[str, Any]], bool] = lambda c: True,
                 timeout: float = 30.0) -> dict[str, Any]:
        wait_for(lambda: (c := self.cap(name)) is not None and predicate(c), timeout, what=f"{name}.cap.json")
        cap = self.cap(name)
        assert cap is not None
        return cap

    def tools(self, name: str) -> set[str]:
        cap = self.cap(name) or {"capabilities": []}
        return {c["mcp_tool"]["name"] for c in cap["capabilities"] if "mcp_tool" in c}

    async def client(self) -> RPCClient:
        if self._client is None or not self._client.is_open:
            self._client = await RPCClient.connect_unix(str(self.handle.socket))
        return self._client

    async def call(self, method: str, params: Any = None, **kwargs: Any) -> Any:
        client = await self.client()
        return await client.call(method, params if params is not None else {}, **kwargs)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
