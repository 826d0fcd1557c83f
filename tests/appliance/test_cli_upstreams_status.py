"""The upstream MCP servers in the human output of `llmbasedos status` (rendered, no appliance needed)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from llmbasedos.appliance.cli import _print_upstreams
from llmbasedos.upstream_state import STATE_FILE, read_upstream_state


def rendered(run_dir: Path) -> str:
    out = io.StringIO()
    _print_upstreams(Console(file=out, width=200, color_system=None), read_upstream_state(run_dir))
    return out.getvalue()


def test_each_server_with_its_counts_and_what_was_left_out(tmp_path: Path) -> None:
    servers = {"memory": {"state": "ready", "transport": "stdio", "tools": 9, "calls": 12, "errors": 2, "restarts": 1,
                          "last_error": None,
                          "refused_tools": {"delete_all": "denied by the tools policy in the registry"}},
               "github": {"state": "failed", "transport": "http", "tools": 0, "calls": 0, "errors": 0, "restarts": 3,
                          "last_error": "initialize timed out after 30 s"}}
    doc = {"pid": None, "registry_error": "servers.x: unknown field 'cmd'", "servers": servers}
    (tmp_path / STATE_FILE).write_text(json.dumps(doc), encoding="utf-8")
    text = rendered(tmp_path)
    memory = next(line for line in text.splitlines() if "memory" in line and "ready" in line)
    assert [cell.strip() for cell in memory.split("│")[1:-1]] == ["memory", "ready", "stdio", "9", "12", "2", "1", "-"]
    assert "initialize timed out after 30 s" in text and "failed" in text
    assert "memory: delete_all left out: denied by the tools policy in the registry" in text
    assert "mcp_servers.yaml: servers.x: unknown field 'cmd'" in text


def test_nothing_without_a_state_file_and_a_clear_line_for_a_bad_one(tmp_path: Path) -> None:
    assert rendered(tmp_path) == ""
    (tmp_path / STATE_FILE).write_text("[not an object", encoding="utf-8")
    assert rendered(tmp_path).startswith("upstream MCP servers: upstream.state.json is not valid JSON")
