"""`llmbasedos up` / `status` / `down` under a real supervisord, run as the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbasedos.appliance.programs import get_program
from llmbasedos.appliance.supervisor_config import Layout, render

SECRET = "lbd-test-secret-6f1d2a"


def console_script() -> str:
    here = Path(sys.executable).parent / "llmbasedos"
    found = shutil.which("llmbasedos", path=str(Path(sys.executable).parent)) or shutil.which("llmbasedos")
    if found is None and not here.exists():
        pytest.skip("the llmbasedos console script is not installed")
    return found or str(here)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMBDO_")}
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([console_script(), *args], env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def processes_of(state_dir: Path) -> list[tuple[int, str]]:
    """Live processes whose command line or environment mentions the state dir (from /proc)."""
    needle = str(state_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except (OSError, IndexError):
            continue
        if needle in cmdline or needle in environ:
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def wait_for(predicate: Any, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def status(state_dir: Path) -> dict[str, Any]:
    done = cli("status", "--state-dir", str(state_dir), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lbd-", dir="/tmp"))
    yield path
    cli("down", "--state-dir", str(path))
    shutil.rmtree(path, ignore_errors=True)


needs_fs = pytest.mark.skipif(not get_program("fs").available(), reason="the fs server is not written yet")


@needs_fs
def test_up_status_down(state_dir: Path) -> None:
    env = clean_env(LLMBDO_TEST_API_KEY=SECRET)
    up = cli("up", "--state-dir", str(state_dir), "--port", "0", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "llmbasedos is up" in up.stdout
    assert f"llmbasedos down --state-dir {state_dir}" in up.stdout

    data = status(state_dir)
    assert data["running"] is True
    assert data["run_dir"] == str(state_dir / "run")
    assert data["services"]["fs"] == "RUNNING"
    assert data["programs"]["fs"]["ready"] is True
    cap = json.loads((state_dir / "run" / "fs.cap.json").read_text())
    assert cap["service_name"] == "fs"
    assert cap["pid"] == data["programs"]["fs"]["pid"]
    if get_program("gateway").available():
        assert data["services"]["gateway"] == "RUNNING"
        url = data["gateway_url"]
        assert url in up.stdout
        with urllib.request.urlopen(url + "/health", timeout=10) as resp:
            assert resp.status == 200

    # Layout and permissions: the socket and config that give control over everything are the user's alone.
    for sub in ("run", "data", "logs", "config", "user_files"):
        assert (state_dir / sub).is_dir()
    assert stat.S_IMODE((state_dir / "run").stat().st_mode) == 0o700
    assert stat.S_IMODE((state_dir / "run" / "supervisor.sock").stat().st_mode) == 0o700
    conf = state_dir / "supervisord.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    # The secret reached the program by inheritance, and is nowhere in the rendered file.
    assert SECRET not in conf.read_text()
    fs_env = Path(f"/proc/{data['programs']['fs']['pid']}/environ").read_bytes().split(b"\0")
    assert f"LLMBDO_TEST_API_KEY={SECRET}".encode() in fs_env
    assert f"LLMBDO_VIRTUAL_ROOT={state_dir / 'user_files'}".encode() in fs_env

    # up again: says so, changes nothing.
    again = cli("up", "--state-dir", str(state_dir), "--port", "0", env=env)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert status(state_dir)["supervisor_pid"] == data["supervisor_pid"]

    text = cli("status", "--state-dir", str(state_dir))
    assert text.returncode == 0 and "fs" in text.stdout and "RUNNING" in text.stdout

    down = cli("down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert processes_of(state_dir) == []
    assert not (state_dir / "run" / "fs.cap.json").exists()
    assert status(state_dir)["running"] is False

    # Nothing runs: still a success.
    assert cli("down", "--state-dir", str(state_dir)).returncode == 0


@needs_fs
def test_down_after_supervisord_died_still_stops_the_programs(state_dir: Path) -> None:
    user_files = state_dir / "mine"
    user_files.mkdir()
    up = cli("up", "--state-dir", str(state_dir), "--port", "0", "--user-files", str(user_files))
    assert up.returncode == 0, up.stdout + up.stderr
    data = status(state_dir)
    assert data["user_files"] == str(user_files)
    fs_pid = data["programs"]["fs"]["pid"]
    fs_env = Path(f"/proc/{fs_pid}/environ").read_bytes().split(b"\0")
    assert f"LLMBDO_VIRTUAL_ROOT={user_files}".encode() in fs_env
    assert not (state_dir / "user_files").exists()
    os.kill(data["supervisor_pid"], signal.SIGKILL)
    assert wait_for(lambda: not Path(f"/proc/{data['supervisor_pid']}/cmdline").exists()
                    or not Path(f"/proc/{data['supervisor_pid']}/cmdline").read_bytes())
    # The orphaned programs run on, unsupervised.
    assert Path(f"/proc/{fs_pid}").exists()
    assert status(state_dir)["running"] is False

    down = cli("down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert processes_of(state_dir) == []


@needs_fs
def test_down_without_the_supervisor_socket_uses_the_pidfile(state_dir: Path) -> None:
    up = cli("up", "--state-dir", str(state_dir), "--port", "0")
    assert up.returncode == 0, up.stdout + up.stderr
    assert processes_of(state_dir) != []
    (state_dir / "run" / "supervisor.sock").unlink()
    down = cli("down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert processes_of(state_dir) == []


@needs_fs
def test_a_program_that_cannot_start_is_named_with_its_log(state_dir: Path) -> None:
    # A directory where the fs server must put its socket: it cannot remove it, crashes, and is retried
    # until supervisord gives up.
    (state_dir / "run" / "fs.sock" / "blocker").mkdir(parents=True)
    up = cli("up", "--state-dir", str(state_dir), "--port", "0")
    assert up.returncode == 1
    assert "fs failed to start" in up.stderr
    assert str(state_dir / "logs" / "fs.log") in up.stderr
    assert "Is a directory" in up.stderr  # the tail of the program's own log
    assert "Traceback (most recent call last)" not in up.stderr.split("last lines of")[0]
    # Nothing is left half-started.
    assert processes_of(state_dir) == []
    assert status(state_dir)["running"] is False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _corrupt_database(state_dir: Path) -> Path:
    db = state_dir / "data" / "gateway.db"
    db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    db.write_bytes(b"not a database " * 1000)
    return db


@pytest.mark.skipif(not get_program("gateway").available(), reason="the gateway is not installed")
def test_a_corrupt_database_leaves_the_gateway_stopped_under_supervisord(state_dir: Path) -> None:
    """The container's way: supervisord alone, no `up` to stop it. It gives up on the gateway instead of
    restarting it without end, the log says why once, and status and the admin commands say the same."""
    layout = Layout.for_state_dir(state_dir, gateway_port=_free_port())
    for path in (layout.run_dir, layout.log_dir, layout.config_dir):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = _corrupt_database(state_dir)
    layout.config_path.write_text(render(layout, [get_program("gateway")]), encoding="utf-8")
    started = subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(layout.config_path)],
                             env=clean_env(), capture_output=True, text=True, timeout=60, check=False)
    assert started.returncode == 0, started.stderr

    def gave_up() -> bool:
        return status(state_dir)["services"].get("gateway") in ("FATAL", "EXITED")

    assert wait_for(gave_up, 60), status(state_dir)
    data = status(state_dir)
    info = data["programs"]["gateway"]
    # FATAL: it failed while starting, tried again as startretries says; EXITED (78, expected): a start slower
    # than startsecs. Both are final: supervisord does not start it again.
    assert info["state"] == "FATAL" or "exit status 78" in info["description"], info
    log = layout.program_log("gateway").read_text(encoding="utf-8")
    assert log.count("refusing to start") == 1 and "Traceback" not in log
    message = data["faults"]["gateway"]
    assert message.startswith(f"the gateway database {db} is corrupt") and message in log

    text = cli("status", "--state-dir", str(state_dir))
    assert text.returncode == 0 and f"gateway cannot start: {message}" in text.stdout
    listing = cli("token", "list", "--state-dir", str(state_dir))
    assert listing.returncode == 2 and listing.stderr.strip() == f"llmbasedos: {message}"


@needs_fs
def test_up_on_a_corrupt_database_says_why_and_how_to_recover(state_dir: Path) -> None:
    db = _corrupt_database(state_dir)
    up = cli("up", "--state-dir", str(state_dir), "--port", "0")
    assert up.returncode == 1
    assert f"gateway cannot start: the gateway database {db} is corrupt" in up.stderr
    assert "Traceback" not in up.stderr
    assert processes_of(state_dir) == []
    data = status(state_dir)
    assert data["running"] is False and "move the file aside" in data["faults"]["gateway"]

    db.rename(db.with_name("gateway.db.corrupt"))
    up = cli("up", "--state-dir", str(state_dir), "--port", "0")
    assert up.returncode == 0, up.stdout + up.stderr
    data = status(state_dir)
    assert data["services"]["gateway"] == "RUNNING" and data["faults"] == {}
