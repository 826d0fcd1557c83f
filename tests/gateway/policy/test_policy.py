"""The policy the gateway applies: authentication, rights, limits, LLM quotas, licence status, audit."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmbasedos.gateway.policy.audit import load_key, read_checkpoint, verify
from llmbasedos.gateway.policy.gatekeeper import ClientIdentity, Policy
from llmbasedos.gateway.policy.licence import generate_keypair, issue, load_private_key
from llmbasedos.gateway.policy.tiers import TiersError
from llmbasedos.gateway.policy.tokens import TokenStore
from llmbasedos.protocol.errors import Forbidden, QuotaExceeded, RateLimited, Unauthorized
from llmbasedos.settings import Settings

SMALL_TIERS = """
FREE:
  rate_limit_requests: 40
  rate_limit_window_seconds: 3600
  requests_per_day: 1000
  max_tokens_per_day: 100
PRO:
  rate_limit_requests: 1000
  rate_limit_window_seconds: 3600
  requests_per_day: 60
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLMBDO_LICENCE_FILE", "LLMBDO_TIERS_FILE", "LLMBDO_LICENCE_PUBKEY", "LLMBDO_ALLOWED_ORIGINS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def settings() -> Settings:
    root = Path(tempfile.mkdtemp(dir="/tmp"))
    (root / "config").mkdir()
    return Settings(state_dir=root, run_dir=root / "run", data_dir=root / "data", log_dir=root / "logs",
                    config_dir=root / "config", virtual_root=root / "user_files")


def licence(settings: Settings, text: str) -> None:
    (settings.config_dir / "lic.key").write_text(text)


def tiers(settings: Settings, text: str = SMALL_TIERS) -> None:
    (settings.config_dir / "licence_tiers.yaml").write_text(text)


@pytest.fixture
def policy(settings: Settings) -> Iterator[Policy]:
    p = Policy.load(settings)
    yield p
    p.close()


def owner_token(settings: Settings) -> str:
    return (settings.data_dir / "owner.token").read_text().strip()


def new_client(settings: Settings, name: str, tier: str | None = None, allow: tuple[str, ...] = ("*",)) -> str:
    store = TokenStore(settings.data_dir / "gateway.db")
    try:
        return store.create(name, tier, allow)[1]
    finally:
        store.close()


def audit_entries(settings: Settings) -> list[dict]:
    return [json.loads(line) for line in (settings.log_dir / "audit.jsonl").read_text().splitlines()]


def test_first_start_creates_owner_token_and_keys(settings: Settings, policy: Policy) -> None:
    assert policy.owner_created
    for name in ("owner.token", "audit.key", "gateway.db"):
        assert stat.S_IMODE((settings.data_dir / name).stat().st_mode) == 0o600
    owner = policy.authenticate(owner_token(settings), transport="ws", remote="127.0.0.1")
    assert owner.is_owner and owner.tier == "FREE" and owner == policy.local_identity()
    policy.close()
    again = Policy.load(settings)
    try:
        assert not again.owner_created
        assert again.authenticate(owner_token(settings), transport="ws", remote="127.0.0.1") == owner
    finally:
        again.close()


@pytest.mark.parametrize("token", [None, "", "lbd_wrong", "Bearer x"])
def test_bad_tokens_are_refused(policy: Policy, token: str | None) -> None:
    with pytest.raises(Unauthorized):
        policy.authenticate(token, transport="http", remote="127.0.0.1")


def test_revocation_is_seen_without_restart(settings: Settings, policy: Policy) -> None:
    token = new_client(settings, "laptop")
    assert policy.authenticate(token, transport="ws", remote="127.0.0.1").name == "laptop"
    store = TokenStore(settings.data_dir / "gateway.db")
    store.revoke("laptop")
    store.close()
    with pytest.raises(Unauthorized):
        policy.authenticate(token, transport="ws", remote="127.0.0.1")
    policy.flush()
    denied = [e for e in audit_entries(settings) if e["event"] == "auth" and e["outcome"] == "denied"]
    assert denied[-1]["reason"] == "revoked token" and denied[-1]["name"] == "laptop"


def test_rights_are_allowlist_within_tier_within_licence(settings: Settings) -> None:
    p = Policy.load(settings)  # no licence: the appliance is FREE, which does not send mail
    try:
        wide = p.authenticate(new_client(settings, "wide", "ELITE", ("mcp.fs.*", "mcp.mail.send")),
                              transport="ws", remote="r")
        assert p.is_allowed(wide, "mcp.fs.write")  # ELITE and FREE allow it, and so does the allowlist
        assert not p.is_allowed(wide, "mcp.mail.send")  # ELITE would, but the licence is FREE
        assert not p.is_allowed(wide, "mcp.mail.list")  # outside the client's allowlist
        free = p.authenticate(new_client(settings, "free", "FREE"), transport="ws", remote="r")
        assert p.is_allowed(free, "mcp.fs.write") and not p.is_allowed(free, "mcp.mail.send")
        owner = p.local_identity()
        assert owner.tier == "FREE" and p.is_allowed(owner, "mcp.mail.list")
        assert not p.is_allowed(owner, "mcp.mail.send")
        with pytest.raises(Forbidden) as info:
            p.admit(wide, "mcp.mail.list")
        assert info.value.data == {"method": "mcp.mail.list", "tier": "ELITE"}
    finally:
        p.close()
    entry = [e for e in audit_entries(settings) if e["event"] == "authz"][-1]
    assert (entry["outcome"], entry["method"], entry["name"]) == ("denied", "mcp.mail.list", "wide")


def test_invalid_licence_falls_back_to_free_and_says_why(settings: Settings) -> None:
    licence(settings, "ELITE:acme:2001-01-01")
    p = Policy.load(settings)
    try:
        owner = p.local_identity()
        status = p.licence_status(owner)
        assert (status["tier"], status["valid"], status["licence_tier"]) == ("FREE", False, "ELITE")
        assert status["reason"] == "the licence expired on 2001-01-01" and status["expires"] == "2001-01-01"
        assert not p.is_allowed(owner, "mcp.mail.send")
    finally:
        p.close()


def test_signed_licence_with_configured_key(settings: Settings) -> None:
    private, public = generate_keypair()
    key_file = settings.state_dir / "priv.pem"
    key_file.write_bytes(private)
    (settings.config_dir / "licence_pub.pem").write_bytes(public)
    licence(settings, issue(load_private_key(key_file), "ELITE", "acme", dt.date(2099, 1, 1)))
    p = Policy.load(settings)
    assert p.licence_status(p.local_identity())["signature_checked"] and p.local_identity().tier == "ELITE"
    p.close()
    licence(settings, "ELITE:acme:2099-01-01")  # unsigned: refused now that a key is configured
    p = Policy.load(settings)
    assert p.local_identity().tier == "FREE"
    assert "not signed" in p.licence_status(p.local_identity())["reason"]
    p.close()


def test_invalid_tiers_file_stops_the_load(settings: Settings) -> None:
    tiers(settings, "PRO:\n  rate_limit_requests: -5\n")
    with pytest.raises(TiersError, match="line 2: tier PRO: field rate_limit_requests"):
        Policy.load(settings)


async def test_rate_limit_exact_under_concurrent_admits(settings: Settings) -> None:
    tiers(settings)
    p = Policy.load(settings)
    client = p.authenticate(owner_token(settings), transport="ws", remote="r")
    start = asyncio.Event()

    async def call() -> str:
        await start.wait()
        try:
            p.admit(client, "mcp.fs.read")
        except RateLimited as exc:
            assert exc.data["retry_after"] > 0
            return "limited"
        await asyncio.sleep(0)
        p.record_call(client, "mcp.fs.read", "ok", 0.1)
        return "ok"

    tasks = [asyncio.create_task(call()) for _ in range(250)]
    start.set()
    results = await asyncio.gather(*tasks)
    assert results.count("ok") == 40
    assert p.licence_status(client)["remaining"]["requests_in_window"] == 0
    p.close()
    entries = audit_entries(settings)
    assert sum(1 for e in entries if e["event"] == "call") == 40
    assert sum(1 for e in entries if e["event"] == "limit" and e["outcome"] == "rate_limited") == 210


def test_quota_exact_under_threads_and_kept_across_restart(settings: Settings) -> None:
    tiers(settings)
    licence(settings, "PRO:acme:2099-12-31")
    p = Policy.load(settings)
    client = p.local_identity()
    admitted: list[int] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        n = 0
        for _ in range(20):
            try:
                p.admit(client, "mcp.fs.read")
                n += 1
            except QuotaExceeded as exc:
                assert 0 < exc.data["retry_after"] <= 86400
        admitted.append(n)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 60
    p.close()
    again = Policy.load(settings)
    try:
        with pytest.raises(QuotaExceeded):
            again.admit(again.local_identity(), "mcp.hello")
        assert again.usage()[client.client_id] == {
            "name": "owner", "requests_today": 60, "llm_tokens_today": 0, "requests_in_window": 60}
    finally:
        again.close()


def test_counters_reach_the_database_without_close(settings: Settings, policy: Policy) -> None:
    client = policy.local_identity()
    for _ in range(3):
        policy.admit(client, "mcp.hello")
    conn = sqlite3.connect(settings.data_dir / "gateway.db")
    try:
        deadline = time.monotonic() + 10
        while True:
            row = conn.execute("SELECT requests FROM usage WHERE client_id = ?", (client.client_id,)).fetchone()
            if row and row[0] == 3:
                break
            assert time.monotonic() < deadline, "the counters were never flushed"
            time.sleep(0.05)
    finally:
        conn.close()


def test_llm_limits(settings: Settings, policy: Policy) -> None:
    client = policy.authenticate(new_client(settings, "chat"), transport="ws", remote="r")
    policy.llm_allowed(client, "local", 512)
    for alias, max_tokens, message in (("gpt-4o", 10, "not allowed"), ("local", 5000, "exceeds the limit")):
        with pytest.raises(Forbidden, match=message):
            policy.llm_allowed(client, alias, max_tokens)
    policy.record_llm_tokens(client, 50_000)
    with pytest.raises(QuotaExceeded) as info:
        policy.llm_allowed(client, "local", 10)
    assert info.value.data["retry_after"] > 0
    status = policy.licence_status(client)
    assert status["remaining"]["llm_tokens_today"] == 0 and status["limits"]["allowed_llm_models"] == ["local"]


def test_no_llm_access(settings: Settings) -> None:
    tiers(settings, "FREE:\n  llm_access: false\n")
    p = Policy.load(settings)
    try:
        with pytest.raises(Forbidden, match="LLM access is not included"):
            p.llm_allowed(p.local_identity(), "local", None)
        assert not p.is_allowed(p.local_identity(), "mcp.llm.chat")
        assert p.is_allowed(p.local_identity(), "mcp.fs.read")
    finally:
        p.close()


def test_licence_status_reports_limits_and_what_remains(settings: Settings) -> None:
    tiers(settings)
    p = Policy.load(settings)
    try:
        client = p.local_identity()
        p.admit(client, "mcp.hello")
        p.record_llm_tokens(client, 30)
        status = p.licence_status(client)
        assert status["tier"] == "FREE" and status["client"]["owner"]
        assert status["limits"]["rate_limit_requests"] == 40 and status["limits"]["max_tokens_per_day"] == 100
        assert status["remaining"] == {"requests_in_window": 39, "requests_today": 999, "llm_tokens_today": 70,
                                       "requests_used_today": 1, "llm_tokens_used_today": 30}
    finally:
        p.close()


def test_client_tier_limits_are_capped_by_the_licence(settings: Settings) -> None:
    tiers(settings)
    p = Policy.load(settings)  # no licence: FREE
    try:
        pro = p.authenticate(new_client(settings, "pro", "PRO"), transport="ws", remote="r")
        limits = p.licence_status(pro)["limits"]
        assert (limits["rate_limit_requests"], limits["requests_per_day"]) == (40, 60)
        assert not p.is_allowed(pro, "mcp.mail.send")
    finally:
        p.close()


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        ("http://localhost:3000", True),
        ("https://127.0.0.1", True),
        ("http://[::1]:8000", True),
        ("HTTP://LOCALHOST:8000", True),
        ("http://localhost.evil.com", False),
        ("https://evil.example", False),
        ("null", False),
        ("file://", False),
        ("http://127.0.0.1:notaport", False),
    ],
)
def test_default_origins(policy: Policy, origin: str | None, allowed: bool) -> None:
    assert policy.check_origin(origin) is allowed


def test_configured_origins_replace_the_default(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMBDO_ALLOWED_ORIGINS", "https://app.example:443, http://tool.local:9000")
    p = Policy.load(settings)
    try:
        assert p.check_origin("https://app.example") and p.check_origin("http://tool.local:9000")
        assert not p.check_origin("http://localhost:3000") and not p.check_origin("http://tool.local")
        assert p.check_origin(None)
    finally:
        p.close()


def test_audit_chain_is_valid_and_holds_no_secret(settings: Settings) -> None:
    p = Policy.load(settings)
    token = new_client(settings, "laptop", allow=("mcp.fs.read",))
    client = p.authenticate(token, transport="ws", remote="127.0.0.1")
    p.admit(client, "mcp.fs.read")
    p.record_call(client, "mcp.fs.read", "ok", 2.0)
    with pytest.raises(Forbidden):
        p.admit(client, "mcp.fs.delete")
    with pytest.raises(Unauthorized):
        p.authenticate(token[:-1] + "x", transport="ws", remote="127.0.0.1")
    p.record_llm_tokens(client, 12)
    p.close()
    log = (settings.log_dir / "audit.jsonl").read_text()
    audit_key = (settings.data_dir / "audit.key").read_text().strip()
    for secret in (token, token[:-1] + "x", owner_token(settings), audit_key):
        assert secret not in log
    assert "token_hash" not in log and "lbd_" not in log
    events = [(e["event"], e.get("outcome")) for e in audit_entries(settings)]
    assert events == [("start", None), ("auth", "allowed"), ("call", "ok"), ("authz", "denied"),
                      ("auth", "denied"), ("llm", "used")]
    key = load_key(settings.data_dir / "audit.key")
    assert verify(settings.log_dir / "audit.jsonl", key, read_checkpoint(settings.data_dir / "gateway.db")).ok


def test_identity_is_hashable_and_frozen() -> None:
    ident = ClientIdentity("c_1", "x", "FREE", ("*",), False)
    assert {ident: 1}[ClientIdentity("c_1", "x", "FREE", ("*",), False)] == 1
    with pytest.raises(AttributeError):
        ident.name = "y"  # type: ignore[misc]


def test_a_new_licence_is_picked_up_without_restart(settings: Settings, policy: Policy) -> None:
    owner = policy.local_identity()
    assert not policy.is_allowed(owner, "mcp.mail.send")
    licence(settings, "PRO:acme:2099-12-31")
    deadline = time.monotonic() + 30
    while not policy.is_allowed(owner, "mcp.mail.send"):
        assert time.monotonic() < deadline, "the new licence was never read"
        time.sleep(0.05)
    assert policy.licence_status(owner)["tier"] == "PRO"
    assert policy.reload_licence() is False  # nothing changed since
    (settings.config_dir / "lic.key").unlink()
    policy.reload_licence()  # done now rather than waiting for the background check (either may do it)
    assert not policy.is_allowed(owner, "mcp.mail.send")
    policy.flush()
    changes = [e for e in audit_entries(settings) if e["event"] == "licence"]
    assert [c["tier"] for c in changes] == ["PRO", "FREE"]
