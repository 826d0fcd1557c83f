"""`<run dir>/upstream.state.json` as the status readers take it: absent, malformed, stale, or the real shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from llmbasedos.upstream_state import STATE_FILE, read_upstream_state

ROW = {"state": "ready", "transport": "stdio", "tools": 9, "tool_names": {"read_graph": "mcp.memory.read_graph"},
       "refused_tools": {"delete_all": "denied by the tools policy in the registry"}, "prompts": False,
       "resources": 0, "calls": 3, "errors": 1, "restarts": 1, "last_error": None, "since": 1733230000.0,
       "server_info": {"name": "memory", "version": "1.0", "secret": {"no": 1}}, "protocol_version": "2025-11-25"}


def write(run_dir: Path, doc: object) -> None:
    (run_dir / STATE_FILE).write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")


def test_no_file_means_no_upstreams(tmp_path: Path) -> None:
    assert read_upstream_state(tmp_path) == {"present": False, "error": None, "servers": {}}


def test_the_real_shape_is_read_and_kept_to_known_fields(tmp_path: Path) -> None:
    write(tmp_path, {"pid": os.getpid(), "updated": 1.5, "registry": "mcp_servers.yaml", "registry_error": None,
                     "servers": {"memory": {**ROW, "unexpected": "dropped", "calls": "three"},
                                 "time": {"state": "refused", "last_error": "bad command"}, "odd": 7}})
    state = read_upstream_state(tmp_path)
    assert state["present"] and state["error"] is None and state["running"] is True
    assert state["registry"] == "mcp_servers.yaml" and state["updated"] == 1.5
    memory = state["servers"]["memory"]
    assert "unexpected" not in memory and "calls" not in memory  # a field of the wrong type is left out
    assert memory["server_info"] == {"name": "memory", "version": "1.0"}
    assert memory["refused_tools"] == ROW["refused_tools"] and memory["tools"] == 9 and memory["last_error"] is None
    assert state["servers"]["time"]["state"] == "refused"
    assert state["servers"]["odd"] == {"state": "unknown"}
    assert list(state["servers"]) == ["memory", "odd", "time"]


def test_a_malformed_file_is_reported_not_raised(tmp_path: Path) -> None:
    for doc, said in (("{not json", "not valid JSON"), ([1, 2], "not an object"), ({"servers": []}, "not an object"),
                      (b"\xff\xfe".decode("latin-1"), "not valid JSON")):
        write(tmp_path, doc)
        state = read_upstream_state(tmp_path)
        assert state["present"] and said in state["error"] and state["servers"] == {}


def test_a_file_left_by_a_dead_program_says_so(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    write(tmp_path, {"pid": int(dead.stdout), "servers": {"memory": ROW}})
    state = read_upstream_state(tmp_path)
    assert state["running"] is False and state["servers"]["memory"]["state"] == "ready"
