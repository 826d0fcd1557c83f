"""Backend round-trip speed: `mcp.fs.stat` on a real fs server vs a bare NUL-framed JSON-RPC echo server.

Both servers run as their own processes on UNIX sockets in a temp dir; the same client (llmbasedos'
RPCClient, one multiplexed connection) drives each at concurrency 1 and 16. The bare echo server (the floor)
is written below: asyncio streams, NUL split, orjson, answer — no validation, no thread pool, no files.
Prints one JSON object; `ratio_*` is fs calls/s over floor calls/s (goal: >= 0.5 at concurrency 16).
fs and floor rounds alternate and the median round of each is reported, so a busy machine skews both alike.

    python bench/backend.py [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
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

import orjson
from _procs import cpu_seconds

from llmbasedos.rpc.client import RPCClient

CONCURRENCIES = (1, 16)


# -- the floor: a bare echo server ------------------------------------------------------------------------------


async def _floor_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    buf = b""
    while True:
        data = await reader.read(1 << 16)
        if not data:
            break
        *frames, buf = (buf + data).split(b"\0")
        for frame in frames:
            if not frame:
                continue
            msg = orjson.loads(frame)
            writer.write(orjson.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": msg.get("params")}) + b"\0")
    writer.close()


async def _floor_main(sock: str) -> None:
    server = await asyncio.start_unix_server(_floor_conn, path=sock)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


def run_floor(sock: str) -> None:
    try:
        import uvloop  # the framework uses uvloop when present: give the floor the same loop
    except ImportError:
        asyncio.run(_floor_main(sock))
    else:
        uvloop.run(_floor_main(sock))


# -- driving ------------------------------------------------------------------------------------------------------


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise SystemExit("server did not start")
        time.sleep(0.02)


async def measure(sock: str, method: str, params: Any, calls: int, concurrency: int,
                  server_pid: int | None = None) -> dict[str, float]:
    client = await RPCClient.connect_unix(sock)
    try:
        for _ in range(200):  # warm-up: imports, caches, thread pool
            await client.call(method, params)
        latencies: list[float] = []
        per_worker = calls // concurrency

        async def worker() -> None:
            for _ in range(per_worker):
                t0 = time.perf_counter()
                await client.call(method, params)
                latencies.append(time.perf_counter() - t0)

        cpu0 = cpu_seconds(server_pid)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        cpu1 = cpu_seconds(server_pid)
    finally:
        await client.close()
    latencies.sort()
    n = len(latencies)
    figures = {
        "calls": n,
        "calls_per_s": round(n / elapsed, 1),
        "p50_ms": round(latencies[n // 2] * 1000, 4),
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 4),
    }
    if cpu0 is not None and cpu1 is not None:
        figures["server_cpu_us_per_call"] = round((cpu1 - cpu0) / n * 1e6, 1)
    return figures


async def run_all(fs_sock: str, floor_sock: str, calls: int, rounds: int, fs_pid: int | None = None,
                  floor_pid: int | None = None) -> dict[str, Any]:
    """Alternate fs and floor rounds so both see the same machine; keep each one's median round."""
    stat_params = {"path": "/docs/bench.txt"}
    out: dict[str, Any] = {"fs_stat": {}, "floor_echo": {}}
    for c in CONCURRENCIES:
        fs_runs: list[dict[str, float]] = []
        floor_runs: list[dict[str, float]] = []
        for _ in range(rounds):
            fs_runs.append(await measure(fs_sock, "mcp.fs.stat", stat_params, calls, c, fs_pid))
            floor_runs.append(await measure(floor_sock, "mcp.bench.echo", stat_params, calls, c, floor_pid))
        out["fs_stat"][f"c{c}"] = _median_run(fs_runs)
        out["floor_echo"][f"c{c}"] = _median_run(floor_runs)
    for c in CONCURRENCIES:
        fs_rate = out["fs_stat"][f"c{c}"]["calls_per_s"]
        out[f"ratio_c{c}"] = round(fs_rate / out["floor_echo"][f"c{c}"]["calls_per_s"], 3)
    out["goal"] = "ratio_c16 >= 0.5"
    out["meets_goal"] = out["ratio_c16"] >= 0.5
    return out


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    ordered = sorted(runs, key=lambda r: r["calls_per_s"])
    return {**ordered[len(ordered) // 2], "rounds": len(runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=30000, help="calls per round (default 30000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per figure, the median is kept (default 3)")
    ap.add_argument("--floor-server", metavar="SOCKET", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.floor_server:
        run_floor(args.floor_server)
        return
    tmp = Path(tempfile.mkdtemp(prefix="lbb", dir="/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        root = tmp / "root"
        (root / "docs").mkdir(parents=True)
        (root / "docs" / "bench.txt").write_text("benchmark\n")
        env = {**os.environ, "LLMBDO_STATE_DIR": str(tmp / "state"), "LLMBDO_RUN_DIR": str(tmp / "run"),
               "LLMBDO_VIRTUAL_ROOT": str(root), "LLMBDO_LOG_LEVEL": "WARNING"}
        fs = subprocess.Popen([sys.executable, "-m", "llmbasedos.servers.fs"], env=env, stdin=subprocess.DEVNULL)
        procs.append(fs)
        floor_sock = tmp / "floor.sock"
        floor = subprocess.Popen([sys.executable, __file__, "--floor-server", str(floor_sock)],
                                 stdin=subprocess.DEVNULL)
        procs.append(floor)
        _wait_for(tmp / "run" / "fs.cap.json", fs)
        _wait_for(floor_sock, floor)
        load_before = os.getloadavg()[0]
        result = _run_loop(run_all(str(tmp / "run" / "fs.sock"), str(floor_sock), args.calls, args.rounds,
                                   fs.pid, floor.pid))
        result["python"] = sys.version.split()[0]
        result["cpus"] = os.cpu_count()
        # Other work on the machine skews both sides; the load average says how much there was.
        result["loadavg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        print(json.dumps(result))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    main()
