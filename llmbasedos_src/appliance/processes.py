"""The appliance's processes, read from /proc (no third-party dependency): whether a pid lives, the
supervisord a pid file names, the processes a state dir's supervisord started, and signalling them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from llmbasedos.appliance.supervisor_config import Layout

__all__ = ["POLL_SECONDS", "pid_alive", "read_pidfile", "appliance_processes", "wait_until", "signal_all"]

# How often a wait on the appliance looks again.
POLL_SECONDS = 0.2


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie has exited; only its parent's wait is missing.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def read_pidfile(layout: Layout) -> int | None:
    try:
        pid = int(layout.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    # Guard against a recycled pid: it must be the supervisord of this configuration.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if str(layout.config_path).encode() in cmdline else None


def appliance_processes(layout: Layout, groups: set[int]) -> list[int]:
    """Live processes started under this state dir's supervisord: they carry its socket in their environment,
    or belong to a process group supervisord created for a program."""
    marker = f"LLMBDO_SUPERVISOR_SOCKET={layout.supervisor_socket}".encode()
    me = os.getpid()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[-1].split()
            if fields[0] == "Z":
                continue
            if int(fields[2]) in groups:
                found.append(pid)
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(pid)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return found


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
