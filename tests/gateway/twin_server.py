"""A second real backend for the gateway tests: `python -m tests.gateway.twin_server`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from llmbasedos.backend.server import CallContext, MCPServer, method


class TwinServer(MCPServer):
    service_name = "twin"
    caps_file = Path(__file__).with_name("twin_caps.json")

    @method("mcp.twin.say")
    async def say(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return params["text"]

    @method("mcp.twin.sleep")
    async def sleep(self, params: dict[str, Any], ctx: CallContext) -> Any:
        await asyncio.sleep(params["seconds"])
        return {"slept": params["seconds"]}

    @method("mcp.twin.whoami")
    async def whoami(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return ctx.caller


if __name__ == "__main__":
    TwinServer.main()
