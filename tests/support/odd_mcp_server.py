"""An MCP server (the SDK's `MCPServer`, over stdio) with the odd cases the upstream tests need.

    python tests/support/odd_mcp_server.py MODE [--name NAME] [--extra-tool NAME]...

Run it as a script: it imports only the SDK, so it works in a child with a bare environment (no PYTHONPATH, cwd
anywhere). `tests/support/third_party.py` `odd_server(mode)` gives the command line.

Modes:
  normal   serve the tools, prompt and resources below
  garbage  the same, but a non-JSON line goes to stdout at start and before every message the server sends
  silent   read stdin and never answer anything, initialize included; exit at end of input
  exit     print one line to stderr and exit with code 5 at once

Tools: `echo(text)` (text; title and annotations set), `add(a, b)` (structuredContent, with an outputSchema),
`image()` (a 1x1 PNG), `resource()` (an embedded resource and a resource link), `fail()` (isError),
`slow(seconds, steps)` (`steps` progress notifications; when cancelled it writes the file named by
$ODD_CANCELLED_FILE), `crash()` (the process exits with code 3 mid-call), `huge(megabytes)` (a text result of that
size), `pid()` (pid, pgid, ppid, the environment variable names), `change_tools()` (adds the tool `added_later`
and sends notifications/tools/list_changed), and one echo tool per `--extra-tool NAME`.
Prompt `greet(name)`; resource `odd://readme`; resource template `odd://item/{item_id}`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TypedDict

import anyio
from mcp.server import NotificationOptions
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.stdio import stdio_server
from mcp.types import (
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
    ToolAnnotations,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

__all__ = ["PNG_BASE64", "README_TEXT", "EXIT_MODE_CODE", "CRASH_CODE", "GARBAGE_LINE", "build_server", "main"]

# A real 1x1 RGBA PNG (one red pixel).
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
README_TEXT = "The odd MCP server: a test server for the cases real servers rarely show.\n"
EXIT_MODE_CODE = 5
CRASH_CODE = 3
GARBAGE_LINE = "this is not JSON-RPC {{{"
MODES = ("normal", "garbage", "silent", "exit")


class AddResult(TypedDict):
    sum: int


def build_server(name: str = "odd", extra_tools: tuple[str, ...] = ()) -> MCPServer:
    server = MCPServer(name, version="1.0.0", instructions="Test server for odd cases.")

    @server.tool(title="Echo", annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True),
                 structured_output=False)
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def add(a: int, b: int) -> AddResult:
        """Add two numbers (structured output)."""
        return {"sum": a + b}

    @server.tool()
    def image() -> CallToolResult:
        """A tiny PNG image."""
        return CallToolResult(content=[ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")])

    @server.tool()
    def resource() -> CallToolResult:
        """An embedded resource and a resource link."""
        embedded = EmbeddedResource(type="resource", resource=TextResourceContents(
            uri="odd://readme", mime_type="text/plain", text=README_TEXT))
        link = ResourceLink(type="resource_link", uri="odd://item/42", name="item-42", mime_type="text/plain",
                            description="Item 42")
        return CallToolResult(content=[embedded, link])

    @server.tool()
    def fail() -> CallToolResult:
        """A result with isError set."""
        return CallToolResult(content=[TextContent(type="text", text="this tool always fails")], is_error=True)

    @server.tool(structured_output=False)
    async def slow(ctx: Context, seconds: float = 1.0, steps: int = 4) -> str:
        """Report progress `steps` times over `seconds`; a cancellation is recorded in $ODD_CANCELLED_FILE."""
        try:
            for step in range(1, steps + 1):
                await anyio.sleep(seconds / max(steps, 1))
                await ctx.report_progress(step, steps, f"step {step} of {steps}")
        except anyio.get_cancelled_exc_class():
            marker = os.environ.get("ODD_CANCELLED_FILE")
            if marker:
                with open(marker, "w", encoding="utf-8") as f:
                    f.write(f"cancelled {ctx.request_id}\n")
            raise
        return f"done after {steps} steps"

    @server.tool(structured_output=False)
    def crash() -> str:
        """Exit the process (code 3) in the middle of the call."""
        sys.stderr.write("odd server: crashing on purpose\n")
        sys.stderr.flush()
        os._exit(CRASH_CODE)

    @server.tool(structured_output=False)
    def huge(megabytes: float = 1.0) -> str:
        """A text result of `megabytes` MiB."""
        return "x" * int(megabytes * 1024 * 1024)

    @server.tool()
    def pid() -> dict[str, Any]:
        """This process: pid, process group, parent, and the names of its environment variables."""
        return {"pid": os.getpid(), "pgid": os.getpgid(0), "ppid": os.getppid(), "sid": os.getsid(0),
                "env": sorted(os.environ)}

    def added_later(text: str) -> str:
        """A tool that exists only after change_tools()."""
        return f"later: {text}"

    @server.tool(structured_output=False)
    async def change_tools(ctx: Context) -> str:
        """Add the tool `added_later` and tell the client the tool list changed."""
        if not any(t.name == "added_later" for t in await server.list_tools()):
            server.add_tool(added_later, name="added_later", structured_output=False)
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            await ctx.notify_tools_changed()  # reaches subscriptions/listen streams
        else:
            await ctx.session.send_tool_list_changed()
        return "added_later is now listed"

    for extra in extra_tools:
        server.add_tool(_named_echo(extra), name=extra, description=f"Echo tool {extra}", structured_output=False)

    @server.prompt()
    def greet(name: str) -> str:
        """Greet someone."""
        return f"Hello, {name}! Greetings from the odd server."

    @server.resource("odd://readme", name="readme", mime_type="text/plain", description="What this server is")
    def readme() -> str:
        return README_TEXT

    @server.resource("odd://item/{item_id}", name="item", mime_type="text/plain", description="One item")
    def item(item_id: str) -> str:
        return f"item {item_id}\n"

    return server


def _named_echo(name: str) -> Any:
    def named_echo(text: str = "") -> str:
        return f"{name}: {text}"
    return named_echo


class _GarbageStdout:
    """The wire, with a non-JSON line before every line the server writes (one writer: lines never tear)."""

    def __init__(self, wire: anyio.AsyncFile[str]) -> None:
        self._wire = wire

    async def write(self, data: str) -> int:
        await self._wire.write(GARBAGE_LINE + "\n")
        return await self._wire.write(data)

    async def flush(self) -> None:
        await self._wire.flush()


async def _serve(server: MCPServer, garbage: bool) -> None:
    # MCPServer.run() advertises no tools.listChanged to handshake-era clients and takes no stdout of our own, so
    # this runs its low-level server as run_stdio_async() does. The SDK's own Client reaches the same attribute.
    lowlevel = server._lowlevel_server
    options = lowlevel.create_initialization_options(NotificationOptions(tools_changed=True))
    stdout: Any = None
    if garbage:
        sys.stdout.write(GARBAGE_LINE + "\n")
        sys.stdout.flush()
        stdout = _GarbageStdout(anyio.wrap_file(os.fdopen(os.dup(1), "w", encoding="utf-8")))
    async with stdio_server(stdout=stdout) as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, options)


def _silent() -> None:
    for _ in sys.stdin.buffer:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--name", default="odd", help="the server name in serverInfo")
    parser.add_argument("--extra-tool", action="append", default=[], metavar="NAME",
                        help="one more echo tool with this name (repeatable)")
    args = parser.parse_args(argv)
    if args.mode == "exit":
        sys.stderr.write("odd server: exiting at once, as asked (mode exit)\n")
        sys.stderr.flush()
        return EXIT_MODE_CODE
    if args.mode == "silent":
        _silent()
        return 0
    server = build_server(args.name, tuple(args.extra_tool))
    anyio.run(_serve, server, args.mode == "garbage")
    return 0


if __name__ == "__main__":
    sys.exit(main())
