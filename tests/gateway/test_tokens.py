"""Client tokens: creation, hashed storage, lookup, revocation seen by another connection, the owner token."""

from __future__ import annotations

import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmbasedos.gateway.store_health import StoreCorrupt
from llmbasedos.gateway.tokens import TOKEN_PREFIX, TokenError, TokenStore, connect, hash_token


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
