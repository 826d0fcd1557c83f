"""Client tokens: creation, hashed storage, lookup, revocation seen by another connection, the owner token."""

from __future__ import annotations

import sqlite3
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmbasedos.gateway.policy.store_health import StoreCorrupt
from llmbasedos.gateway.policy.tokens import TOKEN_PREFIX, TokenError, TokenStore, connect, hash_token


@pytest.fixture
def data_dir() -> Path:
    return Path(tempfile.mkdtemp(dir="/tmp"))


@pytest.fixture
def store(data_dir: Path) -> Iterator[TokenStore]:
    s = TokenStore(data_dir / "gateway.db")
    yield s
    s.close()


def db_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.iterdir() if p.name.startswith("gateway.db"))


def test_create_and_lookup(store: TokenStore) -> None:
    record, token = store.create("laptop", "PRO", ["mcp.fs.*", "mcp.hello"])
    assert token.startswith(TOKEN_PREFIX) and len(token) >= 40
    found = store.lookup(token)
    assert found == record
    assert (found.name, found.tier, found.allow, found.is_owner, found.active) == (
        "laptop", "PRO", ("mcp.fs.*", "mcp.hello"), False, True)
    assert store.lookup(token + "x") is None
    assert store.lookup("lbd_" + "A" * 43) is None
    assert store.lookup("not-a-token") is None
    assert store.lookup(TOKEN_PREFIX + "x" * 10_000) is None


def test_tokens_are_unique_and_only_their_hash_is_stored(store: TokenStore, data_dir: Path) -> None:
    tokens = [store.create(f"c{i}")[1] for i in range(20)]
    assert len(set(tokens)) == 20
    content = db_bytes(data_dir)
    for token in tokens:
        assert token.encode() not in content
        assert token[len(TOKEN_PREFIX):].encode() not in content
    assert hash_token(tokens[0]).encode() in content


def test_default_tier_follows_the_licence_and_default_allow_is_everything(store: TokenStore) -> None:
    record, _ = store.create("phone")
    assert record.tier is None and record.allow == ("*",)


def test_names(store: TokenStore) -> None:
    store.create("dup")
    with pytest.raises(TokenError, match="already exists"):
        store.create("dup")
    for bad in ("", "has space", "x" * 65, "../etc", "owner"):
        with pytest.raises(TokenError):
            store.create(bad)


def test_revoke_by_name_and_id(store: TokenStore) -> None:
    a, token_a = store.create("a")
    b, token_b = store.create("b")
    assert store.revoke("a").revoked is not None
    assert store.revoke(b.id).name == "b"
    for token in (token_a, token_b):
        found = store.lookup(token)
        assert found is not None and found.revoked is not None
    with pytest.raises(TokenError, match="already revoked"):
        store.revoke(a.id)
    with pytest.raises(TokenError, match="no active client"):
        store.revoke("a")
    again, _ = store.create("a")  # a revoked name can be reused
    assert again.id != a.id
    assert [r.name for r in store.list(include_revoked=False)] == ["a"]
    assert len(store.list()) == 3


def test_another_connection_sees_changes_at_once(store: TokenStore, data_dir: Path) -> None:
    record, token = store.create("shared")
    assert store.lookup(token) == record  # now cached
    other = TokenStore(data_dir / "gateway.db")  # what the admin command opens
    try:
        other.revoke("shared")
        created, new_token = other.create("later")
    finally:
        other.close()
    found = store.lookup(token)
    assert found is not None and found.revoked is not None
    assert store.lookup(new_token) == created


def test_owner_token_file(store: TokenStore, data_dir: Path) -> None:
    path = data_dir / "owner.token"
    owner, created = store.ensure_owner(path)
    assert created and owner.is_owner and owner.tier is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert store.lookup(token) == owner
    assert store.ensure_owner(path) == (owner, False)
    assert path.read_text().strip() == token
    assert token.encode() not in db_bytes(data_dir)
    with pytest.raises(TokenError, match="cannot be revoked"):
        store.revoke(owner.id)
    assert not [p for p in data_dir.iterdir() if p.name.endswith(".tmp")]


def test_owner_token_rotates_when_its_file_is_lost(store: TokenStore, data_dir: Path) -> None:
    path = data_dir / "owner.token"
    store.ensure_owner(path)
    old = path.read_text().strip()
    path.unlink()
    owner, created = store.ensure_owner(path)
    new = path.read_text().strip()
    assert created and new != old
    assert store.lookup(old) is None and store.lookup(new) == owner
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_owner_file_is_adopted_by_a_new_database(store: TokenStore, data_dir: Path) -> None:
    path = data_dir / "owner.token"
    store.ensure_owner(path)
    token = path.read_text().strip()
    fresh = TokenStore(data_dir / "other.db")
    try:
        owner, created = fresh.ensure_owner(path)
        assert created and fresh.lookup(token) == owner
    finally:
        fresh.close()


# -- expiry, in-place changes, the schema of older databases ------------------------------------------------

# The clients table as the first gateway.db files have it: no expiry column.
_FIRST_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('clients_version', 0);
CREATE TABLE clients (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, tier TEXT, allow TEXT NOT NULL,
    is_owner INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, revoked REAL
);
"""


def test_an_older_database_keeps_its_clients_and_gains_expiries(data_dir: Path) -> None:
    path = data_dir / "gateway.db"
    old = sqlite3.connect(path)
    old.executescript(_FIRST_SCHEMA)
    token = TOKEN_PREFIX + "x" * 43
    old.execute("INSERT INTO clients VALUES ('c_1', 'laptop', ?, NULL, '[\"mcp.fs.*\"]', 0, 1.0, NULL)",
                (hash_token(token),))
    old.commit()
    old.close()
    store = TokenStore(path)
    try:
        record = store.lookup(token)
        assert record is not None and record.name == "laptop" and record.expires is None and record.active
        created, new = store.create("phone", expires=time.time() + 3600)
        assert store.lookup(new) == created and created.expires is not None
    finally:
        store.close()
    again = TokenStore(path)  # opening a migrated database again changes nothing
    try:
        assert {r.name for r in again.list()} == {"laptop", "phone"}
    finally:
        again.close()


def test_update_changes_rights_in_place(store: TokenStore, data_dir: Path) -> None:
    record, token = store.create("tablet", tier="pro", allow=("mcp.fs.*",))
    version = store.version()
    other = TokenStore(data_dir / "gateway.db")  # what `llmbasedos token update` opens
    try:
        soon = time.time() + 60
        changed = other.update("tablet", allow=("mcp.hello", "admin.read"), tier=None, expires=soon)
        assert (changed.allow, changed.tier, changed.expires, changed.id) == (("mcp.hello", "admin.read"), None,
                                                                              soon, record.id)
        assert other.update(record.id, tier="elite").tier == "ELITE"  # by id too; the rest stays
    finally:
        other.close()
    assert store.version() != version  # the gateway's store sees another process's change
    found = store.lookup(token)  # the same token, the new rights
    assert found is not None and found.allow == ("mcp.hello", "admin.read") and found.tier == "ELITE"
    assert found.expires == soon
    assert store.update("tablet", expires=None).expires is None
    version = store.version()
    store.update("tablet", allow=("mcp.fs.read",))
    assert store.version() != version  # and its own changes


def test_update_refuses_what_it_must_not_change(store: TokenStore, data_dir: Path) -> None:
    store.ensure_owner(data_dir / "owner.token")
    with pytest.raises(TokenError, match="cannot be changed"):
        store.update("owner", allow=("mcp.hello",))
    with pytest.raises(TokenError, match="no active client"):
        store.update("nobody", allow=("mcp.hello",))
    store.create("gone")
    store.revoke("gone")
    with pytest.raises(TokenError, match="no active client"):
        store.update("gone", allow=("*",))
    store.create("late")
    with pytest.raises(TokenError, match="in the past"):
        store.update("late", expires=time.time() - 1)
    with pytest.raises(TokenError, match="in the past"):
        store.create("later", expires=time.time() - 1)
    assert {r.name for r in store.list(include_revoked=False)} == {"owner", "late"}


def test_an_expired_token_is_reported_as_such(store: TokenStore) -> None:
    record, token = store.create("brief", expires=time.time() + 100)
    found = store.lookup(token)
    assert found is not None and not found.expired() and found.expired(time.time() + 101)
    assert record.to_dict()["expires"] == record.expires


def test_a_file_that_is_not_a_database_is_reported_as_corrupt(data_dir: Path) -> None:
    path = data_dir / "gateway.db"
    path.write_bytes(b"this is not SQLite at all\n" * 400)
    with pytest.raises(StoreCorrupt) as caught:
        TokenStore(path)
    message = str(caught.value)
    assert caught.value.path == path and str(path) in message
    assert "move the file aside" in message and "token create" in message


def test_damaged_pages_behind_a_sound_header_are_reported_as_corrupt(data_dir: Path) -> None:
    path = data_dir / "gateway.db"
    store = TokenStore(path)
    for i in range(300):
        store.create(f"client-{i}")
    store.close()
    size = path.stat().st_size
    assert size > 4 * 4096 and not (data_dir / "gateway.db-wal").exists()
    with open(path, "r+b") as fh:  # keep page 1 (header and schema), overwrite the table pages
        fh.seek(2 * 4096)
        fh.write(b"\xa5" * (size - 2 * 4096))
    with pytest.raises(StoreCorrupt, match=r"gateway\.db is corrupt"):
        connect(path)
    with pytest.raises(StoreCorrupt):
        TokenStore(path)
