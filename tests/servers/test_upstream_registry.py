"""The registry of upstream MCP servers: what it accepts, and each fault named by server and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmbasedos.servers.upstream.registry import RegistryError, Secret, load_registry, parse_registry, registry_path

GOOD = """
servers:
  memory:
    command: node
    args: [mcp/server-memory/dist/index.js, 3]
    env: {MEMORY_FILE_PATH: {file: memory.path}, PLAIN: hello, TOKEN: {env: MEM_TOKEN}}
  everything:
    url: http://127.0.0.1:3001/mcp
    headers: {Authorization: {env: EVERYTHING_TOKEN}}
    timeouts: {connect: 5, call: 60}
    retry: {count: 2, backoff: 2}
    tools: {allow: ["*"], deny: [delete_*]}
  paused:
    url: https://example.org/mcp
    enabled: false
  off:
    url: https://example.org/mcp
"""


def test_a_good_registry(tmp_path: Path) -> None:
    (tmp_path / "mcp_servers.yaml").write_text(GOOD)
    reg = load_registry(tmp_path, environ={})
    assert sorted(reg.servers) == ["everything", "memory", "paused"]
    assert reg.refused == {  # `off:` is a boolean to YAML: the entry is refused, the others served
        "False": "mcp_servers.yaml: servers.False: YAML reads this name as a boolean: put it in quotes"}
    memory = reg.servers["memory"]
    assert memory.transport == "stdio" and memory.args == ("mcp/server-memory/dist/index.js", "3")
    assert memory.cwd == tmp_path  # relative args resolve against the config dir
    assert memory.env["MEMORY_FILE_PATH"] == Secret(file=tmp_path / "memory.path")
    everything = reg.servers["everything"]
    assert everything.timeouts == {"connect": 5.0, "list": 30.0, "call": 60.0}
    assert (everything.retry_count, everything.retry_backoff) == (2, 2.0)
    assert everything.allows_tool("echo") and not everything.allows_tool("delete_all")
    assert reg.servers["paused"].enabled is False


def test_secrets_are_read_at_start_and_never_shown(tmp_path: Path) -> None:
    (tmp_path / "memory.path").write_text("/data/memory.json\n")
    reg = parse_registry(yaml.safe_load(GOOD), config_dir=tmp_path)
    env, headers = reg.servers["memory"].resolve({"MEM_TOKEN": "s3cret-value"})
    assert env == {"MEMORY_FILE_PATH": "/data/memory.json", "PLAIN": "hello", "TOKEN": "s3cret-value"}
    assert headers == {}
    shown = repr(reg.servers["memory"].describe()) + repr(reg.servers["everything"].describe())
    assert "s3cret-value" not in shown and "{env: MEM_TOKEN}" in shown and "{env: EVERYTHING_TOKEN}" in shown
    with pytest.raises(RegistryError, match=r"servers\.everything\.headers\.Authorization: the variable "
                                            r"EVERYTHING_TOKEN is not set"):
        reg.servers["everything"].resolve({})
    (tmp_path / "memory.path").unlink()
    with pytest.raises(RegistryError, match=r"servers\.memory\.env\.MEMORY_FILE_PATH: cannot read memory\.path"):
        reg.servers["memory"].resolve({"MEM_TOKEN": "x"})


@pytest.mark.parametrize(("entry", "message"), [
    ({"command": "node", "url": "http://x/mcp"}, r"servers\.bad: give either 'command'"),
    ({}, r"servers\.bad: give either 'command'"),
    ({"command": ""}, r"servers\.bad\.command: must be a non-empty string"),
    ({"command": "node", "args": "a b"}, r"servers\.bad\.args: must be a list"),
    ({"command": "node", "env": {"A": {"env": "X", "file": "y"}}}, r"servers\.bad\.env\.A: must be a string, "),
    ({"command": "node", "env": {"A=B": "x"}}, r"servers\.bad\.env\.A=B: is not a valid name"),
    ({"command": "node", "headers": {}}, r"servers\.bad\.headers: is for HTTP servers"),
    ({"url": "file:///etc/passwd"}, r"servers\.bad\.url: must be an http:// or https:// URL"),
    ({"url": "http://x/mcp", "cwd": "/"}, r"servers\.bad\.cwd: is for stdio servers"),
    ({"url": "http://x/mcp", "timeouts": {"call": 0}}, r"servers\.bad\.timeouts\.call: must be a positive"),
    ({"url": "http://x/mcp", "timeouts": {"call": float("nan")}}, r"servers\.bad\.timeouts\.call: must be a pos"),
    ({"url": "http://x/mcp", "timeouts": {"read": 1}}, r"servers\.bad\.timeouts\.read: unknown timeout"),
    ({"url": "http://x/mcp", "retry": {"count": -1}}, r"servers\.bad\.retry\.count: must be an integer"),
    ({"url": "http://x/mcp", "retry": {"backoff": 0.5}}, r"servers\.bad\.retry\.backoff: must be a number"),
    ({"url": "http://x/mcp", "tools": {"allow": "*"}}, r"servers\.bad\.tools\.allow: must be a list"),
    ({"url": "http://x/mcp", "enabled": "yes"}, r"servers\.bad\.enabled: must be true or false"),
    ({"url": "http://x/mcp", "colour": "red"}, r"servers\.bad\.colour: unknown key"),
])
def test_one_bad_entry_is_refused_alone_naming_its_field(tmp_path: Path, entry: dict[str, object],
                                                         message: str) -> None:
    reg = parse_registry({"servers": {"bad": entry, "good": {"url": "http://127.0.0.1:9/mcp"}}}, config_dir=tmp_path)
    assert list(reg.servers) == ["good"]
    with pytest.raises(RegistryError, match=message):
        raise RegistryError(reg.refused["bad"])


@pytest.mark.parametrize("name", ["fs", "agent", "Memory", "has space", "x" * 33, "mcp.fs", "1st"])
def test_names_that_would_shadow_or_break_a_method_are_refused(tmp_path: Path, name: str) -> None:
    reg = parse_registry({"servers": {name: {"url": "http://127.0.0.1:9/mcp"}}}, config_dir=tmp_path)
    assert not reg.servers and name[:64] in reg.refused


def test_the_file_as_a_whole(tmp_path: Path) -> None:
    assert not load_registry(tmp_path, environ={}).servers  # no file: nothing registered
    (tmp_path / "mcp_servers.yaml").write_text("servers: [a, b]\n")
    with pytest.raises(RegistryError, match="servers: must be a mapping"):
        load_registry(tmp_path, environ={})
    (tmp_path / "mcp_servers.yaml").write_text("servers:\n  a: {url: [\n")
    with pytest.raises(RegistryError, match=r"mcp_servers.yaml: not valid YAML at line \d+"):
        load_registry(tmp_path, environ={})
    other = tmp_path / "elsewhere.yaml"
    other.write_text("servers: {t: {url: 'http://127.0.0.1:9/mcp'}}\n")
    assert registry_path(tmp_path, {"LLMBDO_MCP_SERVERS": str(other)}) == other
    assert list(load_registry(tmp_path, environ={"LLMBDO_MCP_SERVERS": str(other)}).servers) == ["t"]
