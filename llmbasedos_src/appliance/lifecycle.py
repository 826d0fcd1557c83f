"""Starting and stopping the appliance under one state dir: launch supervisord, wait until every program is
ready (or say which one failed and show its log), and stop supervisord with everything it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from llmbasedos.appliance.cli_errors import CLIError
from llmbasedos.appliance.processes import (
    POLL_SECONDS,
    appliance_processes,
    pid_alive,
    read_pidfile,
    signal_all,
    wait_until,
)
from llmbasedos.appliance.programs import PROGRAMS, Program
from llmbasedos.appliance.state_dir import STATE_FILE
from llmbasedos.appliance.supervisor_client import Supervisor, SupervisorDown
from llmbasedos.appliance.supervisor_config import Layout
from llmbasedos.faults import read_faults

__all__ = ["start_supervisord", "wait_ready", "stop"]

_LOG_TAIL_LINES = 25
_MAX_STARTS = 4


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log yet)"
    kept = text.splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) if kept else "(the log is empty)"


def stop(layout: Layout) -> bool:
    """Stop supervisord and every process it started. Returns whether anything was running."""
    sup = Supervisor(layout.supervisor_socket)
    groups: set[int] = set()
    pid = read_pidfile(layout)
    was_running = pid is not None
    asked = False
    try:
        # Each program leads its own process group (supervisord calls setpgrp): remember them to catch
        # children a program left behind.
        groups = {int(p["pid"]) for p in sup.processes() if p.get("pid")}
        if pid is None:
            pid = sup.pid()
        was_running = True
        sup.shutdown()
        asked = True
    except (SupervisorDown, xmlrpc.client.Fault):
        pass
    if pid is not None:
        if not asked:  # its socket is gone or it does not answer: TERM asks for the same clean shutdown
            signal_all([pid], signal.SIGTERM)
        # supervisord stops programs in reverse priority, each within its stopwaitsecs.
        grace = sum(p.stopwaitsecs for p in PROGRAMS) + 10
        if not wait_until(lambda: not pid_alive(pid), grace):
            signal_all([pid], signal.SIGKILL)
            wait_until(lambda: not pid_alive(pid), 5)
    strays = appliance_processes(layout, groups)
    if strays:
        was_running = True
        signal_all(strays, signal.SIGTERM)
        if not wait_until(lambda: not appliance_processes(layout, groups), 5):
            signal_all(appliance_processes(layout, groups), signal.SIGKILL)
            wait_until(lambda: not appliance_processes(layout, groups), 5)
    # Files a killed program could not remove: the gateway must not route to a dead service.
    for program in PROGRAMS:
        with contextlib.suppress(OSError):
            (layout.run_dir / f"{program.name}.cap.json").unlink()
    for leftover in (layout.run_dir / STATE_FILE, layout.pidfile):
        with contextlib.suppress(OSError):
            leftover.unlink()
    return was_running


def start_supervisord(layout: Layout) -> None:
    cmd = [sys.executable, "-m", "supervisor.supervisord", "-c", str(layout.config_path)]
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise CLIError("supervisord did not start within 60 s") from None
    sup = Supervisor(layout.supervisor_socket)
    if done.returncode != 0 or not wait_until(sup.running, 30):
        output = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
        raise CLIError(f"supervisord did not start (exit status {done.returncode}): {output or '(no output)'}\n"
                       f"  last lines of {layout.supervisord_log}:\n{_tail(layout.supervisord_log)}")


def wait_ready(layout: Layout, programs: list[Program], timeout: float) -> None:
    sup = Supervisor(layout.supervisor_socket)
    pending = {p.name: p for p in programs}
    deadline = time.monotonic() + timeout
    infos: dict[str, dict[str, Any]] = {}
    # A program that crashes after supervisord counted it as started is restarted without end: count the
    # processes seen to catch such a loop, since it never becomes FATAL.
    pids: dict[str, set[int]] = {p.name: set() for p in programs}
    while pending:
        try:
            infos = {p["name"]: p for p in sup.processes()}
        except (SupervisorDown, xmlrpc.client.Fault) as exc:
            raise CLIError(f"supervisord stopped answering while the programs started: {exc}") from None
        faults = read_faults(layout.run_dir)
        for name, program in list(pending.items()):
            if name in faults:  # it stopped on a fault a restart cannot mend: say why at once
                raise CLIError(f"{name} cannot start: {faults[name]['message']}")
            info = infos.get(name, {})
            state = info.get("statename", "UNKNOWN")
            if info.get("pid"):
                pids[name].add(int(info["pid"]))
            if state in ("FATAL", "UNKNOWN"):
                raise CLIError(f"{name} failed to start ({state}: {info.get('description') or 'not known'}).\n"
                               f"  last lines of {layout.program_log(name)}:\n{_tail(layout.program_log(name))}")
            if len(pids[name]) > _MAX_STARTS:
                raise CLIError(f"{name} failed to start: it exited {len(pids[name]) - 1} times while starting.\n"
                               f"  last lines of {layout.program_log(name)}:\n{_tail(layout.program_log(name))}")
            if state == "RUNNING" and program.ready.is_ready(layout, info.get("pid") or None):
                del pending[name]
        if not pending:
            return
        if time.monotonic() >= deadline:
            name, program = next(iter(pending.items()))
            state = infos.get(name, {}).get("statename", "UNKNOWN")
            raise CLIError(f"{name} did not become ready within {timeout:g} s (state {state}; waited for "
                           f"{program.ready.describe(layout)}).\n"
                           f"  last lines of {layout.program_log(name)}:\n{_tail(layout.program_log(name))}")
        time.sleep(POLL_SECONDS)
