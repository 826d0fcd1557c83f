"""luca-shell's connection to the gateway: JSON-RPC over WebSocket, multiplexed, reconnecting; its calls in
flight are kept by the same CallTable as every other client's (rpc/calls.py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from llmbasedos.protocol import errors
from llmbasedos.protocol.messages import notification, request
from llmbasedos.rpc.calls import CallTable, NotificationHandler

__all__ = ["GatewayClient", "Offline"]

class Offline(errors.ServiceUnavailable):
    """The gateway cannot be reached right now."""


class GatewayClient:
    def __init__(self, url: str, token: str | None, *, max_size: int = 64 * 1024 * 1024) -> None:
        self.url = url
        self.token = token
        self.max_size = max_size
        self._ws: ClientConnection | None = None
        self._calls = CallTable()
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.last_error: str | None = None

    @property
    def online(self) -> bool:
        return self._ws is not None

    async def connect(self) -> None:
        async with self._lock:
            if self._ws is not None:
                return
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
            try:
                ws = await connect(self.url, additional_headers=headers, max_size=self.max_size,
                                   open_timeout=5, proxy=None, compression=None)
            except InvalidStatus as exc:
                status = exc.response.status_code
                self.last_error = {401: "the gateway refused the token (401)",
                                   403: "the gateway refused this client (403)"}.get(status, f"HTTP {status}")
                raise Offline(self.last_error) from None
            except (TimeoutError, OSError, InvalidHandshake, InvalidURI) as exc:
                self.last_error = f"cannot reach {self.url}: {exc.__class__.__name__}"
                raise Offline(self.last_error) from None
            self._ws = ws
            self.last_error = None
            self._reader = asyncio.get_running_loop().create_task(self._read_loop(ws))

    async def _read_loop(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                try:
                    value = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                self._calls.deliver(value)
        except ConnectionClosed:
            pass
        finally:
            if self._ws is ws:
                self._ws = None
            self._calls.fail_all(Offline("connection to the gateway was lost"))

    async def call(self, method: str, params: Any = None, *,
                   on_notification: NotificationHandler | None = None) -> Any:
        if self._ws is None:
            await self.connect()
        ws = self._ws
        assert ws is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        rid = self._calls.open(fut, on_notification)
        try:
            await ws.send(orjson.dumps(request(rid, method, params)).decode())
            return await fut
        except ConnectionClosed:
            raise Offline("connection to the gateway was lost") from None
        except asyncio.CancelledError:
            # Ctrl-C: tell the gateway to stop the work, not just stop waiting for it.
            with contextlib.suppress(Exception):
                await ws.send(orjson.dumps(notification("mcp.cancel", {"id": rid})).decode())
            raise
        finally:
            self._calls.forget(rid)

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
