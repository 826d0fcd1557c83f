"""The `token`, `licence` and `audit` commands, run as real `llmbasedos` processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from llmbasedos.gateway.policy.gatekeeper import Policy
from llmbasedos.protocol.errors import Unauthorized
from llmbasedos.settings import Settings


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LLMBDO_")}


def run(*args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "llmbasedos.appliance.cli", *args], capture_output=True, text=True,
                          env=_env(), timeout=60)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


@pytest.fixture
def state() -> Path:
    return Path(tempfile.mkdtemp(dir="/tmp"))


def settings_for(state: Path) -> Settings:
    return Settings(state_dir=state, run_dir=state / "run", data_dir=state / "data", log_dir=state / "logs",
                    config_dir=state / "config", virtual_root=state / "user_files")


def test_token_lifecycle_while_the_gateway_runs(state: Path) -> None:
    policy = Policy.load(settings_for(state))  # the running gateway's policy
    try:
        created = run("token", "create", "laptop", "--allow", "mcp.fs.*", "mcp.hello", "--state-dir", str(state))
        token = created.stdout.strip()
        assert token.startswith("lbd_") and "\n" not in token and "only time" in created.stderr
        client = policy.authenticate(token, transport="ws", remote="127.0.0.1")
        assert client.name == "laptop" and client.allow == ("mcp.fs.*", "mcp.hello")

        listing = run("token", "list", "--state-dir", str(state)).stdout
        assert "laptop" in listing and "owner" in listing and "mcp.fs.*" in listing and "lbd_" not in listing
        rows = json.loads(run("token", "list", "--json", "--state-dir", str(state)).stdout)
        assert {r["name"] for r in rows} == {"owner", "laptop"}
        assert all("token" not in r and "hash" not in json.dumps(r) for r in rows)

        run("token", "revoke", "laptop", "--state-dir", str(state))
        with pytest.raises(Unauthorized):
            policy.authenticate(token, transport="ws", remote="127.0.0.1")
        assert "revoked" in run("token", "list", "--state-dir", str(state)).stdout
        assert "laptop" not in run("token", "list", "--no-all", "--state-dir", str(state)).stdout
    finally:
        policy.close()


def test_token_owner_prints_the_owner_token(state: Path) -> None:
    first = run("token", "owner", "--state-dir", str(state))
    token = first.stdout.strip()
    path = state / "data" / "owner.token"
    assert path.read_text().strip() == token and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run("token", "owner", "--state-dir", str(state)).stdout.strip() == token
    policy = Policy.load(settings_for(state))  # the gateway starting later adopts the same token
    try:
        assert policy.authenticate(token, transport="ws", remote="r").is_owner
    finally:
        policy.close()


def test_state_dir_from_the_environment(state: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "llmbasedos.appliance.cli", "token", "owner"], capture_output=True,
                          text=True, env={**_env(), "LLMBDO_STATE_DIR": str(state)}, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == (state / "data" / "owner.token").read_text().strip()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token", "create", "x", "--tier", "GOLD"], "unknown tier 'GOLD'"),
        (["token", "create", "bad name"], "invalid client name"),
        (["token", "create", "x", "--allow", "mcp.*.read"], "invalid capability pattern"),
        (["token", "revoke", "nobody"], "no active client"),
        (["token", "revoke", "owner"], "cannot be revoked"),
        (["token", "create", "x", "--expires", "soon"], "neither a duration"),
        (["token", "create", "x", "--expires", "2001-01-01"], "in the past"),
        (["token", "update", "nobody", "--allow", "mcp.hello"], "no active client"),
        (["token", "update", "owner", "--allow", "mcp.hello"], "cannot be changed"),
        (["token", "update", "owner"], "nothing to change"),
        (["token", "update", "owner", "--expires", "1d", "--no-expiry"], "not both"),
        (["token", "update", "owner", "--allow", "mcp.*.read"], "invalid capability pattern"),
        (["token", "update", "owner", "--tier", "GOLD"], "unknown tier 'GOLD'"),
        (["licence", "issue", "--tier", "PRO", "--user", "a", "--expires", "soon", "--key", "/nonexistent"],
         "--expires must be a date"),
        (["licence", "issue", "--tier", "PRO", "--user", "a", "--expires", "2030-01-01", "--key", "/nonexistent"],
         "cannot read the private key"),
        (["audit", "verify"], "no audit key"),
        (["token"], "a subcommand is required"),
    ],
)
def test_bad_input_gets_a_clear_message(state: Path, args: list[str], message: str) -> None:
    if args[:3] in (["token", "revoke", "owner"], ["token", "update", "owner"]):
        run("token", "owner", "--state-dir", str(state))
    proc = run(*args, "--state-dir", str(state), check=2) if args != ["token"] else run(*args, check=2)
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_expiry_and_update_while_the_gateway_runs(state: Path) -> None:
    policy = Policy.load(settings_for(state))
    try:
        token = run("token", "create", "tablet", "--expires", "30d", "--state-dir", str(state)).stdout.strip()
        [row] = [r for r in json.loads(run("token", "list", "--json", "--state-dir", str(state)).stdout)
                 if r["name"] == "tablet"]
        assert 29 * 86400 < row["expires"] - time.time() <= 30 * 86400
        listing = run("token", "list", "--state-dir", str(state)).stdout
        assert "EXPIRES" in listing and "never" in listing  # the owner's column

        updated = run("token", "update", "tablet", "--allow", "mcp.hello", "admin.read", "--tier", "PRO",
                      "--no-expiry", "--state-dir", str(state)).stdout
        assert "mcp.hello admin.read" in updated and "tier PRO" in updated and "expires: never" in updated
        client = policy.authenticate(token, transport="ws", remote="r")  # the same token, the new rights
        assert client.allow == ("mcp.hello", "admin.read") and client.tier == "PRO"
        run("token", "update", "tablet", "--expires", "1s", "--no-tier", "--state-dir", str(state))

        def expired() -> bool:
            try:
                policy.authenticate(token, transport="ws", remote="r")
            except Unauthorized as exc:
                assert "expired" in str(exc)
                return True
            return False

        deadline = time.monotonic() + 20
        while not expired():
            assert time.monotonic() < deadline, "the token did not expire"
            time.sleep(0.05)
        assert "expired" in run("token", "list", "--state-dir", str(state)).stdout
        assert "tablet" in run("token", "list", "--no-all", "--state-dir", str(state)).stdout  # not revoked
    finally:
        policy.close()


def test_duplicate_client(state: Path) -> None:
    run("token", "create", "x", "--state-dir", str(state))
    assert "already exists" in run("token", "create", "x", "--state-dir", str(state), check=2).stderr


def test_licence_keygen_issue_inspect(state: Path) -> None:
    keys = state / "keys"
    run("licence", "keygen", "--out", str(keys))
    private, public = keys / "licence_priv.pem", keys / "licence_pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert "already exists" in run("licence", "keygen", "--out", str(keys), check=2).stderr

    lic = state / "config" / "lic.key"
    lic.parent.mkdir(parents=True)
    run("licence", "issue", "--tier", "pro", "--user", "acme", "--expires", "2099-12-31", "--key", str(private),
        "--out", str(lic))
    shown = run("licence", "inspect", "--pubkey", str(public), "--state-dir", str(state)).stdout
    assert "tier:      PRO" in shown and "acme" in shown and "2099-12-31" in shown and "valid:     yes" in shown
    assert "signature: checked" in shown

    # Installed as the configured public key, it is used without --pubkey; an edit is caught.
    (state / "config" / "licence_pub.pem").write_bytes(public.read_bytes())
    lic.write_text(lic.read_text().replace("acme", "someone else"))
    proc = run("licence", "inspect", "--json", "--state-dir", str(state), check=1)
    status = json.loads(proc.stdout)
    assert status["valid"] is False and status["tier"] == "FREE" and "signature" in status["reason"]

    printed = run("licence", "issue", "--tier", "ELITE", "--user", "b", "--expires", "2001-01-01", "--key",
                  str(private)).stdout
    other = state / "other.key"
    other.write_text(printed)
    expired = run("licence", "inspect", str(other), "--pubkey", str(public), check=1).stdout
    assert "expired on 2001-01-01" in expired


def test_audit_verify_reports_the_first_broken_entry(state: Path) -> None:
    policy = Policy.load(settings_for(state))
    client = policy.local_identity()
    for _ in range(5):
        policy.admit(client, "mcp.hello")
        policy.record_call(client, "mcp.hello", "ok", 0.3)
    ok = run("audit", "verify", "--state-dir", str(state))  # while the gateway runs
    assert "OK" in ok.stdout
    policy.close()
    log = state / "logs" / "audit.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    assert "OK: 6 entries" in run("audit", "verify", "--state-dir", str(state)).stdout

    log.write_text("".join([*lines[:3], lines[3].replace("0.3", "0.4"), *lines[4:]]))
    broken = run("audit", "verify", "--state-dir", str(state), check=1).stdout
    assert "BROKEN at line 4" in broken and "MAC mismatch" in broken

    log.write_text("".join(lines[:4]))
    result = json.loads(run("audit", "verify", "--json", "--state-dir", str(state), check=1).stdout)
    assert result["ok"] is False and result["line"] == 5 and "tail was cut" in result["reason"]


def test_audit_verify_walks_every_rotated_file(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMBDO_AUDIT_MAX_BYTES", "4096")
    policy = Policy.load(settings_for(state))
    client = policy.local_identity()
    for _ in range(200):
        policy.admit(client, "mcp.hello")
        policy.record_call(client, "mcp.hello", "ok", 0.3)
    policy.close()
    rotated = sorted((state / "logs").glob("audit.jsonl.*"))
    assert len(rotated) == 10  # LLMBDO_AUDIT_KEEP's default: the oldest were dropped
    assert rotated[0].name != "audit.jsonl.000000000001"
    ok = run("audit", "verify", "--state-dir", str(state)).stdout
    assert f"in {len(rotated) + 1} files, chain intact" in ok

    lines = rotated[0].read_text().splitlines(keepends=True)
    rotated[0].write_text("".join([*lines[:2], lines[2].replace("0.3", "0.4"), *lines[3:]]))
    broken = run("audit", "verify", "--state-dir", str(state), check=1).stdout
    assert f"BROKEN at line 3 of {rotated[0].name}" in broken and "MAC mismatch" in broken
    result = json.loads(run("audit", "verify", "--json", "--state-dir", str(state), check=1).stdout)
    assert result["file"] == str(rotated[0]) and result["line"] == 3


def test_a_corrupt_database_is_one_message_not_a_traceback(state: Path) -> None:
    Policy.load(settings_for(state)).close()
    db = state / "data" / "gateway.db"
    db.write_bytes(b"\x00garbage" * 1000)
    for args in (["token", "list"], ["token", "create", "laptop"], ["token", "revoke", "laptop"],
                 ["token", "owner"], ["audit", "verify"]):
        done = run(*args, "--state-dir", str(state), check=2)
        assert "Traceback" not in done.stderr and done.stdout == ""
        assert done.stderr.startswith(f"llmbasedos: the gateway database {db} is corrupt")
        assert "move the file aside" in done.stderr
