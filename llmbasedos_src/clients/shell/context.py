"""What a command and the completer may use of the running shell (`luca.Shell` is the one there is).

They are given this interface rather than the Shell class, which runs them: the commands do not import the
module that dispatches to them.
"""

from __future__ import annotations

from typing import Protocol

from llmbasedos.clients.shell.client import GatewayClient
from llmbasedos.clients.shell.render import Output

__all__ = ["ShellContext"]


class ShellContext(Protocol):
    client: GatewayClient
    out: Output
    cwd: str
    methods: list[str]  # the gateway's methods this client may call, from mcp.hello

    def abspath(self, path: str) -> str:
        """`path` against the current directory, as an absolute virtual path."""

    async def read_line(self, prompt: str) -> str | None:
        """A line typed by the person, or None when there is no terminal or they gave up."""

    async def confirm(self, question: str) -> bool: ...

    async def refresh_methods(self) -> None: ...
