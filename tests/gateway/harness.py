"""Helpers for the gateway tests: a real gateway process on port 0, real backends, real clients.

    gw = start_gateway()                       # python -m llmbasedos.gateway on a fresh state dir
    echo = start_backend("echo")               # tests.support.echo_server in the gateway's run dir
    async with WsClient.connect(gw.ws_url, token=gw.token) as c:
        await c.call("mcp.echo.say", {"text": "hi"})
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from llmbasedos.gateway.app import create_app
from llmbasedos.gateway.config import GatewayConfig
from llmbasedos.gateway.policy.tokens import TokenStore
from llmbasedos.protocol import errors
from llmbasedos.protocol.framing import NulFrameDecoder, encode_frame
from llmbasedos.settings import Settings
from tests.support.procs import ServerHandle, start_server

REPO = Path(__file__).resolve().parents[2]
BACKENDS = {"echo": "tests.support.echo_server", "twin": "tests.gateway.twin_server"}

# Tests run with no licence, so the FREE tier: open it to every method; limits stay out of reach unless a
# test's own tier sets them.
OPEN_FREE_TIER = (
    "FREE:\n"
    "  allowed_capabilities: ['*']\n"
    "  rate_limit_requests: 100000\n"
    "  requests_per_day: null\n"
)


async def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `predicate()` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


class GatewayProcess:
    """`python -m llmbasedos.gateway` on a state dir; `.url`, `.ws_url`, `.token`, `.socket`."""

    def __init__(self, state: Path, env: dict[str, str]) -> None:
        self.state = state
        self.env = env
        self.run_dir = state / "run"
        self.data_dir = state / "data"
        self.log_path = state / f"gateway.{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        endpoint = self.run_dir / "gateway.json"
        with contextlib.suppress(FileNotFoundError):
            endpoint.unlink()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "llmbasedos.gateway"], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(REPO))
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = json.loads(endpoint.read_text(encoding="utf-8"))
                if info.get("pid") == self.proc.pid:
                    break
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gateway did not start within {timeout:g} s:\n{self.output()}")
            time.sleep(0.02)
        self.url = info["url"]
        self.port = info["port"]
        return self

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    @property
    def socket(self) -> Path:
        return self.run_dir / "gateway.sock"

    @property
    def token(self) -> str:
        return (self.data_dir / "owner.token").read_text(encoding="utf-8").strip()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def create_token(self, name: str, tier: str | None = None, allow: tuple[str, ...] = ("*",)) -> str:
        return self.create_client(name, tier, allow)[1]

    def create_client(self, name: str, tier: str | None = None, allow: tuple[str, ...] = ("*",)) -> tuple[str, str]:
        """A new client: (its id, its token)."""
        store = TokenStore(self.data_dir / "gateway.db")
        try:
            record, token = store.create(name, tier, allow)
        finally:
            store.close()
        return record.id, token

    def revoke_token(self, name: str) -> None:
        store = TokenStore(self.data_dir / "gateway.db")
        try:
            store.revoke(name)
        finally:
            store.close()


class Env:
    """A fresh short state dir, with the processes started in it; everything is stopped at the end."""

    def __init__(self) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="gw", dir="/tmp"))
        self.run_dir = self.state / "run"
        self.config_dir = self.state / "config"
        for d in (self.run_dir, self.config_dir):
            d.mkdir(parents=True)
        (self.config_dir / "licence_tiers.yaml").write_text(OPEN_FREE_TIER, encoding="utf-8")
        self.env = {**os.environ, "LLMBDO_STATE_DIR": str(self.state), "LLMBDO_RUN_DIR": str(self.run_dir),
                    "LLMBDO_CONFIG_DIR": str(self.config_dir), "LLMBDO_GATEWAY_PORT": "0",
                    "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        for key in ("LLMBDO_DATA_DIR", "LLMBDO_LOG_DIR", "LLMBDO_VIRTUAL_ROOT", "LLMBDO_GATEWAY_HOST",
                    "LLMBDO_GATEWAY_ALLOW_REMOTE", "LLMBDO_CALL_TIMEOUT", "LLMBDO_ALLOWED_ORIGINS",
                    "LLMBDO_TIERS_FILE", "LLMBDO_LICENCE_PUBKEY", "LLMBDO_MAX_FRAME", "LLMBDO_GATEWAY_SOCKET"):
            self.env.pop(key, None)
        self.gateways: list[GatewayProcess] = []
        self.backends: list[ServerHandle] = []

    def set_tiers(self, text: str) -> None:
        (self.config_dir / "licence_tiers.yaml").write_text(text, encoding="utf-8")

    def start_gateway(self, **env: str) -> GatewayProcess:
        gw = GatewayProcess(self.state, {**self.env, **env})
        self.gateways.append(gw)
        return gw.start()

    def start_backend(self, name: str = "echo", **env: str) -> ServerHandle:
        handle = start_server(name, {**self.env, **env}, module=BACKENDS[name])
        self.backends.append(handle)
        return handle

    def close(self) -> None:
        for handle in reversed(self.backends):
            handle.stop()
        for gw in reversed(self.gateways):
            gw.stop()
        shutil.rmtree(self.state, ignore_errors=True)


class WsClient:
    """A multiplexing JSON-RPC client over the gateway's WebSocket, for tests.

    Answers to `call` resolve its future; everything else (notifications, answers with id null, batch answers)
    lands in `inbox`. Notifications are also kept in `notifications`.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[Any, asyncio.Future[Any]] = {}
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.notifications: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str, token: str | None = None, *, origin: str | None = None,
                      query_token: bool = True, headers: dict[str, str] | None = None) -> AsyncIterator[WsClient]:
        extra = dict(headers or {})
        if token is not None and query_token:
            url = f"{url}?token={token}"
        elif token is not None:
            extra["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {"additional_headers": extra, "max_size": None, "open_timeout": 20}
        if origin is not None:
            kwargs["origin"] = origin
        async with ws_connect(url, **kwargs) as ws:
            client = cls(ws)
            try:
                yield client
            finally:
                client._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await client._reader

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = orjson.loads(raw)
                if isinstance(msg, dict) and "method" in msg and "id" not in msg:
                    self.notifications.append(msg)
                fut = self.pending.pop(msg.get("id"), None) if isinstance(msg, dict) else None
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                else:
                    self.inbox.put_nowait(msg)
        except Exception:
            pass
        finally:
            self.closed.set()
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("the gateway closed the connection"))

    async def request(self, method: str, params: Any = None, *, rid: Any = None) -> dict[str, Any]:
        """Send one request and return the whole answer message."""
        if rid is None:
            rid = next(self.ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        await self.ws.send(orjson.dumps(msg).decode())
        return await asyncio.wait_for(fut, 60)  # type: ignore[no-any-return]

    async def call(self, method: str, params: Any = None) -> Any:
        answer = await self.request(method, params)
        if "error" in answer:
            raise errors.from_error_object(answer["error"])
        return answer["result"]

    async def send(self, value: Any) -> None:
        await self.ws.send(value if isinstance(value, (str, bytes)) else orjson.dumps(value).decode())

    async def next_message(self, timeout: float = 20.0) -> Any:
        return await asyncio.wait_for(self.inbox.get(), timeout)


class UnixClient:
    """Raw NUL-framed client of gateway.sock: send any bytes, read decoded frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = NulFrameDecoder()
        self.frames: list[Any] = []

    @classmethod
    async def open(cls, path: Path) -> UnixClient:
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, value: Any) -> None:
        await self.send_raw(encode_frame(value))

    async def next_message(self, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while not self.frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message from gateway.sock")
            data = await asyncio.wait_for(self.reader.read(1 << 16), remaining)
            if not data:
                raise ConnectionError("gateway.sock closed the connection")
            for frame in self.decoder.receive_data(data):
                self.frames.append(frame.value if frame.error is None else {"decode_error": frame.error.message})
        return self.frames.pop(0)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def stock_uvicorn() -> AsyncIterator[tuple[Path, int]]:
    """The gateway's app in this process under uvicorn's own WebSocket protocol (no direct lane), on a free
    loopback port, with its own state dir: yields (state dir, port)."""
    state = Path(tempfile.mkdtemp(prefix="gwstock", dir="/tmp"))
    (state / "config").mkdir()
    (state / "config" / "licence_tiers.yaml").write_text(OPEN_FREE_TIER, encoding="utf-8")
    settings = Settings(state_dir=state, run_dir=state / "run", data_dir=state / "data", log_dir=state / "logs",
                        config_dir=state / "config", virtual_root=state / "files")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings, GatewayConfig(port=0)), ws="websockets-sansio",
                                           lifespan="on", log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until(lambda: server.started, what="uvicorn to start")
        yield state, sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 20)
        sock.close()
        shutil.rmtree(state, ignore_errors=True)

