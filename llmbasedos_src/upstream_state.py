"""The upstream program's account of its MCP servers, `<run dir>/upstream.state.json`, as readers take it.

The upstream program (`python -m llmbasedos.servers.upstream`) rewrites the file atomically on every change:
`{"pid", "updated", "registry", "registry_error", "servers": {name: {"state", "transport", "tools", "calls",
"errors", "restarts", "last_error", ...}}}`. The gateway's `/status` and `llmbasedos status` read it here, the
same way: no file means no upstream servers; a file that cannot be read or is not that shape is reported in
`error`, never raised; each server's row keeps only the known fields of the right type; and a file left by a
program that is no longer running (kill -9 leaves it behind) says so in `running`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["STATE_FILE", "read_upstream_state"]

STATE_FILE = "upstream.state.json"
_MAX_BYTES = 4 * 1024 * 1024
_TEXT = ("state", "transport", "last_error", "protocol_version")
_NUMBERS = ("tools", "calls", "errors", "restarts", "since")
_COUNTS_OR_FLAGS = ("prompts", "resources")  # a count, or whether the server has any


def _names(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str)}


def _row(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {"state": "unknown"}
    row: dict[str, Any] = {}
    for key in _TEXT:
        if isinstance(raw.get(key), str) or (key == "last_error" and key in raw and raw[key] is None):
            row[key] = raw[key]
    for key in _NUMBERS:
        if isinstance(raw.get(key), (int, float)) and not isinstance(raw.get(key), bool):
            row[key] = raw[key]
    for key in _COUNTS_OR_FLAGS:
        if isinstance(raw.get(key), (int, float, bool)):
            row[key] = raw[key]
    row.setdefault("state", "unknown")
    info = raw.get("server_info")
    if isinstance(info, dict):
        row["server_info"] = {k: str(info[k]) for k in ("name", "title", "version") if isinstance(info.get(k), str)}
    row["tool_names"] = _names(raw.get("tool_names"))
    row["refused_tools"] = _names(raw.get("refused_tools"))
    return row


def _alive(pid: Any) -> bool | None:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, under another user
    return True


def read_upstream_state(run_dir: Path) -> dict[str, Any]:
    """`{"present", "error", "servers": {name: row}}`, and when present `pid`, `running` (None when unknown),
    `updated`, `registry`, `registry_error`."""
    path = run_dir / STATE_FILE
    out: dict[str, Any] = {"present": False, "error": None, "servers": {}}
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        return out
    except OSError as exc:
        out["error"] = f"{STATE_FILE} cannot be read: {exc.strerror or type(exc).__name__}"
        return out
    out["present"] = True
    if len(data) > _MAX_BYTES:
        out["error"] = f"{STATE_FILE} is larger than {_MAX_BYTES} bytes"
        return out
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        out["error"] = f"{STATE_FILE} is not valid JSON: {exc}"
        return out
    if not isinstance(doc, dict) or not isinstance(doc.get("servers", {}), dict):
        out["error"] = f"{STATE_FILE} is not an object with a 'servers' object"
        return out
    out["servers"] = {str(name): _row(raw) for name, raw in sorted(doc.get("servers", {}).items())}
    out["pid"] = doc.get("pid") if isinstance(doc.get("pid"), int) else None
    out["running"] = _alive(doc.get("pid"))
    out["updated"] = doc.get("updated") if isinstance(doc.get("updated"), (int, float)) else None
    out["registry"] = doc.get("registry") if isinstance(doc.get("registry"), str) else None
    out["registry_error"] = doc.get("registry_error") if isinstance(doc.get("registry_error"), str) else None
    return out
