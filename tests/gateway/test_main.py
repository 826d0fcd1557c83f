"""`python -m llmbasedos.gateway`: settings that must stop it with a clear message, and the pure config."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmbasedos.faults import EXIT_NO_RETRY, read_faults
from llmbasedos.gateway.config import ConfigError, GatewayConfig
from llmbasedos.gateway.policy.tokens import TokenStore
from tests.gateway.harness import REPO, Env


def _run(env: Env, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmbasedos.gateway"], env={**env.env, **extra}, cwd=str(REPO),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("extra", "needle"), [
    ({"LLMBDO_GATEWAY_HOST": "0.0.0.0"}, "LLMBDO_GATEWAY_ALLOW_REMOTE"),
    ({"LLMBDO_GATEWAY_PORT": "eighty"}, "LLMBDO_GATEWAY_PORT"),
    ({"LLMBDO_CALL_TIMEOUT": "-1"}, "LLMBDO_CALL_TIMEOUT"),
    ({"LLMBDO_MCP_SESSIONS_PER_CLIENT": "0"}, "LLMBDO_MCP_SESSIONS_PER_CLIENT"),
    ({"LLMBDO_AUDIT_MAX_BYTES": "lots"}, "LLMBDO_AUDIT_MAX_BYTES"),
    ({"LLMBDO_AUDIT_KEEP": "-2"}, "LLMBDO_AUDIT_KEEP"),
])
def test_bad_settings_stop_the_gateway_with_a_message(env: Env, extra: dict[str, str], needle: str) -> None:
    done = _run(env, **extra)
    assert done.returncode == 2
    assert needle in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_tiers_file_stops_the_gateway(env: Env) -> None:
    env.set_tiers("FREE:\n  rate_limit_requests: lots\n")
    done = _run(env)
    assert done.returncode == 2
    assert "licence_tiers.yaml" in done.stderr and "Traceback" not in done.stderr
    assert not (env.run_dir / "gateway.json").exists()


def test_config_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("LLMBDO_GATEWAY_HOST", "LLMBDO_GATEWAY_PORT", "LLMBDO_GATEWAY_ALLOW_REMOTE", "LLMBDO_CALL_TIMEOUT",
                "LLMBDO_GATEWAY_SOCKET"):
        monkeypatch.delenv(key, raising=False)
    cfg = GatewayConfig.from_env()
    assert (cfg.host, cfg.port, cfg.allow_remote, cfg.call_timeout) == ("127.0.0.1", 8000, False, 120.0)
    monkeypatch.setenv("LLMBDO_GATEWAY_HOST", "192.168.1.5")
    with pytest.raises(ConfigError, match="ALLOW_REMOTE"):
        GatewayConfig.from_env()
    monkeypatch.setenv("LLMBDO_GATEWAY_ALLOW_REMOTE", "1")
    assert GatewayConfig.from_env().host == "192.168.1.5"
    monkeypatch.setenv("LLMBDO_GATEWAY_PORT", "70000")
    with pytest.raises(ConfigError, match="between 0 and 65535"):
        GatewayConfig.from_env()


def test_a_corrupt_database_stops_the_gateway_once_with_how_to_recover(env: Env) -> None:
    gw = env.start_gateway()
    owner = gw.token
    laptop = gw.create_token("laptop")
    gw.stop()
    db = env.state / "data" / "gateway.db"
    db.write_bytes(b"garbage " * 2048)

    done = _run(env)
    assert done.returncode == EXIT_NO_RETRY  # not 1 or 2: supervisord must not try again
    assert "Traceback" not in done.stderr and done.stderr.count("refusing to start") == 1
    assert f"{db} is corrupt" in done.stderr and f"mv {db} {db}.corrupt" in done.stderr
    assert not (env.run_dir / "gateway.json").exists()
    assert read_faults(env.run_dir)["gateway"]["message"] in done.stderr
    # supervisord tries a failed start again: the same fault on the same file is not said again.
    again = _run(env)
    assert again.returncode == EXIT_NO_RETRY and "refusing to start" not in again.stderr

    db.rename(db.with_name("gateway.db.corrupt"))  # the recovery the message gives
    gw = env.start_gateway()
    assert gw.token == owner
    assert read_faults(env.run_dir) == {}
    store = TokenStore(db)
    try:
        assert store.lookup(owner) is not None and store.lookup(laptop) is None  # to be created again
    finally:
        store.close()
