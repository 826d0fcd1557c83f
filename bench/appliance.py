"""How long `llmbasedos up` takes until every service is healthy, and what each program holds in memory idle.

The comparison, measured in the same run: the same programs started directly (`python -m ...` with the same
environment, readiness polled the same way), without supervisord and without the CLI: the floor.

    .venv/bin/python bench/appliance.py [--rounds N] [--idle SECONDS]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from llmbasedos.programs import Program, available_programs
from llmbasedos.supervisor_config import Layout, program_env


def _cli() -> str:
    return shutil.which("llmbasedos", path=str(Path(sys.executable).parent)) or "llmbasedos"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LLMBDO_")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    """Resident memory of a process and everything in its process group (programs lead their own group)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            if int(entry.name) != pid and int(fields[2]) != pid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def _via_up(idle: float) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="lbd-b", dir="/tmp"))
    try:
        t0 = time.perf_counter()
        up = subprocess.run([_cli(), "up", "--state-dir", str(state), "--port", "0"], env=_env(),
                            capture_output=True, text=True, check=False)
        up_s = time.perf_counter() - t0
        if up.returncode != 0:
            raise SystemExit(f"llmbasedos up failed: {up.stderr}")
        time.sleep(idle)  # let start-up allocations settle before reading resident memory
        status = json.loads(subprocess.run([_cli(), "status", "--state-dir", str(state), "--json"], env=_env(),
                                           capture_output=True, text=True, check=True).stdout)
        rss = {name: _rss_kib(info["pid"]) for name, info in status["programs"].items() if info["pid"]}
        rss["supervisord"] = _rss_kib(status["supervisor_pid"])
        t0 = time.perf_counter()
        subprocess.run([_cli(), "down", "--state-dir", str(state)], env=_env(), capture_output=True, check=True)
        down_s = time.perf_counter() - t0
        return {"up_s": up_s, "down_s": down_s, "rss_kib": rss}
    finally:
        subprocess.run([_cli(), "down", "--state-dir", str(state)], env=_env(), capture_output=True, check=False)
        shutil.rmtree(state, ignore_errors=True)


def _direct(programs: list[Program]) -> float:
    state = Path(tempfile.mkdtemp(prefix="lbd-d", dir="/tmp"))
    layout = Layout.for_state_dir(state, gateway_port=_free_port(), llm_local_port=_free_port())
    for d in (layout.run_dir, layout.data_dir, layout.log_dir, layout.config_dir, layout.virtual_root):
        d.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        t0 = time.perf_counter()
        for program in programs:
            env = {**_env(), **program_env(layout, program, programs)}
            procs[program.name] = subprocess.Popen([sys.executable, "-m", program.module], env=env,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True)
        pending = {p.name: p for p in programs}
        deadline = time.monotonic() + 300
        while pending:
            for name, program in list(pending.items()):
                if procs[name].poll() is not None:
                    raise SystemExit(f"{name} exited while starting directly")
                if program.ready.is_ready(layout, procs[name].pid):
                    del pending[name]
            if time.monotonic() > deadline:
                raise SystemExit(f"not ready directly: {sorted(pending)}")
            time.sleep(0.05)
        return time.perf_counter() - t0
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds to wait before reading memory")
    args = parser.parse_args()
    programs = available_programs()
    up_runs = [_via_up(args.idle) for _ in range(args.rounds)]
    direct_runs = [_direct(programs) for _ in range(args.rounds)]
    up_s = statistics.median(r["up_s"] for r in up_runs)
    direct_s = statistics.median(direct_runs)
    last_rss = up_runs[-1]["rss_kib"]
    print(json.dumps({
        "benchmark": "appliance",
        "programs": [p.name for p in programs],
        "rounds": args.rounds,
        "up_to_healthy_s": round(up_s, 3),
        "down_s": round(statistics.median(r["down_s"] for r in up_runs), 3),
        "direct_start_to_healthy_s": round(direct_s, 3),
        "up_over_direct_ratio": round(up_s / direct_s, 3),
        "idle_rss_mib": {name: round(kib / 1024, 1) for name, kib in sorted(last_rss.items())},
        "idle_rss_total_mib": round(sum(last_rss.values()) / 1024, 1),
        "comparison": "llmbasedos up (CLI + supervisord + readiness wait) vs the same programs started directly",
    }))


if __name__ == "__main__":
    main()
