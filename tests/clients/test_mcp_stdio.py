"""`llmbasedos mcp-stdio`, a real subprocess, driven by the official SDK's stdio client."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import TextResourceContents

from tests.gateway.harness import REPO
from tests.support.mcp_stack import FILES, McpStack


def bridge(stack: McpStack, *args: str, **env: str) -> StdioServerParameters:
    base = {k: v for k, v in stack.env.env.items() if not k.startswith("LLMBDO_TOKEN")}
    return StdioServerParameters(command=sys.executable, args=["-m", "llmbasedos.appliance.cli", "mcp-stdio", *args],
                                 env={**base, **env}, cwd=str(REPO))


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_bridge_with_the_state_dir_defaults(stack: McpStack, mode: str) -> None:
    # No URL and no token given: the bridge finds both in the state dir (gateway.json, owner.token).
    async with Client(bridge(stack), mode=mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"fs_read", "fs_list", "echo_say"} <= names
        read = await client.call_tool("fs_read", {"path": "/hello.txt"})
        assert read.structured_content["content"] == "hello world\n"
        failed = await client.call_tool("fs_read", {"path": "/missing.txt"})
        assert failed.is_error is True
        resource = await client.read_resource("llmbasedos://fs/docs/a.md")
        first = resource.contents[0]
        assert isinstance(first, TextResourceContents) and first.text == FILES["docs/a.md"].decode()
        with pytest.raises(MCPError):
            await client.call_tool("no_such_tool", {})


async def test_bridge_with_url_and_token_file(stack: McpStack, tmp_path: os.PathLike[str]) -> None:
    token = stack.gateway.create_token("stdio-fs", allow=("mcp.fs.*",))
    token_file = os.path.join(tmp_path, "token")
    with open(token_file, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    params = bridge(stack, "--url", stack.gateway.url, "--token-file", token_file)
    async with Client(params, mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "fs_stat" in names and not any(n.startswith("echo_") for n in names)
        stat = await client.call_tool("fs_stat", {"path": "/bin.dat"})
        assert stat.structured_content["size"] == 256


async def test_a_bad_token_is_an_error_the_host_can_show(stack: McpStack) -> None:
    params = bridge(stack, "--url", stack.gateway.url, LLMBDO_TOKEN="lbd_wrong")
    with pytest.raises(BaseException) as caught:  # the SDK may wrap it in an exception group
        async with Client(params, mode="legacy"):
            pass
    found = _first_mcp_error(caught.value)
    assert found is not None and "token" in str(found).lower()


def _first_mcp_error(exc: BaseException) -> MCPError | None:
    if isinstance(exc, MCPError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _first_mcp_error(inner)
        if found is not None:
            return found
    return None


def test_missing_configuration_is_named(tmp_path: os.PathLike[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMBDO_")}
    env["LLMBDO_STATE_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "llmbasedos.appliance.cli", "mcp-stdio"], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "no gateway URL" in done.stderr
    done = subprocess.run([sys.executable, "-m", "llmbasedos.appliance.cli", "mcp-stdio", "--url", "http://127.0.0.1:9"],
                          env=env, cwd=str(REPO), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "token file" in done.stderr
