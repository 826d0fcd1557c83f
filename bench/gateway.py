"""Gateway throughput and latency: a cheap fs call through `/ws` against the same call direct to the backend.

    python bench/gateway.py [--seconds 6] [--rounds 3] [--levels 1,16,64] [--batch 1]

Starts a real fs server (`mcp.fs.stat`; the test echo server's `mcp.echo.say` when the fs server cannot start)
and a real gateway (`python -m llmbasedos.gateway`, port 0) on a fresh state directory, then for each level of
concurrent in-flight calls measures calls/s, p50 and p99 through the gateway's WebSocket and directly on the
backend's UNIX socket, in the same run: the time is split into rounds that alternate between the paths.

A third path reads the ratio against a floor: the bare forwarder (`bench/forwarder.py`) is the gateway's
architecture — a uvloop process with a WebSocket in front and the backend's socket behind — doing nothing but
forwarding. `ratio_to_bare_forwarder` is the share of that floor the gateway keeps with all its work done
(auth, policy, limits, audit, metrics); on two shared cores the machine sets the floor, and its spells move it.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvloop
from _procs import cpu_seconds, read_json, start, stop, wait_until
from forwarder import whole_frames
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import WebSocketURI, parse_uri

from llmbasedos.gateway.doors.ws_frames import FINAL_TEXT, masked_text_frame
from llmbasedos.protocol.framing import NulFrameDecoder

REPO = Path(__file__).resolve().parents[1]
Caller = Callable[[str, Any], Awaitable[Any]]


class _Caller(asyncio.Protocol):
    """A lean multiplexing JSON-RPC client under an asyncio Protocol, answers resolved by id as they arrive.

    The load client shares the machine's two cores with the gateway and the backend, so it must cost far less
    per call than what it measures: websockets' own asyncio client spent about as much CPU per call as the
    gateway did. Both paths use this same client. By default each call is written when it is made, as
    independent callers would; `batch` > 1 lets the calls of one loop pass leave together, up to `batch` to a
    write (it changes the load's shape: with no cap, the in-flight calls move through the processes as one
    batch and one process works at a time).
    """

    transport: Any

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.out: list[bytes] = []

    def frame(self, message: bytes) -> bytes:
        raise NotImplementedError

    async def __call__(self, method: str, params: Any) -> Any:
        rid = next(self.ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        frame = self.frame(orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
        if self.batch == 1:
            self.transport.write(frame)
        else:
            if not self.out:
                asyncio.get_running_loop().call_soon(self._send_out)
            self.out.append(frame)
            if len(self.out) >= self.batch:
                self._send_out()
        return await fut

    def _send_out(self) -> None:
        if self.out:
            self.transport.write(b"".join(self.out) if len(self.out) > 1 else self.out[0])
            self.out.clear()

    def _answer(self, msg: Any) -> None:
        fut = self.pending.pop(msg.get("id"), None)
        if fut is not None and not fut.done():
            if "error" in msg:
                fut.set_exception(RuntimeError(msg["error"]["message"]))
            else:
                fut.set_result(msg["result"])

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the server closed the connection"))


class _NulCaller(_Caller):
    """The direct path: NUL-framed JSON-RPC on the backend's UNIX socket, read with the project's decoder."""

    def __init__(self, batch: int) -> None:
        super().__init__(batch)
        self.decoder = NulFrameDecoder()

    @classmethod
    async def open(cls, path: str, batch: int) -> _NulCaller:
        _, caller = await asyncio.get_running_loop().create_unix_connection(lambda: cls(batch), path)
        return caller

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def frame(self, message: bytes) -> bytes:
        return message + b"\0"

    def data_received(self, data: bytes) -> None:
        for frame in self.decoder.receive_data(data):
            self._answer(frame.value)

    def close(self) -> None:
        self.transport.close()


class _WsCaller(_Caller):
    """The gateway path: websockets' sans-I/O protocol for the handshake and any unusual frame, the gateway's
    own `ws_frames` for the plain text frames of calls and answers."""

    def __init__(self, uri: WebSocketURI, token: str, batch: int) -> None:
        super().__init__(batch)
        self.proto = ClientProtocol(uri, max_size=None)
        self.token = token
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.fragments: list[bytes] = []
        self.unparsed = b""  # the start of a frame that has not all arrived

    @classmethod
    async def open(cls, url: str, token: str, batch: int) -> _WsCaller:
        uri = parse_uri(url)
        _, caller = await asyncio.get_running_loop().create_connection(lambda: cls(uri, token, batch), uri.host,
                                                                       uri.port)
        await caller.opened
        return caller

    def connection_made(self, transport: Any) -> None:  # uvloop's transports are not asyncio.Transport
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = self.proto.connect()
        request.headers["Authorization"] = f"Bearer {self.token}"
        self.proto.send_request(request)
        self._flush()

    def _flush(self) -> None:
        for data in self.proto.data_to_send():
            if data:
                self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self._receive_unusual(data)  # the handshake's answer
            return
        buf = self.unparsed + data if self.unparsed else data
        rest = 0
        for first, header, end in whole_frames(buf):
            if buf[first] == FINAL_TEXT and header in (2, 4, 10) and not self.fragments:
                self._answer(orjson.loads(memoryview(buf)[first + header:end]))
            else:  # control frames, fragments: websockets' protocol, fed whole frames so it stays in step
                self._receive_unusual(buf[first:end])
            rest = end
        self.unparsed = buf[rest:]

    def _receive_unusual(self, data: bytes) -> None:
        self.proto.receive_data(data)
        for event in self.proto.events_received():
            if isinstance(event, Response):
                if self.proto.handshake_exc is not None:
                    self.opened.set_exception(self.proto.handshake_exc)
                else:
                    self.opened.set_result(None)
            elif isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                if not event.fin:
                    self.fragments.append(event.data)
                    continue
                raw = event.data
                if self.fragments:
                    raw, self.fragments = b"".join((*self.fragments, raw)), []
                self._answer(orjson.loads(raw))
        self._flush()  # pongs and close frames the protocol wants to send

    def frame(self, message: bytes) -> bytes:
        return masked_text_frame(message)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("the gateway closed the connection"))

    def close(self) -> None:
        self.proto.send_close()
        self._flush()
        self.transport.close()


@dataclass
class _Round:
    calls: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds each process spent in the round


async def _measure(call: Caller, method: str, params: Any, in_flight: int, seconds: float,
                   pids: dict[str, int]) -> _Round:
    for _ in range(50):  # warm-up
        await call(method, params)
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        perf = time.perf_counter
        while perf() < stop_at:
            t0 = perf()
            await call(method, params)
            latencies.append(perf() - t0)

    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    cpu = {name: after - before for name, before, after in ((n, cpu0[n], cpu1[n]) for n in pids)
           if before is not None and after is not None}
    return _Round(len(latencies), elapsed, latencies, cpu)


def _summary(rounds: list[_Round]) -> dict[str, Any]:
    """All rounds of one path and level together: calls/s over their total time, percentiles over all calls."""
    n = sum(r.calls for r in rounds)
    latencies = sorted(x for r in rounds for x in r.latencies)
    out: dict[str, Any] = {
        "calls": n,
        "calls_per_s": round(n / sum(r.elapsed for r in rounds), 1),
        "p50_ms": round(latencies[n // 2] * 1000, 3),
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 3),
        "rounds_calls_per_s": [round(r.calls / r.elapsed) for r in rounds],
    }
    # CPU per call of each process: what a call costs, independent of how busy the machine is.
    for name in rounds[0].cpu:
        out[f"{name}_cpu_us_per_call"] = round(sum(r.cpu.get(name, 0.0) for r in rounds) / n * 1e6, 1)
    return out


async def _run(socket_path: str, token: str, url: str, bare_port: int, method: str, params: Any,
               levels: list[int], seconds: float, rounds: int, batch: int, pids: dict[str, int]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    direct = await _NulCaller.open(socket_path, batch)
    via = await _WsCaller.open(url.replace("http://", "ws://") + "/ws", token, batch)
    bare = await _WsCaller.open(f"ws://127.0.0.1:{bare_port}/ws", token, batch)
    # The client (this process) shares the two cores with the servers: its cost per call is shown too.
    paths: list[tuple[str, _Caller, list[str]]] = [
        ("gateway_ws", via, ["gateway", "backend", "client"]),
        ("direct_socket", direct, ["backend", "client"]),
        ("bare_forwarder", bare, ["forwarder", "backend", "client"]),
    ]
    try:
        for level in levels:
            # Rounds of each path in turn, so that a slow spell of this shared machine falls on all of them.
            measured: dict[str, list[_Round]] = {name: [] for name, _, _ in paths}
            for _ in range(rounds):
                for name, caller, procs in paths:
                    measured[name].append(await _measure(caller, method, params, level, seconds / rounds,
                                                         {p: pids[p] for p in procs}))
            out = {name: _summary(r) for name, r in measured.items()}
            gw = out["gateway_ws"]["calls_per_s"]
            out["ratio_calls_per_s"] = round(gw / out["direct_socket"]["calls_per_s"], 3)
            out["ratio_to_bare_forwarder"] = round(gw / out["bare_forwarder"]["calls_per_s"], 3)
            out["bare_forwarder_ratio_calls_per_s"] = round(
                out["bare_forwarder"]["calls_per_s"] / out["direct_socket"]["calls_per_s"], 3)
            results[str(level)] = out
    finally:
        for caller in (via, direct, bare):
            caller.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per level and path")
    parser.add_argument("--rounds", type=int, default=3, help="rounds the time is split into, the paths in turn")
    parser.add_argument("--levels", default="1,16,64", help="concurrent in-flight calls, comma-separated")
    parser.add_argument("--batch", type=int, default=1,
                        help="most calls the client sends in one write, on both paths (see _Caller)")
    parser.add_argument("--backend", choices=["fs", "echo"], default="fs",
                        help="fs (mcp.fs.stat; falls back to echo if the fs server cannot start) or echo")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    state = Path(tempfile.mkdtemp(prefix="lbbench", dir="/tmp"))
    run_dir = state / "run"
    root = state / "user_files"
    root.mkdir(parents=True)
    config_dir = state / "config"
    config_dir.mkdir()
    # No licence means the FREE tier: open it to every method with a rate limit that the run cannot reach,
    # so the limiter still counts every call as it does in production.
    (config_dir / "licence_tiers.yaml").write_text(
        "FREE:\n  allowed_capabilities: ['*']\n  rate_limit_requests: 1000000\n  rate_limit_window_seconds: 60\n"
        "  requests_per_day: null\n", encoding="utf-8")
    (root / "hello.txt").write_text("hello\n", encoding="utf-8")
    env = {**os.environ, "LLMBDO_STATE_DIR": str(state), "LLMBDO_RUN_DIR": str(run_dir),
           "LLMBDO_VIRTUAL_ROOT": str(root), "LLMBDO_LOG_LEVEL": "WARNING", "LLMBDO_GATEWAY_PORT": "0",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        backend, method, params = "fs", "mcp.fs.stat", {"path": "hello.txt"}
        try:
            if args.backend != "fs":
                raise RuntimeError("echo asked for")
            proc = start(["-m", "llmbasedos.servers.fs"], env, state / "fs.log")
            procs.append(proc)
            wait_until(lambda: (run_dir / "fs.cap.json").exists(), 60, "fs server", proc)
        except RuntimeError:
            backend, method, params = "echo", "mcp.echo.say", {"text": "hello"}
            proc = start(["-m", "tests.support.echo_server"], env, state / "echo.log")
            procs.append(proc)
            wait_until(lambda: (run_dir / "echo.cap.json").exists(), 30, "echo server", proc)
        cap = read_json(run_dir / f"{backend}.cap.json")
        backend_proc = proc
        gateway = start(["-m", "llmbasedos.gateway"], env, state / "gateway.log")
        procs.append(gateway)
        endpoint = wait_until(lambda: read_json(run_dir / "gateway.json"), 60, "gateway", gateway)
        port_file = state / "forwarder.port"
        forwarder = start([str(REPO / "bench" / "forwarder.py"), cap["socket"], str(port_file)], env,
                          state / "forwarder.log")
        procs.append(forwarder)
        bare_port = int(wait_until(lambda: port_file.exists() and port_file.read_text(encoding="utf-8"), 30,
                                   "bare forwarder", forwarder))
        token_file = state / "data" / "owner.token"
        token = token_file.read_text(encoding="utf-8").strip() if token_file.exists() else "bench"
        # The client runs on uvloop too, so that it takes as little of the shared cores as it can.
        load_before = os.getloadavg()[0]
        pids = {"gateway": gateway.pid, "backend": backend_proc.pid, "forwarder": forwarder.pid, "client": os.getpid()}
        results = uvloop.run(_run(cap["socket"], token, endpoint["url"], bare_port, method, params, levels,
                                  args.seconds, args.rounds, args.batch, pids))
        at16 = results.get("16")
        out = {
            "benchmark": "gateway",
            "call": method,
            "backend": backend,
            "cores": os.cpu_count(),
            "seconds_per_measure": args.seconds,
            "rounds": args.rounds,
            "client_batch": args.batch,
            "levels": results,
            "comparison": "ratio_calls_per_s = gateway /ws calls/s divided by direct backend socket calls/s; "
                          "ratio_to_bare_forwarder = gateway /ws calls/s divided by the bare forwarder's, the same "
                          "architecture doing no work (bench/forwarder.py); bare_forwarder_ratio_calls_per_s = the "
                          "bare forwarder's calls/s divided by the direct path's",
            # Other work on the machine skews wall-clock figures; *_cpu_us_per_call do not depend on it.
            "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
        if at16 is not None:
            out["goal_at_16"] = {
                "calls_per_s_ge_5000": at16["gateway_ws"]["calls_per_s"] >= 5000,
                "ratio_ge_0.3": at16["ratio_calls_per_s"] >= 0.3,
                "p99_lt_10ms": at16["gateway_ws"]["p99_ms"] < 10,
            }
        print(json.dumps(out))
    except BaseException:
        for log in sorted(state.glob("*.log")):
            sys.stderr.write(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}\n")
        raise
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(Exception):
                stop(proc)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
