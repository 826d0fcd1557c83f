"""Host configuration files read into registry terms: one realistic file of each host, and every odd entry named."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from llmbasedos.servers.upstream.host_configs import (
    HostConfigError,
    bridge_entry,
    detect_format,
    parse_env_file,
    parse_host_config,
    registry_name,
    strip_jsonc,
)
from llmbasedos.servers.upstream.registry import Secret, load_registry
from llmbasedos.servers.upstream.registry_file import NewServer, add_server

CLAUDE = """{
  "mcpServers": {
    "memory": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-memory"],
      "env": {"MEMORY_FILE_PATH": "/Users/ann/memory.jsonl"}
    },
    "GitHub Server": {
      "command": "docker",
      "args": ["run", "-i", "--rm", "-e", "GITHUB_PERSONAL_ACCESS_TOKEN", "github-mcp-server"],
      "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_claudeSecret123"}
    },
    "fs": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "${userHome}/Desktop"]},
    "llmbasedos": {"command": "/opt/llmbasedos/bin/llmbasedos", "args": ["mcp-stdio", "--state-dir", "/srv/lbd"]},
    "broken": {"command": "node", "env": {"DEBUG": true}}
  },
  "globalShortcut": "Ctrl+Space"
}"""

VSCODE = """{
  // Workspace MCP servers, JSONC as VS Code writes it.
  "inputs": [
    {"type": "promptString", "id": "github-token", "description": "GitHub Personal Access Token", "password": true}
  ],
  "servers": {
    "github": {
      "type": "http",
      "url": "https://api.githubcopilot.com/mcp/",
      "headers": {"Authorization": "Bearer ${input:github-token}"}
    },
    "Time.Server": {"type": "stdio", "command": "uvx", "args": ["mcp-server-time", "--local-timezone=Europe/Paris"]},
    "playwright": {
      "command": "npx", "args": ["@playwright/mcp@latest"],
      "env": {"PW_TOKEN": "${env:PW_TOKEN}", "PW_DIR": "${workspaceFolder}/out", "API": "key-${env:API_SUFFIX}"},
      "envFile": "${workspaceFolder}/.env",
    },
    /* an old SSE server */
    "legacy": {"type": "sse", "url": "http://localhost:3001/sse"},
    "self": {"type": "http", "url": "http://localhost:8765/mcp"},
  },
}"""

CURSOR = """{
  "mcpServers": {
    "everything": {"url": "http://127.0.0.1:3001/mcp", "headers": {"Authorization": "Bearer ${env:EVERY_TOKEN}"}},
    "remote-sse": {"url": "https://example.org/sse"},
    "upstream": {"command": "python", "args": ["-m", "my_server"], "env": {"API_KEY": "sk-cursor-999"}},
    "paused": {"command": "node", "args": ["x.js"], "disabled": true},
    "nothing": {"args": ["x"]}
  }
}"""


def by_host(config, name):  # type: ignore[no-untyped-def]
    return next(s for s in config.servers if s.host_name == name)


def test_claude_desktop() -> None:
    config = parse_host_config(CLAUDE, file_name="/Users/ann/Library/Application Support/Claude/"
                                                 "claude_desktop_config.json", environ={"X": "y"}, home="/Users/ann")
    assert config.format == "claude-desktop" and config.label == "Claude Desktop"
    assert [s.name for s in config.servers] == ["memory", "github_server", "fs_mcp"]
    memory = by_host(config, "memory")
    assert memory.command == "npx" and memory.args == ("-y", "@modelcontextprotocol/server-memory")
    assert memory.env == {"MEMORY_FILE_PATH": "/Users/ann/memory.jsonl"} and memory.enabled and not memory.notes
    github = by_host(config, "GitHub Server")
    assert github.name == "github_server" and github.env["GITHUB_PERSONAL_ACCESS_TOKEN"] == "ghp_claudeSecret123"
    assert any("registered as github_server" in n for n in github.notes)
    fs = by_host(config, "fs")  # the name of the appliance's own fs service: mapped, not refused
    assert fs.name == "fs_mcp"
    assert fs.args[-1] == "${userHome}/Desktop" and fs.enabled  # Claude Desktop substitutes nothing
    assert [(s.host_name, s.reason) for s in config.skipped] == [("llmbasedos", "this is llmbasedos itself")]
    assert [(s.host_name, s.reason) for s in config.refused] == [("broken", "env.DEBUG: must be a string")]


def test_vscode_with_inputs_variables_and_sse() -> None:
    config = parse_host_config(VSCODE, file_name="/home/ann/proj/.vscode/mcp.json", own_urls=["http://127.0.0.1:8765"],
                               environ={"API_SUFFIX": "abc"}, home="/home/ann")
    assert config.format == "vscode" and config.inputs == {"github-token": "GitHub Personal Access Token"}
    github = by_host(config, "github")
    assert github.url == "https://api.githubcopilot.com/mcp/" and github.command is None
    # ${input:...} cannot be had here: registered disabled, its text kept, what it needs said
    assert not github.enabled and github.headers == {"Authorization": "Bearer ${input:github-token}"}
    assert github.unresolved == {"headers.Authorization": ("${input:github-token}",)}
    time = by_host(config, "Time.Server")
    assert time.name == "time_server" and time.args == ("mcp-server-time", "--local-timezone=Europe/Paris")
    pw = by_host(config, "playwright")
    assert pw.enabled and pw.env == {"PW_TOKEN": Secret(env="PW_TOKEN"), "PW_DIR": "/home/ann/proj/out",
                                     "API": "key-abc"}
    assert pw.env_file == "/home/ann/proj/.env"
    assert [r.host_name for r in config.refused] == ["legacy"] and "SSE" in config.refused[0].reason
    assert [s.host_name for s in config.skipped] == ["self"]  # localhost:8765/mcp is this appliance


def test_cursor() -> None:
    config = parse_host_config(CURSOR, file_name="/home/ann/.cursor/mcp.json", environ={})
    assert config.format == "cursor"
    everything = by_host(config, "everything")
    # "Bearer ${env:EVERY_TOKEN}" with the variable unset: kept, the server registered disabled
    assert not everything.enabled and everything.unresolved == {"headers.Authorization": ("${env:EVERY_TOKEN}",)}
    upstream = by_host(config, "upstream")  # a name of the appliance's own: mapped
    assert upstream.name == "upstream_mcp" and upstream.env == {"API_KEY": "sk-cursor-999"}
    paused = by_host(config, "paused")
    assert not paused.enabled and any("disabled" in n for n in paused.notes)
    refused = {r.host_name: r.reason for r in config.refused}
    assert "/sse" in refused["remote-sse"] and refused["nothing"] == "has neither a command nor a url"
    filled = parse_host_config(CURSOR, file_name="mcp.json", environ={"EVERY_TOKEN": "t0k"})
    assert by_host(filled, "everything").headers == {"Authorization": "Bearer t0k"}
    assert by_host(filled, "everything").enabled


def test_registry_names_are_deterministic_and_valid() -> None:
    assert registry_name("GitHub") == "github"
    assert registry_name("my.server v2") == "my_server_v2"
    assert registry_name("1password") == "mcp_1password"
    assert registry_name("fs") == "fs_mcp" and registry_name("hello") == "hello_mcp"
    assert registry_name("") == "server"
    long = registry_name("a-very-long-server-name-that-goes-on-and-on")
    assert len(long) == 32 and long == registry_name("a-very-long-server-name-that-goes-on-and-on")
    assert long != registry_name("a-very-long-server-name-that-goes-on-and-off")
    assert registry_name("GitHub", taken={"github"}) == "github_2"
    assert registry_name("GitHub", taken={"github", "github_2"}) == "github_3"
    same = parse_host_config('{"mcpServers": {"A B": {"command": "x"}, "a_b": {"command": "y"}}}')
    assert [s.name for s in same.servers] == ["a_b", "a_b_2"]


def test_jsonc_and_format_detection() -> None:
    assert json.loads(strip_jsonc('{"a": "// not a comment", /* c */ "b": [1, 2,], // end\n}')) == {
        "a": "// not a comment", "b": [1, 2]}
    assert json.loads(strip_jsonc('{"a": "x\\", y",}')) == {"a": 'x", y'}
    assert detect_format({"servers": {}}) == "vscode"
    assert detect_format({"mcp": {"servers": {}}}) == "vscode"  # VS Code's settings.json
    assert detect_format({"mcpServers": {}}, "/x/claude_desktop_config.json") == "claude-desktop"
    assert detect_format({"mcpServers": {}}, "/x/.cursor/mcp.json") == "cursor"
    with pytest.raises(HostConfigError, match="neither"):
        detect_format({"other": 1})
    with pytest.raises(HostConfigError, match="not valid JSON"):
        parse_host_config("{nope")
    with pytest.raises(HostConfigError, match="unknown host format"):
        parse_host_config("{}", host_format="emacs")


def test_env_file_and_the_entry_a_host_needs() -> None:
    assert parse_env_file("# c\nexport A=1\nB='two words'\nC=\"q\"\nD=x # note\nnot a line\n") == {
        "A": "1", "B": "two words", "C": "q", "D": "x"}
    claude = bridge_entry("claude-desktop", "/opt/bin/llmbasedos", "/srv/lbd")
    assert claude == {"mcpServers": {"llmbasedos": {"command": "/opt/bin/llmbasedos",
                                                    "args": ["mcp-stdio", "--state-dir", "/srv/lbd"]}}}
    vscode = bridge_entry("vscode", "/opt/bin/llmbasedos", "/srv/lbd")
    assert vscode["servers"]["llmbasedos"]["type"] == "stdio"
    # The entry it prints is one the import skips, so a second import of the host's file is harmless.
    again = parse_host_config(json.dumps(claude))
    assert not again.servers and [s.host_name for s in again.skipped] == ["llmbasedos"]
    by_module = parse_host_config('{"mcpServers": {"lbd": {"command": "python3", "args": '
                                  '["-m", "llmbasedos.appliance.cli", "mcp-stdio"]}}}')
    assert [s.host_name for s in by_module.skipped] == ["lbd"]


@pytest.mark.parametrize(("text", "file_name", "secret"), [
    (CLAUDE, "claude_desktop_config.json", "ghp_claudeSecret123"),
    (CURSOR, "/home/ann/.cursor/mcp.json", "sk-cursor-999"),
    (VSCODE, "/home/ann/proj/.vscode/mcp.json", "key-abc")])
def test_each_file_registers_with_its_secrets_in_0600_files(tmp_path: Path, text: str, file_name: str,
                                                            secret: str) -> None:
    config = parse_host_config(text, file_name=file_name, environ={"API_SUFFIX": "abc"}, home="/home/ann")
    for server in config.servers:
        add_server(tmp_path, NewServer(server.name, command=server.command, args=server.args, env=server.env,
                                       url=server.url, headers=server.headers, enabled=server.enabled))
    registry = load_registry(tmp_path, environ={})
    assert sorted(registry.servers) == sorted(s.name for s in config.servers) and not registry.refused
    assert secret not in (tmp_path / "mcp_servers.yaml").read_text()
    holders = [p for p in (tmp_path / "secrets").iterdir() if p.read_text() == secret]
    assert len(holders) == 1 and stat.S_IMODE(holders[0].stat().st_mode) == 0o600
    assert all(e.enabled == s.enabled for s in config.servers for e in [registry.servers[s.name]])
