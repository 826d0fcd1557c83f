"""Executions in SQLite (`<data_dir>/agent/executions.db`), so a run outlives the process that ran it.

A row is written when a run starts, at each step's start and end, and when it ends. The per-step log holds
step ids, kinds, states, attempt counts, times and error messages — never step inputs, which may carry file
contents or prompts. On start, the server turns every `pending` or `running` row into `interrupted`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ExecutionRecord", "ExecutionStore", "STATES", "LIVE_STATES"]

STATES = ("pending", "running", "succeeded", "failed", "stopped", "interrupted")
LIVE_STATES = frozenset({"pending", "running"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    state TEXT NOT NULL,
    client_id TEXT,
    client_name TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    current_step TEXT,
    error TEXT,
    outputs TEXT,
    log TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_by_created ON executions(created_at);
CREATE INDEX IF NOT EXISTS executions_by_state ON executions(state);
"""


@dataclass
class ExecutionRecord:
    id: str
    workflow_id: str
    state: str
    created_at: float
    client_id: str | None = None
    client_name: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    current_step: str | None = None
    error: str | None = None
    outputs: Any = None
    log: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, *, with_log: bool = True) -> dict[str, Any]:
        out = asdict(self)
        if not with_log:
            out.pop("log")
            out.pop("outputs")
        return out


_COLUMNS = ("id", "workflow_id", "state", "created_at", "client_id", "client_name", "started_at", "ended_at",
            "current_step", "error", "outputs", "log")


def _record(row: sqlite3.Row) -> ExecutionRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["outputs"] = json.loads(values["outputs"]) if values["outputs"] is not None else None
    values["log"] = json.loads(values["log"])
    return ExecutionRecord(**values)


class ExecutionStore:
    """Thread-safe; every write is its own transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def save(self, rec: ExecutionRecord) -> None:
        row = (rec.id, rec.workflow_id, rec.state, rec.created_at, rec.client_id, rec.client_name, rec.started_at,
               rec.ended_at, rec.current_step, rec.error,
               None if rec.outputs is None else json.dumps(rec.outputs, default=str), json.dumps(rec.log))
        with self._lock:
            self._conn.execute(f"INSERT OR REPLACE INTO executions ({', '.join(_COLUMNS)}) "
                               f"VALUES ({', '.join('?' * len(_COLUMNS))})", row)

    def get(self, execution_id: str) -> ExecutionRecord | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM executions WHERE id = ?",
                                     (execution_id,)).fetchone()
        return _record(row) if row else None

    def list(self, *, workflow_id: str | None = None, state: str | None = None, client_id: str | None = None,
             limit: int = 50) -> list[ExecutionRecord]:
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("workflow_id", workflow_id), ("state", state), ("client_id", client_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM executions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit)).fetchall()
        return [_record(r) for r in rows]

    def mark_interrupted(self, now: float) -> int:
        """Runs left pending or running by a previous process; returns how many were marked."""
        with self._lock:
            cur = self._conn.execute(
                "UPDATE executions SET state = 'interrupted', ended_at = ?, "
                "error = COALESCE(error, 'The agent server stopped while this run was in flight') "
                "WHERE state IN ('pending', 'running')", (now,))
            return cur.rowcount

    def prune(self, keep: int) -> int:
        """Delete finished executions beyond the newest `keep`; returns how many went."""
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM executions WHERE state NOT IN ('pending', 'running') AND id NOT IN "
                "(SELECT id FROM executions ORDER BY created_at DESC LIMIT ?)", (keep,))
            return cur.rowcount
