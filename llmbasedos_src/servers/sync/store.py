"""Job records in SQLite, so a job outlives the process that ran it.

One row per job. Rows are written at each change of state (queued, running, and the end), never per progress
tick: a job that dies with the server keeps the state it had, and the sync server's next start turns any
`queued` or `running` row into `interrupted`.

Each row keeps the id of the client that started the job (`client_id`). Rows written before that column
existed have none: they belong to nobody but the owner.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["JobRecord", "JobStore", "STATES", "FINAL_STATES", "LIVE_STATES"]

STATES = ("queued", "running", "succeeded", "failed", "stopped", "interrupted")
LIVE_STATES = frozenset({"queued", "running"})
FINAL_STATES = frozenset(STATES) - LIVE_STATES

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    flags TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    pid INTEGER,
    exit_code INTEGER,
    error TEXT,
    progress TEXT,
    check_summary TEXT,
    client_id TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs(created_at);
"""
# Added to a store made before jobs had owners; the index comes after, once the column surely exists.
_ADD_OWNER = "ALTER TABLE jobs ADD COLUMN client_id TEXT"
_OWNER_INDEX = "CREATE INDEX IF NOT EXISTS jobs_by_client ON jobs(client_id, created_at)"

_JSON_FIELDS = {"flags", "progress", "check_summary"}


@dataclass
class JobRecord:
    id: str
    mode: str
    source: str  # as the client sees it: a virtual path or remote:path, never a host path
    destination: str
    dry_run: bool
    flags: list[str]
    state: str
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    pid: int | None = None
    exit_code: int | None = None
    error: str | None = None
    progress: dict[str, Any] | None = None
    check_summary: dict[str, Any] | None = field(default=None)
    client_id: str | None = None  # who started it; None for jobs recorded before owners were kept


_COLUMNS = [f.name for f in fields(JobRecord)]


class JobStore:
    """Thread-safe; every call is one short transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; only a power cut may lose the last commits.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "client_id" not in columns:
            self._db.execute(_ADD_OWNER)
        self._db.execute(_OWNER_INDEX)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def _row(rec: JobRecord) -> dict[str, Any]:
        row = asdict(rec)
        row["dry_run"] = int(rec.dry_run)
        for name in _JSON_FIELDS:
            row[name] = None if row[name] is None else json.dumps(row[name])
        return row

    @staticmethod
    def _record(values: tuple[Any, ...]) -> JobRecord:
        row = dict(zip(_COLUMNS, values, strict=True))
        row["dry_run"] = bool(row["dry_run"])
        for name in _JSON_FIELDS:
            row[name] = None if row[name] is None else json.loads(row[name])
        return JobRecord(**row)

    def save(self, rec: JobRecord) -> None:
        row = self._row(rec)
        cols = ", ".join(_COLUMNS)
        marks = ", ".join(f":{c}" for c in _COLUMNS)
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO jobs ({cols}) VALUES ({marks})", row)

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            cur = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", (job_id,))
            values = cur.fetchone()
        return None if values is None else self._record(values)

    def recent(self, *, state: str | None = None, limit: int = 100, client_id: str | None = None) -> list[JobRecord]:
        """Newest first; only the jobs `client_id` started, when given (jobs without an owner never match)."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM jobs"
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("state", state), ("client_id", client_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [self._record(r) for r in rows]

    def live(self) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE state IN ('queued', 'running')").fetchall()
        return [self._record(r) for r in rows]

    def prune(self, keep: int) -> list[str]:
        """Forget finished jobs beyond the newest `keep`; returns their ids so their logs can go too."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE state NOT IN ('queued', 'running') "
                "ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?", (keep,)).fetchall()
            ids = [r[0] for r in rows]
            if ids:
                self._db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in ids])
        return ids
