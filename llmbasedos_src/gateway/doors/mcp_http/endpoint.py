"""Where `/mcp` meets the ASGI app: the endpoint serving through the running gateway's `McpDoor`, and the
middleware that hands it `/mcp` ahead of the framework's routing."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope, Send

from llmbasedos.gateway.doors.mcp_http.transport import McpDoor

if TYPE_CHECKING:
    from llmbasedos.gateway.doors.host import DoorHost

__all__ = ["McpHttpEndpoint", "McpMiddleware", "PATH"]

PATH = "/mcp"


class McpHttpEndpoint:
    """The ASGI endpoint mounted at `/mcp`; it serves through the `McpDoor` of the app's running gateway."""

    def __init__(self) -> None:
        self._door: McpDoor | None = None

    def door(self, gateway: DoorHost) -> McpDoor:
        door = self._door
        if door is None or door.gateway is not gateway:
            if door is not None:
                door.close()
            door = self._door = McpDoor(gateway)
        return door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        gateway: DoorHost = scope["app"].state.gateway
        await self.door(gateway)(scope, receive, send)


class McpMiddleware:
    """Serves `/mcp` ahead of the framework's routing and exception layers, which it does not need: it answers
    every error itself. Everything else goes on to the wrapped app."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Any]) -> None:
        self.app = app
        self.endpoint = McpHttpEndpoint()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH:
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)
