"""How long `llmbasedos up` takes until every service is healthy, and what each program holds in memory idle and
after indexing a generated corpus through the gateway.

The comparisons, measured in the same run: the same programs started directly (`python -m ...` with the same
environment, readiness polled the same way), without supervisord and without the CLI: the floor; and each
program's resident memory after `mcp.fs.embed` of a generated corpus (default 2,000 text files, sent over `/ws`
with the owner token, as a client would) against the same program idle.

    .venv/bin/python bench/appliance.py [--rounds N] [--idle SECONDS] [--files N]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _procs import free_port
from websockets.sync.client import connect as ws_connect

from llmbasedos.appliance.programs import Program, available_programs
from llmbasedos.appliance.supervisor_config import Layout, program_env


def _cli() -> str:
    return shutil.which("llmbasedos", path=str(Path(sys.executable).parent)) or "llmbasedos"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LLMBDO_")}


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


_WORDS = ["invoice", "garden", "river", "budget", "meeting", "recipe", "engine", "holiday", "contract", "server",
          "backup", "kernel", "music", "weather", "train", "museum", "doctor", "salary", "harvest", "planet",
          "library", "course", "painting", "bicycle", "network"]


def _write_corpus(root: Path, files: int, seed: int = 2000) -> tuple[int, list[str]]:
    """`files` small text files in folders of 100 under `root/corpus`; returns (bytes written, virtual folders)."""
    rng = random.Random(seed)
    total = 0
    for i in range(files):
        folder = root / "corpus" / f"d{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        paragraphs = ["\n".join(" ".join(rng.choices(_WORDS, k=12)) + "." for _ in range(rng.randint(3, 8)))
                      for _ in range(rng.randint(1, 4))]
        text = f"Note {i}\n\n" + "\n\n".join(paragraphs) + "\n"
        (folder / f"note{i:05d}.txt").write_text(text, encoding="utf-8")
        total += len(text.encode())
    return total, [f"/corpus/d{n:03d}" for n in range((files + 99) // 100)]


def _index_through_gateway(state: Path, url: str, folders: list[str]) -> tuple[float, dict[str, int]]:
    """`mcp.fs.embed` of each folder over the gateway's WebSocket, as the owner; returns (seconds, totals).

    One call per folder of 100 files keeps each call well inside the gateway's per-call timeout
    (`LLMBDO_CALL_TIMEOUT`, 120 s by default) on a slow machine, without changing the appliance's settings.
    """
    token = subprocess.run([_cli(), "token", "owner", "--state-dir", str(state)], env=_env(), capture_output=True,
                           text=True, check=True).stdout.strip()
    ws_url = url.replace("http://", "ws://", 1) + f"/ws?token={token}"
    totals = {"files_indexed": 0, "total_chunks": 0}
    with ws_connect(ws_url, max_size=None, open_timeout=30) as ws:
        t0 = time.perf_counter()
        for rid, folder in enumerate(folders, start=1):
            ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": "mcp.fs.embed",
                                "params": {"path": folder, "recursive": True}}))
            while True:
                msg = json.loads(ws.recv(timeout=3600))
                if msg.get("id") == rid:  # anything else is a progress notification
                    break
            if "error" in msg:
                raise SystemExit(f"mcp.fs.embed {folder} failed: {msg['error']}")
            totals["files_indexed"] += int(msg["result"].get("files_indexed", 0))
            totals["total_chunks"] = int(msg["result"].get("total_chunks", 0))  # the whole index, so far
        seconds = time.perf_counter() - t0
    return seconds, totals


def _program_rss(state: Path) -> dict[str, int]:
    status = json.loads(subprocess.run([_cli(), "status", "--state-dir", str(state), "--json"], env=_env(),
                                       capture_output=True, text=True, check=True).stdout)
    rss = {name: _rss_kib(info["pid"]) for name, info in status["programs"].items() if info["pid"]}
    rss["supervisord"] = _rss_kib(status["supervisor_pid"])
    return rss


def _via_up(idle: float, corpus_files: int = 0) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="lbd-b", dir="/tmp"))
    try:
        t0 = time.perf_counter()
        up = subprocess.run([_cli(), "up", "--state-dir", str(state), "--port", "0"], env=_env(),
                            capture_output=True, text=True, check=False)
        up_s = time.perf_counter() - t0
        if up.returncode != 0:
            raise SystemExit(f"llmbasedos up failed: {up.stderr}")
        time.sleep(idle)  # let start-up allocations settle before reading resident memory
        rss = _program_rss(state)
        indexed: dict[str, Any] = {}
        if corpus_files:
            status = json.loads(subprocess.run([_cli(), "status", "--state-dir", str(state), "--json"], env=_env(),
                                               capture_output=True, text=True, check=True).stdout)
            corpus_bytes, folders = _write_corpus(Path(status["user_files"]), corpus_files)
            index_s, result = _index_through_gateway(state, status["gateway_url"], folders)
            time.sleep(idle)  # the same settling as for the idle figure
            indexed = {"rss_kib": _program_rss(state), "index_s": index_s, "corpus_bytes": corpus_bytes,
                       "files_indexed": result.get("files_indexed"), "chunks": result.get("total_chunks")}
        t0 = time.perf_counter()
        subprocess.run([_cli(), "down", "--state-dir", str(state)], env=_env(), capture_output=True, check=True)
        down_s = time.perf_counter() - t0
        return {"up_s": up_s, "down_s": down_s, "rss_kib": rss, "indexed": indexed}
    finally:
        subprocess.run([_cli(), "down", "--state-dir", str(state)], env=_env(), capture_output=True, check=False)
        shutil.rmtree(state, ignore_errors=True)


def _direct(programs: list[Program]) -> float:
    state = Path(tempfile.mkdtemp(prefix="lbd-d", dir="/tmp"))
    layout = Layout.for_state_dir(state, gateway_port=free_port(), llm_local_port=free_port())
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
    parser.add_argument("--files", type=int, default=2000, help="files in the corpus indexed in the last round")
    args = parser.parse_args()
    programs = available_programs()
    # Indexing is measured once, in the last round, so the earlier rounds time `up` on an untouched state.
    up_runs = [_via_up(args.idle, args.files if i == args.rounds - 1 else 0) for i in range(args.rounds)]
    direct_runs = [_direct(programs) for _ in range(args.rounds)]
    up_s = statistics.median(r["up_s"] for r in up_runs)
    direct_s = statistics.median(direct_runs)
    last_rss = up_runs[-1]["rss_kib"]
    indexed = up_runs[-1]["indexed"]
    indexed_rss: dict[str, int] = indexed.get("rss_kib", {})
    indexed_fields: dict[str, Any] = {}
    if indexed_rss:
        indexed_fields = {
            "corpus_files": args.files,
            "corpus_bytes": indexed["corpus_bytes"],
            "files_indexed": indexed["files_indexed"],
            "chunks_indexed": indexed["chunks"],
            "index_through_gateway_s": round(indexed["index_s"], 3),
            "indexed_rss_mib": {name: round(kib / 1024, 1) for name, kib in sorted(indexed_rss.items())},
            "indexed_rss_total_mib": round(sum(indexed_rss.values()) / 1024, 1),
            "indexed_over_idle_rss_ratio": {name: round(kib / last_rss[name], 3)
                                            for name, kib in sorted(indexed_rss.items()) if last_rss.get(name)},
            "indexed_over_idle_rss_total_ratio": round(sum(indexed_rss.values()) / sum(last_rss.values()), 3),
        }
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
        **indexed_fields,
        "comparison": "llmbasedos up (CLI + supervisord + readiness wait) vs the same programs started directly; "
                      "resident memory after indexing the corpus through the gateway vs idle, same run",
    }))


if __name__ == "__main__":
    main()
