"""The `llmbasedos` command line without starting anything: bad input, nothing running, `validate`."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmbasedos.appliance.programs import get_program, module_exists
from tests.appliance.test_cli import cli, processes_of


@pytest.fixture
def tmp_short() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lbd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_no_command_prints_help() -> None:
    done = cli()
    assert done.returncode == 2
    assert "up" in done.stdout and "down" in done.stdout and "status" in done.stdout


def test_bad_port_values(tmp_short: Path) -> None:
    state = tmp_short / "state"
    done = cli("up", "--state-dir", str(state), "--port", "abc")
    assert done.returncode == 2 and "--port" in done.stderr
    done = cli("up", "--state-dir", str(state), "--port", "70000")
    assert done.returncode == 1
    assert "llmbasedos: error: --port 70000 is not between 0 and 65535" in done.stderr
    assert not state.exists()


def test_missing_user_files_is_refused_before_anything_is_created(tmp_short: Path) -> None:
    state = tmp_short / "state"
    done = cli("up", "--state-dir", str(state), "--user-files", str(tmp_short / "missing"))
    assert done.returncode == 1
    assert f"--user-files {tmp_short / 'missing'} is not an existing directory" in done.stderr
    assert not state.exists()


def test_state_dir_that_is_a_file(tmp_short: Path) -> None:
    afile = tmp_short / "afile"
    afile.write_text("x")
    done = cli("up", "--state-dir", str(afile), "--port", "0")
    assert done.returncode == 1 and "is not a directory" in done.stderr


def test_state_dir_too_long_for_sockets(tmp_short: Path) -> None:
    state = tmp_short / ("s" * 100)
    done = cli("up", "--state-dir", str(state), "--port", "0")
    assert done.returncode == 1
    assert "too long for UNIX sockets" in done.stderr
    assert "Traceback" not in done.stderr
    assert not state.exists()


def test_state_dir_supervisord_would_misread(tmp_short: Path) -> None:
    state = tmp_short / "100%"
    done = cli("up", "--state-dir", str(state), "--port", "0")
    assert done.returncode == 1 and "% sign" in done.stderr
    assert not state.exists()


@pytest.mark.skipif(not get_program("gateway").available(), reason="the gateway is not written yet")
def test_busy_port_is_named(tmp_short: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = cli("up", "--state-dir", str(tmp_short), "--port", str(port))
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert processes_of(tmp_short) == []


def test_status_and_down_when_nothing_runs(tmp_short: Path) -> None:
    done = cli("status", "--state-dir", str(tmp_short), "--json")
    assert done.returncode == 0
    data = json.loads(done.stdout)
    assert data["running"] is False
    assert data["run_dir"] == str(tmp_short / "run")
    assert data["services"] == {}
    assert "gateway_url" not in data
    assert "not running" in cli("status", "--state-dir", str(tmp_short)).stdout
    for state in (tmp_short, tmp_short / "never-created"):
        done = cli("down", "--state-dir", str(state))
        assert done.returncode == 0
        assert "not running" in done.stdout


def test_state_dir_defaults_to_the_environment(tmp_short: Path) -> None:
    from tests.appliance.test_cli import clean_env

    done = cli("status", "--json", env=clean_env(LLMBDO_STATE_DIR=str(tmp_short)))
    assert json.loads(done.stdout)["state_dir"] == str(tmp_short)


def test_validate_checks_caps_and_licence_tiers(tmp_short: Path) -> None:
    done = cli("validate", "--state-dir", str(tmp_short))
    assert done.returncode == 0, done.stderr
    if get_program("fs").shipped():
        assert "ok    fs/caps.json" in done.stdout
    assert "ok    supervisord configuration" in done.stdout
    if not module_exists("llmbasedos.gateway.policy.tiers"):
        return
    (tmp_short / "config").mkdir()
    (tmp_short / "config" / "licence_tiers.yaml").write_text("FREE:\n  no_such_field: 1\n")
    done = cli("validate", "--state-dir", str(tmp_short))
    assert done.returncode == 1
    assert "licence_tiers.yaml" in done.stderr and "no_such_field" in done.stderr
