"""An upstream MCP server behind llmbasedos: server-everything's echo tool through `/mcp` against the same call
made by the official SDK's client straight to the server, in the same run.

    python bench/upstream.py [--seconds 3] [--levels 1,16] [--rounds 3] [--transports stdio,http]

Starts, on a fresh state directory, the upstream program (`python -m llmbasedos.servers.upstream`) with
@modelcontextprotocol/server-everything registered in mcp_servers.yaml, and a real gateway
(`python -m llmbasedos.gateway`, port 0). For `stdio` the upstream program runs server-everything as its child
and the direct client runs its own; for `http` one server-everything in Streamable HTTP mode serves both the
upstream program and the direct client. Both paths are driven by the same client, the SDK's `Client` in one
process, in the same protocol era (2025-11-25: server-everything speaks only the handshake era), calling
`echo` of a short text with `N` calls in flight on one session. For each level it measures calls/s, p50 and
p99 (median of several rounds taken in turns) and prints one JSON object with the added p50 and the ratio of
calls/s. Goal: at most 1 ms added at p50 at concurrency 1, at least 0.7 of the direct calls/s at 16.

Needs `make upstream-deps` (the servers, pinned, in .cache/upstream); nothing is downloaded here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import yaml
from _procs import cpu_seconds, read_json, start, stop, wait_until

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.support.third_party knows where make upstream-deps put the servers

from tests.support.third_party import EverythingHttp, everything_server, installed_versions  # noqa: E402

ERA = "2025-11-25"
MODERN = "2026-07-28"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
TEXT = "hello"
OPEN_TIER = "FREE:\n  allowed_capabilities: ['*']\n  rate_limit_requests: 1000000\n  requests_per_day: null\n"
SERVER = {"stdio": "everything", "http": "everythinghttp"}  # registry names: tools everything_echo, ...


class Target:
    """One path to the echo tool: how to open an SDK client session, and the tool's name on it."""

    def __init__(self, open_client: Callable[[], Any], tool: str, pids: list[int] | None = None) -> None:
        self.open_client = open_client
        self.tool = tool
        self.pids = pids or []  # llmbasedos's own processes on this path, whose CPU per call is reported
        self.client: Any = None

    async def call(self) -> None:
        result = await self.client.call_tool(self.tool, {"message": TEXT})
        if result.is_error or not result.content or TEXT not in getattr(result.content[0], "text", ""):
            raise RuntimeError(f"{self.tool}: unexpected result {result}")


async def _measure(target: Target, concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []

    async def one() -> None:
        began = time.perf_counter()
        await target.call()
        latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(one() for _ in range(concurrency)))  # warm-up
    latencies.clear()
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            await one()

    began, client_cpu = time.perf_counter(), time.process_time()
    ours_cpu = cpu_seconds(*target.pids) if target.pids else None
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    client_cpu = time.process_time() - client_cpu
    if ours_cpu is not None:
        ours_cpu = (cpu_seconds(*target.pids) or 0.0) - ours_cpu
    latencies.sort()
    calls = max(len(latencies), 1)

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 3)

    cell = {"calls_per_s": round(len(latencies) / elapsed, 1), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "calls": len(latencies), "client_cpu_ms_per_call": round(client_cpu * 1000 / calls, 3)}
    if ours_cpu is not None:
        cell["llmbasedos_cpu_ms_per_call"] = round(ours_cpu * 1000 / calls, 3)
    return cell


async def _run_all(targets: dict[str, Target], levels: list[int], seconds: float, rounds: int) -> dict[str, Any]:
    """Every cell measured `rounds` times, the cells taking turns so a busy moment of the machine falls on
    all of them alike; each cell keeps its median round (by calls/s)."""
    async with AsyncExitStack() as stack:
        for target in targets.values():
            target.client = await stack.enter_async_context(target.open_client())
            await target.call()
        runs: dict[str, dict[str, list[dict[str, float]]]] = {name: {str(lv): [] for lv in levels}
                                                              for name in targets}
        for level in levels:
            for _ in range(rounds):
                for name, target in targets.items():
                    runs[name][str(level)].append(await _measure(target, level, seconds))
    return {name: {lv: {**sorted(cell, key=lambda r: r["calls_per_s"])[len(cell) // 2], "rounds": len(cell)}
                   for lv, cell in by_level.items()}
            for name, by_level in runs.items()}


def _tool_names(url: str, token: str) -> set[str]:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        # One stateless 2026-07-28 request: no session to set up just to look.
        resp = httpx.post(url, headers={"authorization": f"Bearer {token}", "accept": "application/json",
                                        "mcp-protocol-version": MODERN, "mcp-method": "tools/list"},
                          json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": ENVELOPE}},
                          trust_env=False, timeout=10)
        return {t["name"] for t in resp.json()["result"]["tools"]}
    return set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell (default 3)")
    parser.add_argument("--levels", default="1,16", help="concurrent in-flight calls (default 1,16)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cell, the median is kept (default 3)")
    parser.add_argument("--transports", default="stdio,http", help="how server-everything is reached")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    transports = [t for t in args.transports.split(",") if t.strip()]
    if not transports or any(t not in SERVER for t in transports):
        parser.error(f"--transports: a list of {', '.join(SERVER)}")
    versions = installed_versions()

    from mcp import Client  # after the cache check: its message is the one to see when nothing is installed

    state = Path(tempfile.mkdtemp(prefix="bup", dir="/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    http_server: EverythingHttp | None = None
    try:
        run_dir, config_dir = state / "run", state / "config"
        run_dir.mkdir()
        config_dir.mkdir()
        stdio_cmd = everything_server()
        servers: dict[str, Any] = {}
        if "stdio" in transports:
            servers[SERVER["stdio"]] = stdio_cmd.registry_entry()
        if "http" in transports:
            http_server = EverythingHttp()
            http_server.start()
            servers[SERVER["http"]] = {"url": http_server.url}
        (config_dir / "mcp_servers.yaml").write_text(yaml.safe_dump({"servers": servers}), encoding="utf-8")
        (config_dir / "licence_tiers.yaml").write_text(OPEN_TIER, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMBDO_")}
        env.update({"LLMBDO_STATE_DIR": str(state), "LLMBDO_RUN_DIR": str(run_dir),
                    "LLMBDO_CONFIG_DIR": str(config_dir), "LLMBDO_LOG_DIR": str(state / "logs"),
                    "LLMBDO_GATEWAY_PORT": "0"})
        (state / "logs").mkdir()
        upstream = start(["-m", "llmbasedos.servers.upstream"], env, state / "upstream.log")
        procs.append(upstream)
        for name in servers:
            wait_until(lambda n=name: (run_dir / f"{n}.cap.json").exists(), 60, f"upstream server {name}", upstream)
        gateway = start(["-m", "llmbasedos.gateway"], env, state / "gateway.log")
        procs.append(gateway)
        info = wait_until(lambda: read_json(run_dir / "gateway.json"), 60, "gateway", gateway)
        token = (state / "data" / "owner.token").read_text(encoding="utf-8").strip()
        ours = info["url"] + "/mcp"
        wanted = {f"{SERVER[t]}_echo" for t in transports}
        wait_until(lambda: wanted <= _tool_names(ours, token), 60, f"{sorted(wanted)} on /mcp", gateway)

        targets: dict[str, Target] = {}
        for transport in transports:
            if transport == "stdio":
                targets["direct_stdio"] = Target(lambda: Client(stdio_cmd.stdio_params(), mode="legacy"), "echo")
            else:
                assert http_server is not None
                url = http_server.url
                targets["direct_http"] = Target(lambda u=url: Client(u, mode="legacy"), "echo")
            targets[f"llmbasedos_{transport}"] = Target(
                lambda: Client(f"{ours}?token={token}", mode="legacy"), f"{SERVER[transport]}_echo",
                [gateway.pid, upstream.pid])
        try:
            import uvloop

            results = uvloop.run(_run_all(targets, levels, args.seconds, args.rounds))
        except ImportError:
            results = asyncio.run(_run_all(targets, levels, args.seconds, args.rounds))
    finally:
        for proc in reversed(procs):
            stop(proc)
        if http_server is not None:
            http_server.cleanup()
        shutil.rmtree(state, ignore_errors=True)

    first, top = str(min(levels)), str(max(levels))
    added_p50 = {t: {str(lv): round(results[f"llmbasedos_{t}"][str(lv)]["p50_ms"]
                                    - results[f"direct_{t}"][str(lv)]["p50_ms"], 3) for lv in levels}
                 for t in transports}
    ratios = {t: {str(lv): round(results[f"llmbasedos_{t}"][str(lv)]["calls_per_s"]
                                 / max(results[f"direct_{t}"][str(lv)]["calls_per_s"], 1e-9), 2) for lv in levels}
              for t in transports}
    print(json.dumps({
        "benchmark": "upstream",
        "tool_call": f"tools/call echo of {TEXT!r} on @modelcontextprotocol/server-everything: through llmbasedos "
                     "/mcp (gateway -> upstream program -> the server's session) vs the SDK client straight to "
                     "the server",
        "client": f"the MCP Python SDK's Client, one session per path, protocol {ERA}, N calls in flight",
        "servers": {"server-everything": versions.get("everything")},
        "transports": transports,
        "rounds_per_cell": args.rounds,
        "seconds_per_cell": args.seconds,
        "results": results,
        "added_p50_ms": added_p50,
        "ratio_calls_per_s_ours_over_direct": ratios,
        # Client and servers share this machine's cores, and the SDK's client is no lean load generator: its CPU
        # per call (this process) against llmbasedos's own (gateway + upstream program) says who set the pace.
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "goal": f"added p50 <= 1 ms at {first} concurrent, ours >= 0.7x the direct calls/s at {top} concurrent",
        "goal_met": {t: added_p50[t][first] <= 1.0 and ratios[t][top] >= 0.7 for t in transports},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
