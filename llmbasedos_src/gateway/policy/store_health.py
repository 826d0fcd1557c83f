"""A gateway database that SQLite cannot use: found once when it is opened, and said in one message that names
the file and how to recover, to the gateway's log, `llmbasedos status` and the admin commands alike.

A restart cannot mend such a file, so the gateway stops with `faults.EXIT_NO_RETRY` instead of being
restarted without end. Recovery: stop the appliance, move the file aside, start again. The owner token is
adopted again from owner.token; every other client's token must be created again, and today's counters and
the audit checkpoint start afresh (the audit log itself and its key are untouched).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["StoreCorrupt", "check_usable", "corrupt_error"]

_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


class StoreCorrupt(Exception):
    """The database at `path` is not a usable SQLite file; str() is the whole message for a person."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(
            f"the gateway database {path} is corrupt ({detail}). Stop the appliance (`llmbasedos down`), move "
            f"the file aside (mv {path} {path}.corrupt, with its -wal and -shm files if any) and start again: "
            "the owner token is kept (owner.token), every other client token must be created again "
            "(`llmbasedos token create`), and today's counters start afresh"
        )


def corrupt_error(exc: sqlite3.DatabaseError, path: Path) -> StoreCorrupt | None:
    """StoreCorrupt when `exc` says the file itself is damaged; None for anything else (locked, unreadable)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _CORRUPT_CODES:
        return StoreCorrupt(path, str(exc))
    return None


def check_usable(conn: sqlite3.Connection, path: Path) -> None:
    """Raise StoreCorrupt unless SQLite finds the file sound: its header, every page, every index."""
    try:
        rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.DatabaseError as exc:
        error = corrupt_error(exc, path)
        if error is None:
            raise
        raise error from None
    if rows != [("ok",)]:
        raise StoreCorrupt(path, str(rows[0][0]) if rows else "integrity check gave no answer")
