"""`/mcp` driven by the official MCP Python SDK's client, in each era, over Streamable HTTP."""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import BlobResourceContents, TextContent, TextResourceContents

from tests.support.mcp_stack import FILES, McpStack

MODES = ["auto", "legacy", "2026-07-28"]


def text_of(result: Any) -> str:
    """The text of the first content block of a tool result or a resource read."""
    first = result.content[0] if hasattr(result, "content") else result.contents[0]
    assert isinstance(first, (TextContent, TextResourceContents)), first
    return first.text


def blob_of(result: Any) -> str:
    first = result.contents[0]
    assert isinstance(first, BlobResourceContents), first
    return first.blob


def _by_name(tools: list[Any]) -> dict[str, Any]:
    return {t.name: t for t in tools}


async def _all_tools(client: Client) -> list[Any]:
    tools: list[Any] = []
    cursor = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return tools


@pytest.mark.parametrize("mode", MODES)
async def test_tools_in_every_mode(stack: McpStack, mode: str) -> None:
    async with Client(stack.url_with_token, mode=mode) as client:
        expected = "2025-11-25" if mode == "legacy" else "2026-07-28"
        assert client.session.protocol_version == expected
        tools = _by_name(await _all_tools(client))
        assert {"fs_list", "fs_read", "fs_stat", "echo_say"} <= set(tools)
        for name, tool in tools.items():
            assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name)
            assert tool.input_schema["type"] == "object"
            if tool.output_schema is not None:
                assert tool.output_schema["type"] == "object"
        assert tools["fs_read"].annotations.read_only_hint is True
        assert tools["fs_delete"].annotations.destructive_hint is True
        # echo's result schema is a string: wrapped as {"result": ...} to make an object schema.
        assert tools["echo_say"].output_schema["properties"]["result"] == {"type": "string"}

        read = await client.call_tool("fs_read", {"path": "/hello.txt"})
        assert read.is_error is False
        assert read.structured_content["content"] == "hello world\n"

        said = await client.call_tool("echo_say", {"text": "bonjour"})
        assert said.structured_content == {"result": "bonjour"}
        assert text_of(said) == "bonjour"


@pytest.mark.parametrize("mode", MODES)
async def test_tool_failure_is_an_error_result(stack: McpStack, mode: str) -> None:
    async with Client(stack.url_with_token, mode=mode) as client:
        missing = await client.call_tool("fs_read", {"path": "/no/such/file.txt"})
        assert missing.is_error is True
        assert "/no/such/file.txt" in text_of(missing)
        # Arguments that break the input schema are the tool's failure too, with a message naming the fault.
        bad = await client.call_tool("echo_say", {"text": 3})
        assert bad.is_error is True
        assert "text" in text_of(bad)
        # Confinement is the fs server's: a path out of the root is refused, without showing a host path.
        escape = await client.call_tool("fs_read", {"path": "/../../etc/passwd"})
        assert escape.is_error is True
        assert str(stack.root) not in text_of(escape)


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_tool_is_a_protocol_error(stack: McpStack, mode: str) -> None:
    async with Client(stack.url_with_token, mode=mode) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("no_such_tool", {})
        assert caught.value.code == -32602
        assert "no_such_tool" in str(caught.value)


@pytest.mark.parametrize("mode", MODES)
async def test_resources(stack: McpStack, mode: str) -> None:
    async with Client(stack.url_with_token, mode=mode) as client:
        listed = await client.list_resources()
        uris = {str(r.uri) for r in listed.resources}
        assert {"llmbasedos://fs/hello.txt", "llmbasedos://fs/docs/a.md", "llmbasedos://fs/docs/deep/b.txt",
                "llmbasedos://fs/bin.dat"} <= uris
        text = await client.read_resource("llmbasedos://fs/docs/a.md")
        assert text_of(text) == FILES["docs/a.md"].decode()
        blob = await client.read_resource("llmbasedos://fs/bin.dat")
        assert base64.b64decode(blob_of(blob)) == FILES["bin.dat"]
        templates = await client.list_resource_templates()
        assert templates.resource_templates[0].uri_template == "llmbasedos://fs/{+path}"
        with pytest.raises(MCPError) as caught:
            await client.read_resource("llmbasedos://fs/nope.txt")
        assert "nope.txt" in str(caught.value)


@pytest.mark.filterwarnings("ignore:ping is removed as of 2026-07-28")
async def test_legacy_ping_and_progress(stack: McpStack) -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with Client(stack.url_with_token, mode="legacy") as client:
        await client.send_ping()
        result = await client.call_tool("echo_progress", {"steps": 3}, progress_callback=on_progress)
        assert result.is_error is False
    assert seen == [(1, 3), (2, 3), (3, 3)]


async def test_modern_progress(stack: McpStack) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(stack.url_with_token, mode="2026-07-28") as client:
        result = await client.call_tool("echo_progress", {"steps": 2}, progress_callback=on_progress)
        assert result.is_error is False
    assert seen == [1, 2]


async def test_bearer_header_instead_of_query_token(stack: McpStack) -> None:
    async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {stack.token}"}) as http,
                Client(streamable_http_client(stack.url, http_client=http), mode="legacy") as client):
        said = await client.call_tool("echo_say", {"text": "via header"})
        assert said.structured_content == {"result": "via header"}


async def test_a_token_limited_to_fs_sees_only_fs_tools(stack: McpStack) -> None:
    token = stack.gateway.create_token("fs-only", allow=("mcp.fs.*",))
    async with Client(f"{stack.url}?token={token}", mode="2026-07-28") as client:
        names = {t.name for t in await _all_tools(client)}
        assert "fs_read" in names
        assert not any(n.startswith("echo_") for n in names)
        with pytest.raises(MCPError):
            await client.call_tool("echo_say", {"text": "x"})
