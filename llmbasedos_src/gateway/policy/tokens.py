"""Clients and their tokens, in SQLite (`<data_dir>/gateway.db`, WAL), shared with the admin commands.

A token is `lbd_` + 43 URL-safe characters (256 random bits). Only its SHA-256 is stored: with that much
entropy a slow hash buys nothing, and a lookup by hash is constant-time with respect to the token's value.
Tokens are shown once, at creation; the owner token is the exception, kept in `<data_dir>/owner.token`
(mode 0600, created exclusively) like Jupyter's, so the appliance's owner can always find it.

The gateway sees creations, changes and revocations made by other processes without a restart: a trigger
bumps a version number on every change to `clients`, and the gateway re-reads it whenever SQLite's
data_version says another connection wrote to the file (`version()`, polled by the policy).

A client may carry an expiry (`expires`, Unix time): past it, its token is refused like a revoked one.
Databases from before expiries existed get the column added when a store opens them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llmbasedos.gateway.policy.store_health import StoreCorrupt, check_usable, corrupt_error

__all__ = [
    "ClientRecord",
    "OWNER_NAME",
    "TOKEN_PREFIX",
    "TokenError",
    "TokenStore",
    "UNCHANGED",
    "connect",
    "hash_token",
    "new_token",
    "write_secret_file",
]

TOKEN_PREFIX = "lbd_"
OWNER_NAME = "owner"
_MAX_TOKEN_LEN = 256
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('clients_version', 0);
CREATE TABLE IF NOT EXISTS clients (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    tier TEXT,              -- NULL: follow the licence's tier
    allow TEXT NOT NULL,    -- JSON list of capability patterns
    is_owner INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    revoked REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS clients_active_name ON clients (name) WHERE revoked IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS clients_one_owner ON clients (is_owner) WHERE is_owner = 1;
CREATE TRIGGER IF NOT EXISTS clients_ins AFTER INSERT ON clients
    BEGIN UPDATE meta SET value = value + 1 WHERE key = 'clients_version'; END;
CREATE TRIGGER IF NOT EXISTS clients_upd AFTER UPDATE ON clients
    BEGIN UPDATE meta SET value = value + 1 WHERE key = 'clients_version'; END;
CREATE TRIGGER IF NOT EXISTS clients_del AFTER DELETE ON clients
    BEGIN UPDATE meta SET value = value + 1 WHERE key = 'clients_version'; END;
"""
# Columns added since the first schema, each with the statement that adds it to an older database.
_MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("expires", "ALTER TABLE clients ADD COLUMN expires REAL"),  # NULL: never expires
)


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()
"""For `TokenStore.update`: leave this field as it is (None means "follow the licence" or "no expiry")."""


class TokenError(ValueError):
    """A bad name, tier, pattern or unknown client in a token operation."""


def connect(path: Path) -> sqlite3.Connection:
    """Open the gateway database (created 0600 in a 0700 directory), WAL, usable from any thread.

    Raises StoreCorrupt (store_health.py) when the file is not a sound SQLite database."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        check_usable(conn, path)
    except sqlite3.DatabaseError as exc:
        conn.close()
        error = corrupt_error(exc, path)
        if error is None:
            raise
        raise error from None
    except StoreCorrupt:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def write_secret_file(path: Path, text: str) -> None:
    """Create `path` with mode 0600 from the start; never replaces an existing file (FileExistsError)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # no-clobber and atomic: readers never see a half-written secret
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@dataclass(frozen=True)
class ClientRecord:
    id: str
    name: str
    tier: str | None  # None: the licence's tier
    allow: tuple[str, ...]
    is_owner: bool
    created: float
    revoked: float | None
    expires: float | None = None  # Unix time; None: never

    @property
    def active(self) -> bool:
        return self.revoked is None

    def expired(self, now: float | None = None) -> bool:
        return self.expires is not None and (time.time() if now is None else now) >= self.expires

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "name": self.name, "tier": self.tier, "allow": list(self.allow),
            "owner": self.is_owner, "created": self.created, "revoked": self.revoked, "expires": self.expires,
        }


_COLUMNS = "id, name, tier, allow, is_owner, created, revoked, expires"


def _record(row: Sequence[object]) -> ClientRecord:
    return ClientRecord(
        id=str(row[0]), name=str(row[1]), tier=row[2] if row[2] is None else str(row[2]),
        allow=tuple(json.loads(str(row[3]))), is_owner=bool(row[4]), created=float(row[5]),  # type: ignore[arg-type]
        revoked=None if row[6] is None else float(row[6]),  # type: ignore[arg-type]
        expires=None if row[7] is None else float(row[7]),  # type: ignore[arg-type]
    )


class TokenStore:
    """Clients and hashed tokens. Thread-safe; lookups are cached until the clients table changes."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        self._conn = connect(db_path)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
            with _transaction(self._conn) as c:
                present = {str(row[1]) for row in c.execute("PRAGMA table_info(clients)")}
                for column, statement in _MIGRATIONS:
                    if column not in present:
                        c.execute(statement)
        self._data_version = -1
        self._clients_version = -1
        self._cache: dict[str, ClientRecord | None] = {}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- lookups (hot path: once per connection or per stateless HTTP request)

    def _refresh(self) -> None:
        data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if data_version == self._data_version:
            return
        self._data_version = data_version
        clients_version = self._conn.execute("SELECT value FROM meta WHERE key='clients_version'").fetchone()[0]
        if clients_version != self._clients_version:
            self._clients_version = clients_version
            self._cache.clear()

    def _changed_here(self) -> None:
        # data_version only counts other connections' commits: this store's own must clear the cache too.
        self._data_version = -1

    def version(self) -> int:
        """A number that changes whenever the clients table does, whoever changed it (cheap to poll)."""
        with self._lock:
            self._refresh()
            return int(self._clients_version)

    def lookup(self, token: str) -> ClientRecord | None:
        """The client holding `token` (revoked ones included, to say so), or None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_LEN:
            return None
        digest = hash_token(token)
        with self._lock:
            self._refresh()
            if digest in self._cache:
                return self._cache[digest]
            row = self._conn.execute(f"SELECT {_COLUMNS} FROM clients WHERE token_hash = ?", (digest,)).fetchone()
            record = _record(row) if row else None
            if len(self._cache) > 10000:  # unknown tokens must not grow memory without bound
                self._cache.clear()
            self._cache[digest] = record
            return record

    def owner(self) -> ClientRecord | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLUMNS} FROM clients WHERE is_owner = 1").fetchone()
        return _record(row) if row else None

    def list(self, include_revoked: bool = True) -> list[ClientRecord]:
        sql = f"SELECT {_COLUMNS} FROM clients"
        if not include_revoked:
            sql += " WHERE revoked IS NULL"
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY created, id").fetchall()
        return [_record(r) for r in rows]

    # -- changes (admin commands)

    def create(self, name: str, tier: str | None = None, allow: Sequence[str] = ("*",),
               expires: float | None = None) -> tuple[ClientRecord, str]:
        """A new client and its token (returned once, never stored)."""
        if not _NAME_RE.match(name):
            raise TokenError(f"invalid client name {name!r}: 1-64 letters, digits, '_', '.', '@' or '-'")
        if name == OWNER_NAME:
            raise TokenError("the name 'owner' is reserved for the owner token")
        token = new_token()
        record = ClientRecord(
            id="c_" + secrets.token_hex(6), name=name, tier=tier.upper() if tier else None,
            allow=tuple(dict.fromkeys(allow)) or ("*",), is_owner=False, created=time.time(), revoked=None,
            expires=expires,
        )
        _check_expiry(expires, record.created)
        with self._lock, _transaction(self._conn) as c:
            active = c.execute("SELECT 1 FROM clients WHERE name = ? AND revoked IS NULL", (name,)).fetchone()
            if active:
                raise TokenError(f"a client named {name!r} already exists (revoke it first)")
            self._insert(c, record, token)
            self._changed_here()
        return record, token

    @staticmethod
    def _insert(c: sqlite3.Connection, record: ClientRecord, token: str) -> None:
        c.execute(
            f"INSERT INTO clients ({_COLUMNS}, token_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.id, record.name, record.tier, json.dumps(list(record.allow)), int(record.is_owner),
             record.created, record.revoked, record.expires, hash_token(token)),
        )

    @staticmethod
    def _active_row(c: sqlite3.Connection, name_or_id: str) -> ClientRecord:
        row = c.execute(f"SELECT {_COLUMNS} FROM clients WHERE id = ?", (name_or_id,)).fetchone()
        if row is None:
            row = c.execute(
                f"SELECT {_COLUMNS} FROM clients WHERE name = ? AND revoked IS NULL", (name_or_id,)
            ).fetchone()
        if row is None:
            raise TokenError(f"no active client with id or name {name_or_id!r}")
        record = _record(row)
        if record.revoked is not None:
            raise TokenError(f"client {record.name} ({record.id}) is already revoked")
        return record

    def revoke(self, name_or_id: str) -> ClientRecord:
        """Revoke the active client with this id or name. The owner token cannot be revoked (rotate it)."""
        with self._lock, _transaction(self._conn) as c:
            record = self._active_row(c, name_or_id)
            if record.is_owner:
                raise TokenError("the owner token cannot be revoked; delete owner.token and restart to rotate it")
            now = time.time()
            c.execute("UPDATE clients SET revoked = ? WHERE id = ?", (now, record.id))
            self._changed_here()
        return replace(record, revoked=now)

    def update(self, name_or_id: str, *, tier: Any = UNCHANGED, allow: Any = UNCHANGED,
               expires: Any = UNCHANGED) -> ClientRecord:
        """Change an active client's tier (None: the licence's), allowlist or expiry (None: never) in place.

        Its token stays the same; the gateway applies the change to its open connections. The owner's rights
        are the licence's and cannot be changed.
        """
        with self._lock, _transaction(self._conn) as c:
            record = self._active_row(c, name_or_id)
            if record.is_owner:
                raise TokenError("the owner's rights follow the licence and cannot be changed")
            changed = record
            if tier is not UNCHANGED:
                changed = replace(changed, tier=tier.upper() if tier else None)
            if allow is not UNCHANGED:
                changed = replace(changed, allow=tuple(dict.fromkeys(allow)) or ("*",))
            if expires is not UNCHANGED:
                _check_expiry(expires, time.time())
                changed = replace(changed, expires=expires)
            if changed == record:
                return record
            c.execute("UPDATE clients SET tier = ?, allow = ?, expires = ? WHERE id = ?",
                      (changed.tier, json.dumps(list(changed.allow)), changed.expires, record.id))
            self._changed_here()
        return changed

    def ensure_owner(self, token_file: Path) -> tuple[ClientRecord, bool]:
        """The owner client, created with its 0600 token file when missing. Returns (owner, created).

        If the database lost its owner but the file survives, the file's token is adopted; if the file is
        gone, a new owner token replaces the old one (only its hash was kept).
        """
        with self._lock, _transaction(self._conn) as c:
            row = c.execute(f"SELECT {_COLUMNS} FROM clients WHERE is_owner = 1").fetchone()
            existing = _record(row) if row else None
            file_token = _read_token(token_file)
            if existing is not None and file_token is not None and self._hash_of(c, existing.id) == hash_token(
                file_token
            ):
                return existing, False
            if existing is not None and file_token is None:
                with contextlib.suppress(FileNotFoundError):
                    token_file.unlink()  # unreadable leftovers; the new token goes in a fresh 0600 file
            token = file_token or new_token()
            if file_token is None:
                write_secret_file(token_file, token + "\n")
            self._changed_here()
            if existing is not None:
                c.execute("UPDATE clients SET token_hash = ? WHERE id = ?", (hash_token(token), existing.id))
                return existing, file_token is None
            # A revoked client can't hold the adopted token's hash: UNIQUE would refuse it.
            c.execute("DELETE FROM clients WHERE token_hash = ?", (hash_token(token),))
            record = ClientRecord(
                id="c_owner", name=OWNER_NAME, tier=None, allow=("*",), is_owner=True,
                created=time.time(), revoked=None,
            )
            self._insert(c, record, token)
            return record, True

    @staticmethod
    def _hash_of(c: sqlite3.Connection, client_id: str) -> str:
        return str(c.execute("SELECT token_hash FROM clients WHERE id = ?", (client_id,)).fetchone()[0])


def _check_expiry(expires: float | None, now: float) -> None:
    if expires is not None and not expires > now:
        raise TokenError("the expiry is in the past: give a time in the future (or revoke the client)")


def _read_token(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, UnicodeDecodeError, IsADirectoryError, PermissionError):
        return None
    return text if text.startswith(TOKEN_PREFIX) and 0 < len(text) <= _MAX_TOKEN_LEN else None
