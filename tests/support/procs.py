"""Start a real server process for a test and stop it afterwards.

    handle = start_server("fs", {"LLMBDO_VIRTUAL_ROOT": str(root)})
    client = await RPCClient.connect_unix(str(handle.socket))
    ...
    handle.stop()

`start_server(name, env)` runs `python -m llmbasedos.servers.<name>` (or `module=` for anything else, e.g.
"tests.support.echo_server") with the test's environment plus `env`. Unless `env` sets `LLMBDO_RUN_DIR`, the
run dir is a fresh short directory under /tmp (AF_UNIX paths are limited to 107 bytes); state, data, log and
config dirs default to siblings inside it. It returns once `<run_dir>/<name>.cap.json` exists, which the server
writes only when its socket listens; if the process dies first, the error carries its output.

In pytest, use the `start_server` fixture from tests/servers/conftest.py: every handle it returns is stopped
at the end of the test even when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["ServerHandle", "ServerStartError", "start_server", "wait_for"]

_REPO = Path(__file__).resolve().parents[2]


class ServerStartError(RuntimeError):
    pass


def wait_for(predicate: Any, timeout: float, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll `predicate()` until it returns something truthy; raise TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class ServerHandle:
    """A running server process: `.socket` (Path), `.proc` (Popen), `.run_dir`, `.cap` (its cap file)."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], run_dir: Path, log_path: Path,
                 owned_dir: Path | None) -> None:
        self.name = name
        self.proc = proc
        self.run_dir = run_dir
        self.log_path = log_path
        self._owned_dir = owned_dir
        self.cap: dict[str, Any] = {}

    @property
    def socket(self) -> Path:
        return Path(self.cap.get("socket") or self.run_dir / f"{self.name}.sock")

    @property
    def cap_path(self) -> Path:
        return self.run_dir / f"{self.name}.cap.json"

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code. Safe to call twice."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None
        return self.proc.returncode

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(name: str, env: dict[str, str] | None = None, *, module: str | None = None,
                 timeout: float = 60.0) -> ServerHandle:
    """Start `python -m llmbasedos.servers.<name>` and wait until it listens (see the module docstring)."""
    extra = dict(env or {})
    owned: Path | None = None
    if "LLMBDO_RUN_DIR" in extra:
        run_dir = Path(extra["LLMBDO_RUN_DIR"])
        log_dir = Path(extra.get("LLMBDO_LOG_DIR", run_dir))
    else:
        owned = Path(tempfile.mkdtemp(prefix="lb", dir="/tmp"))
        run_dir = owned / "run"
        log_dir = owned / "logs"
        extra.setdefault("LLMBDO_STATE_DIR", str(owned / "state"))
        extra["LLMBDO_RUN_DIR"] = str(run_dir)
        extra.setdefault("LLMBDO_LOG_DIR", str(log_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **extra}
    # The repository on the path, so test-only servers (tests.support.*) import too.
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO), os.environ.get("PYTHONPATH")) if p)
    log_path = log_dir / f"{name}.test.log"
    cap_path = run_dir / f"{name}.cap.json"
    with contextlib.suppress(FileNotFoundError):
        cap_path.unlink()  # a stale one would make us return before the server listens
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", module or f"llmbasedos.servers.{name}"], env=full_env,
                                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(_REPO))
    handle = ServerHandle(name, proc, run_dir, log_path, owned)
    deadline = time.monotonic() + timeout
    while True:
        if cap_path.exists():
            try:
                handle.cap = json.loads(cap_path.read_text(encoding="utf-8"))
                break
            except ValueError:
                pass  # written atomically, so this is a stale half-file from elsewhere: keep polling
        if proc.poll() is not None:
            out = handle.output()
            handle.stop()
            raise ServerStartError(f"{name} server exited with {proc.returncode} before listening:\n{out}")
        if time.monotonic() > deadline:
            out = handle.output()
            handle.stop()
            raise ServerStartError(f"{name} server did not listen within {timeout:g} s:\n{out}")
        time.sleep(0.02)
    return handle
