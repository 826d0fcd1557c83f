"""The agent's line to the gateway: one persistent connection to `gateway.sock`, calls made for a client.

Each request carries the top-level member `"caller": {"client_id"}`; the gateway's UNIX door then handles
the call as that client (its allowlist, tier, limits and audit), so a workflow never does more than the
client that started it. Without a client id (a run started on the agent's own socket, which only the owner
can reach) the call has the socket's owner rights. `"caller": {"run"}` names the execution making the call;
the gateway hands it back to the agent with a `mcp.agent.runWorkflow` the run makes, so the new run is known
as that run's child (see runs.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from llmbasedos.protocol import errors
from llmbasedos.rpc.client import RPCClient

__all__ = ["GatewayClient"]


class GatewayClient:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._client: RPCClient | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> RPCClient:
        async with self._lock:
            if self._client is None or not self._client.is_open:
                try:
                    reader, writer = await asyncio.open_unix_connection(str(self.socket_path), limit=1 << 20)
                except (OSError, ValueError) as exc:
                    raise errors.ServiceUnavailable("The gateway is not reachable") from exc
                self._client = RPCClient(reader, writer)
            return self._client

    async def call(self, client_id: str | None, method: str, params: Any, *, run: str | None = None) -> Any:
        caller: dict[str, str] = {}
        if client_id is not None:
            caller["client_id"] = client_id
        if run is not None:
            caller["run"] = run
        client = await self._connected()
        # Cancelled here, the call is cancelled at the gateway too (RPCClient sends mcp.cancel).
        return await client.call(method, params, caller=caller or None)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
