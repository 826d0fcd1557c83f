"""Standard MCP over Streamable HTTP: llmbasedos `/mcp` against the official SDK's own MCPServer.

    python bench/mcp_http.py [--seconds 3] [--levels 1,16] [--rounds 3]

Starts, in the same run, a real gateway (`python -m llmbasedos.gateway`, port 0) with the echo test server
behind it, and the official MCP Python SDK's `MCPServer` (mcp.server.mcpserver) serving one `echo` tool over
Streamable HTTP with uvicorn. Both are driven by the same lean HTTP/1.1 client doing the same small tool call
(`tools/call` of an echo of a short text) in each era: 2026-07-28 (stateless `_meta` envelope and routing
headers) and 2025-11-25 (one initialized session). For each level of concurrent in-flight calls it measures
calls/s, p50 and p99 (median of several rounds taken in turns), and prints one JSON object with the ratios
ours/SDK. Goal: at least 5 times the SDK server's calls/s at 16 concurrent calls.
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
from urllib.parse import urlsplit

import httptools
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


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time, responses parsed by httptools (llhttp).

    The load client has to be far cheaper than the servers it measures: both share this machine's cores, and
    a general-purpose client (httpx) spent more CPU per call than our server did, so every figure was the
    client's. The same client drives both servers.
    """

    def __init__(self) -> None:
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, dict[bytes, bytes], bytes]] | None = None
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        _, conn = await asyncio.get_running_loop().create_connection(cls, host, port)
        return conn

    def connection_made(self, transport: Any) -> None:  # uvloop's transports are not asyncio.Transport
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the server closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.waiter is not None
        self.waiter.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body)))

    async def request(self, data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        assert self.transport is not None
        self.headers, self.body = {}, []
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Target:
    """One server in one era: the bytes of its tool call, and which processes serve it."""

    def __init__(self, url: str, tool: str, era: str, auth: dict[str, str], pids: list[int]) -> None:
        self.pids = pids
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        self.tool = tool
        self.era = era
        self.headers = {"host": f"{self.host}:{self.port}", "accept": "application/json, text/event-stream",
                        "content-type": "application/json", **auth}

    def raw(self, body: bytes) -> bytes:
        head = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        return f"POST {self.path} HTTP/1.1\r\n{head}content-length: {len(body)}\r\n\r\n".encode() + body

    async def open(self) -> None:
        """Modern era: set the routing headers. Session era: one initialized session for all connections."""
        if self.era == MODERN:
            self.headers.update({"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": self.tool})
            return
        conn = await HttpConnection.open(self.host, self.port)
        try:
            status, headers, body = await conn.request(self.raw(json.dumps({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": LEGACY, "capabilities": {},
                           "clientInfo": {"name": "bench", "version": "1"}}}).encode()))
            if status != 200 or b"mcp-session-id" not in headers:
                raise RuntimeError(f"initialize failed: {status} {body[:200]!r}")
            self.headers["mcp-session-id"] = headers[b"mcp-session-id"].decode()
            self.headers["mcp-protocol-version"] = LEGACY
            await conn.request(self.raw(b'{"jsonrpc":"2.0","method":"notifications/initialized"}'))
        finally:
            conn.close()

    def call(self, rid: int) -> bytes:
        params: dict[str, Any] = {"name": self.tool, "arguments": {"text": "hello"}}
        if self.era == MODERN:
            params["_meta"] = ENVELOPE
        return self.raw(json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}).encode())


async def _measure(target: Target, concurrency: int, seconds: float) -> dict[str, float]:
    conns = [await HttpConnection.open(target.host, target.port) for _ in range(concurrency)]
    latencies: list[float] = []
    counter = iter(range(1, 1 << 62))

    async def one(conn: HttpConnection) -> None:
        start = time.perf_counter()
        status, _, body = await conn.request(target.call(next(counter)))
        answer = json.loads(body)
        if status != 200 or "result" not in answer or answer["result"].get("isError"):
            raise RuntimeError(f"the tool call failed: {status} {body[:200]!r}")
        latencies.append(time.perf_counter() - start)

    try:
        for conn in conns:  # warm-up: first use of every connection, caches
            await one(conn)
        latencies.clear()
        stop_at = time.perf_counter() + seconds

        async def worker(conn: HttpConnection) -> None:
            while time.perf_counter() < stop_at:
                await one(conn)

        began = time.perf_counter()
        cpu_before = (cpu_seconds(*target.pids) or 0.0)
        await asyncio.gather(*(worker(c) for c in conns))
        elapsed = time.perf_counter() - began
        cpu = (cpu_seconds(*target.pids) or 0.0) - cpu_before
    finally:
        for conn in conns:
            conn.close()
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 3)

    return {"calls_per_s": round(len(latencies) / elapsed, 1), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "calls": len(latencies), "server_cpu_ms_per_call": round(cpu * 1000 / max(len(latencies), 1), 3)}


async def _run_all(targets: dict[str, Target], levels: list[int], seconds: float, rounds: int) -> dict[str, Any]:
    """Every cell measured `rounds` times, the cells taking turns so a busy moment of the machine falls on
    all of them alike; each cell keeps its median round."""
    for target in targets.values():
        await target.open()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {name: {str(lv): [] for lv in levels} for name in targets}
    for level in levels:
        for _ in range(rounds):
            for name, target in targets.items():
                runs[name][str(level)].append(await _measure(target, level, seconds))
    return {name: {lv: {**sorted(cell, key=lambda r: r["calls_per_s"])[len(cell) // 2], "rounds": len(cell)}
                   for lv, cell in by_level.items()}
            for name, by_level in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell (default 3)")
    parser.add_argument("--levels", default="1,16", help="concurrent in-flight calls (default 1,16)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cell, the median is kept (default 3)")
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

        auth = {"authorization": f"Bearer {token}"}
        targets = {
            f"llmbasedos_{MODERN}": Target(ours, "echo_say", MODERN, auth, [gateway.pid, echo.pid]),
            f"sdk_{MODERN}": Target(peer, "echo", MODERN, {}, [sdk.pid]),
            f"llmbasedos_{LEGACY}": Target(ours, "echo_say", LEGACY, auth, [gateway.pid, echo.pid]),
            f"sdk_{LEGACY}": Target(peer, "echo", LEGACY, {}, [sdk.pid]),
        }
        try:
            import uvloop

            results = uvloop.run(_run_all(targets, levels, args.seconds, args.rounds))
        except ImportError:
            results = asyncio.run(_run_all(targets, levels, args.seconds, args.rounds))
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(state, ignore_errors=True)

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
        "client": "one process: asyncio + httptools, keep-alive HTTP/1.1 connections, one per in-flight call",
        "rounds_per_cell": args.rounds,
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
