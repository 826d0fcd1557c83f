"""Standard MCP over Streamable HTTP: llmbasedos `/mcp` against the official SDK's own MCPServer.

    python bench/mcp_http.py [--seconds 3] [--levels 1,16]

Starts, in the same run, a real gateway (`python -m llmbasedos.gateway`, port 0) with the echo test server
behind it, and the official MCP Python SDK's `MCPServer` (mcp.server.mcpserver) serving one `echo` tool over
Streamable HTTP with uvicorn. Both are driven by the same raw httpx client doing the same small tool call
(`tools/call` of an echo of a short text) in each era: 2026-07-28 (stateless `_meta` envelope and routing
headers) and 2025-11-25 (one initialized session). For each level of concurrent in-flight calls it measures
calls/s, p50 and p99, and prints one JSON object with the ratios ours/SDK. Goal: at least 5 times the SDK
server's calls/s at 16 concurrent calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _procs import cpu_seconds, free_port, read_json, start, stop, wait_until

REPO = Path(__file__).resolve().parents[1]
MODERN = "2026-07-28"
LEGACY = "2025-11-25"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
OPEN_TIER = "FREE:\n  allowed_capabilities: ['*']\n  rate_limit_requests: 1000000\n  requests_per_day: null\n"

SDK_SERVER = """
import sys, uvicorn
from mcp.server.mcpserver import MCPServer
server = MCPServer("peer")
@server.tool()
def echo(text: str) -> str:
    '''Return the text.'''
    return text
app = server.streamable_http_app(json_response=True)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
            loop="uvloop", http="httptools")
"""














class Target:
    """One server in one era: how to send the tool call, and which processes serve it."""

    def __init__(self, url: str, tool: str, era: str, auth: dict[str, str], pids: list[int]) -> None:
        self.pids = pids
        self.url = url
        self.tool = tool
        self.era = era
        self.headers = {"accept": "application/json, text/event-stream", "content-type": "application/json", **auth}

    async def open(self, client: httpx.AsyncClient) -> None:
        if self.era == MODERN:
            self.headers.update({"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": self.tool})
            return
        resp = await client.post(self.url, headers=self.headers, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
        resp.raise_for_status()
        self.headers["mcp-session-id"] = resp.headers["mcp-session-id"]
        self.headers["mcp-protocol-version"] = LEGACY
        await client.post(self.url, headers=self.headers,
                          json={"jsonrpc": "2.0", "method": "notifications/initialized"})

    def body(self, rid: int) -> bytes:
        params: dict[str, Any] = {"name": self.tool, "arguments": {"text": "hello"}}
        if self.era == MODERN:
            params["_meta"] = ENVELOPE
        return json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}).encode()


async def _measure(target: Target, concurrency: int, seconds: float) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) as client:
        await target.open(client)
        latencies: list[float] = []
        counter = iter(range(1, 1 << 62))

        async def one() -> None:
            rid = next(counter)
            start = time.perf_counter()
            resp = await client.post(target.url, headers=target.headers, content=target.body(rid))
            answer = resp.json()
            if resp.status_code != 200 or "result" not in answer or answer["result"].get("isError"):
                raise RuntimeError(f"the tool call failed: {resp.status_code} {resp.text[:200]}")
            latencies.append(time.perf_counter() - start)

        for _ in range(20):  # warm-up: connections, caches, first imports
            await one()
        latencies.clear()
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                await one()

        began = time.perf_counter()
        cpu_before = (cpu_seconds(*target.pids) or 0.0)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        cpu = (cpu_seconds(*target.pids) or 0.0) - cpu_before
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 3)

    return {"calls_per_s": round(len(latencies) / elapsed, 1), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "calls": len(latencies), "server_cpu_ms_per_call": round(cpu * 1000 / max(len(latencies), 1), 3)}


async def _run_all(targets: dict[str, Target], levels: list[int], seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, target in targets.items():
        results[name] = {}
        for level in levels:
            results[name][str(level)] = await _measure(target, level, seconds)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell (default 3)")
    parser.add_argument("--levels", default="1,16", help="concurrent in-flight calls (default 1,16)")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x.strip()]

    state = Path(tempfile.mkdtemp(prefix="bmcp", dir="/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        run_dir, config_dir = state / "run", state / "config"
        run_dir.mkdir()
        config_dir.mkdir()
        (config_dir / "licence_tiers.yaml").write_text(OPEN_TIER, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMBDO_")}
        env.update({"LLMBDO_STATE_DIR": str(state), "LLMBDO_RUN_DIR": str(run_dir),
                    "LLMBDO_CONFIG_DIR": str(config_dir), "LLMBDO_GATEWAY_PORT": "0",
                    "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)})
        echo = start(["-m", "tests.support.echo_server"], env, state / "echo.log")
        procs.append(echo)
        wait_until(lambda: (run_dir / "echo.cap.json").exists(), 60, "echo server", echo)
        gateway = start(["-m", "llmbasedos.gateway"], env, state / "gateway.log")
        procs.append(gateway)
        info = wait_until(lambda: read_json(run_dir / "gateway.json"), 60, "gateway", gateway)
        token = (state / "data" / "owner.token").read_text(encoding="utf-8").strip()
        ours = info["url"] + "/mcp"

        def routed() -> bool:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                resp = httpx.post(ours, headers={"authorization": f"Bearer {token}", "accept": "application/json",
                                                 "mcp-protocol-version": MODERN, "mcp-method": "tools/list"},
                                  json={"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                                        "params": {"_meta": ENVELOPE}}, trust_env=False)
                return any(t["name"] == "echo_say" for t in resp.json()["result"]["tools"])
            return False
        wait_until(routed, 60, "echo_say routed by the gateway", gateway)

        port = free_port()
        sdk = start(["-c", SDK_SERVER, str(port)], env, state / "sdk.log")
        procs.append(sdk)
        peer = f"http://127.0.0.1:{port}/mcp"

        def listening() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return True
            return False
        wait_until(listening, 60, "SDK MCPServer", sdk)

        import json as _j
        Path("/tmp/pf/servers.json").write_text(_j.dumps({"ours": ours, "token": token, "sdk_port": port, "gw": gateway.pid, "echo": echo.pid, "sdk": sdk.pid}))
        time.sleep(float(os.environ.get("HOLD", "120")))
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(state, ignore_errors=True)

    return 0
    ratios = {era: {str(level): round(results[f"llmbasedos_{era}"][str(level)]["calls_per_s"]
                                      / max(results[f"sdk_{era}"][str(level)]["calls_per_s"], 1e-9), 2)
                    for level in levels}
              for era in (MODERN, LEGACY)}
    cpu_ratios = {era: {str(level): round(results[f"sdk_{era}"][str(level)]["server_cpu_ms_per_call"]
                                          / max(results[f"llmbasedos_{era}"][str(level)]["server_cpu_ms_per_call"],
                                                1e-9), 2)
                        for level in levels}
                  for era in (MODERN, LEGACY)}
    top = str(max(levels))
    print(json.dumps({
        "benchmark": "mcp_http",
        "tool_call": "tools/call echo of 'hello': llmbasedos echo_say (gateway -> echo server over a UNIX socket) "
                     "vs the SDK MCPServer's in-process echo tool",
        "client": "raw httpx.AsyncClient, one process, keep-alive connections, one per in-flight call",
        "seconds_per_cell": args.seconds,
        "results": results,
        "ratio_calls_per_s_ours_over_sdk": ratios,
        # calls/s is capped by the one client process when the machine is busy; the servers' own CPU per call
        # (ours: gateway + echo server) says how far each could go with a faster client.
        "ratio_server_cpu_per_call_sdk_over_ours": cpu_ratios,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "goal": f"ours >= 5x the SDK's calls/s at {top} concurrent",
        "goal_met": all(r[top] >= 5 for r in ratios.values()),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
