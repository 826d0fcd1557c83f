"""A real MCPServer used to exercise the framework: `python -m tests.support.echo_server`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from llmbasedos.backend.server import CallContext, MCPServer, method
from llmbasedos.protocol import errors


class EchoServer(MCPServer):
    service_name = "echo"
    caps_file = Path(__file__).with_name("echo_caps.json")

    @method("mcp.echo.say", inline=True)  # the cheapest real handler: the benchmarks' small call
    def say(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return params["text"] * params.get("n", 1)

    @method("mcp.echo.sleep")
    async def sleep(self, params: dict[str, Any], ctx: CallContext) -> Any:
        await asyncio.sleep(params["seconds"])
        return {"slept": params["seconds"]}

    @method("mcp.echo.block")
    def block(self, params: dict[str, Any], ctx: CallContext) -> Any:
        time.sleep(params["seconds"])
        return {"blocked": params["seconds"]}

    @method("mcp.echo.progress")
    def progress(self, params: dict[str, Any], ctx: CallContext) -> Any:
        for i in range(params["steps"]):
            ctx.progress(i + 1, params["steps"])
        return {"done": params["steps"]}

    @method("mcp.echo.fail")
    async def fail(self, params: dict[str, Any], ctx: CallContext) -> Any:
        if params["kind"] == "rpc":
            raise errors.NotFound("No such thing: /virtual/x")
        if params["kind"] == "oserror":
            raise FileNotFoundError(2, "No such file or directory", "/very/secret/host/path")
        raise RuntimeError("secret internal detail /home/someone")

    @method("mcp.echo.inline", inline=True)
    def inline(self, params: dict[str, Any], ctx: CallContext) -> Any:
        n = params["n"]
        if n < 0:
            raise errors.InvalidParams("n must not be negative")
        if n == 0:
            raise ZeroDivisionError("a bug")
        for i in range(n):
            ctx.progress(i + 1, n)
        return {"n": n}

    @method("mcp.echo.badresult")
    async def badresult(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return 42


if __name__ == "__main__":
    EchoServer.main()
