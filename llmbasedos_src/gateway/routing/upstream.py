"""The upstream pool: one persistent, multiplexed connection per backend service.

A connection is opened on first use (or when discovery announces the service), reopened with exponential
backoff when the backend goes away, and shared by every call to that service. Calls in flight when the
backend dies fail with ServiceUnavailable; calls made while it is down fail fast with the same error instead of
waiting, so a dead or slow backend never holds up calls to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast

from llmbasedos.gateway.routing.deadlines import Deadlines, Waiter
from llmbasedos.protocol import errors
from llmbasedos.protocol.framing import DEFAULT_MAX_FRAME
from llmbasedos.rpc.calls import NotificationHandler
from llmbasedos.rpc.client import RPCClient
from llmbasedos.rpc.gathered_writes import GatheredWrites
from llmbasedos.rpc.read_scope import READS
from llmbasedos.rpc.write_gate import WriteGate

__all__ = ["Upstream", "UpstreamPool", "Waiter"]

log = logging.getLogger("llmbasedos.gateway.routing.upstream")

_FIRST_BACKOFF = 0.05
_HIGH_WATER = 1 << 20
_MAX_BACKOFF = 2.0


class _UpstreamConnection(GatheredWrites, asyncio.Protocol):
    """The socket under an upstream's RPCClient: its `Writer` (see rpc/client.py), in place of a StreamWriter.

    Bytes in go to the client from `data_received`, with no read-loop task to wake per read. Frames out that
    are written during one turn of the event loop leave in one write, so many calls in flight cost a couple of
    system calls (and wake-ups of the backend) per turn instead of one each.
    """

    def __init__(self) -> None:
        self.start_gathering(asyncio.get_running_loop())
        self._client: RPCClient | None = None
        self._early: list[bytes] = []  # bytes that came before the client was attached
        self._gate = WriteGate(self._loop)
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made

    def attach(self, client: RPCClient) -> None:
        self._client = client
        for data in self._early:
            client.feed(data)
        self._early.clear()
        if self._closed.done():
            client.lost()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not registered as a Transport
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        if self._client is None:
            self._early.append(data)
        else:
            with READS:  # the answers' writes to clients leave when this read is handled
                self._client.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)
        self._gate.open()
        if self._client is not None:
            self._client.lost()

    def pause_writing(self) -> None:
        self._gate.close()

    def resume_writing(self) -> None:
        self._gate.open()

    # -- the StreamWriter side the client uses

    def write(self, data: bytes) -> None:
        # Every frame waits for the end of the read being handled (READS) or else of this pass of the event
        # loop, so the calls that one read or all the ready tasks make leave in one write. Sending the first
        # frame at once cost a system call per call under load, since most reads and passes start one.
        self.gather(data)

    def send_gathered(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # connection_lost fails the calls waiting for answers
        try:
            self.transport.write(data)
        except (OSError, RuntimeError):
            self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    async def drain(self) -> None:
        self.flush()
        await self._gate.wait()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)


async def _connect_client(path: str, max_frame: int) -> RPCClient:
    try:
        _, conn = await asyncio.get_running_loop().create_unix_connection(_UpstreamConnection, path)
    except (OSError, ValueError) as exc:
        raise errors.ServiceUnavailable("Cannot connect to the service socket") from exc
    client = RPCClient(None, conn, max_frame=max_frame)
    conn.attach(client)
    return client


class Upstream:
    """The gateway's connection to one backend service."""

    def __init__(self, service: str, socket_path: str, *, max_frame: int = DEFAULT_MAX_FRAME,
                 deadlines: Deadlines | None = None) -> None:
        self.service = service
        self.socket_path = socket_path
        self.max_frame = max_frame
        self.state = "idle"  # idle -> connecting -> up <-> down; closed at the end
        self.in_flight = 0
        self.calls = 0
        self._client: RPCClient | None = None
        self._connecting: asyncio.Task[RPCClient] | None = None
        self._backoff = 0.0
        self._retry_at = 0.0
        self._closed = False
        self._retiring = False
        self._reconnect: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._deadlines = deadlines or Deadlines()
        self.watched = False  # by the deadlines' sweep, for the waiters `send` puts in flight
        self._awaited = 0  # calls in flight through `call`, whose answers reach their tasks a loop pass later

    # -- calls ---------------------------------------------------------------------------------------

    async def call(self, method: str, params: Any, *, timeout: float | None,
                   on_notification: NotificationHandler | None = None, caller: dict[str, Any] | None = None) -> Any:
        client = self._client
        if client is None or client.closed.is_set():
            client = await self._ensure()
        self.in_flight += 1
        self.calls += 1
        self._awaited += 1
        deadlines = self._deadlines if timeout is not None else None
        key = deadlines.add(timeout) if deadlines is not None and timeout is not None else 0
        try:
            return await client.call(method, params, on_notification=on_notification, caller=caller)
        except asyncio.CancelledError:
            if deadlines is not None and deadlines.done(key):
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                raise errors.Timeout(f"{method} timed out after {timeout:g} s") from None
            raise
        except (OSError, RuntimeError) as exc:
            # The socket broke under the write (the backend died): the same answer as for calls in flight.
            raise errors.ServiceUnavailable(f"Service {self.service!r} is unavailable") from exc
        finally:
            self._awaited -= 1
            self._ended(key)

    @property
    def ready(self) -> bool:
        """Connected, not behind on writing, and no call in flight through `call`: `send` would put a call on
        the wire now, and its answer would not overtake theirs. (A call sent by `send` is answered in the read
        callback; one awaited in `call` only when its task next runs. Once calls fall back to `call`, the
        following ones do too until those are over, so that a client gets its answers in the order it asked.)"""
        client = self._client
        return not self._awaited and client is not None and not client.closed.is_set() and not client.backlogged

    def hold(self) -> None:
        """`ready` turned a call away and it is about to start in a task: until it has (its task counts itself
        in `call` in this pass's ready callbacks, which run before any further read), `ready` says no, so that
        no call read meanwhile is sent ahead of it."""
        self._awaited += 1
        asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        self._awaited -= 1

    def send(self, waiter: Waiter, method: str, params: Any, *,
             caller: dict[str, Any] | None = None) -> tuple[RPCClient, int]:
        """Put a call on the wire now, without a task: `waiter` gets the answer and the call's notifications.
        Only once `ready` said yes; otherwise `call` must be used (it waits for a connection or for the backend
        to catch up).

        Past `waiter.deadline` its `expire` is called; the owner then cancels and ends the call itself. Returns
        the connection and request id the call went out on: the owner passes them to `ended` when the call is
        over, and to the connection's `cancel` to tell the backend to stop.
        """
        client = self._client
        if client is None:
            raise errors.ServiceUnavailable(f"Service {self.service!r} is unavailable")
        try:
            rid = client.send(method, params, waiter, caller)
        except (OSError, RuntimeError) as exc:
            raise errors.ServiceUnavailable(f"Service {self.service!r} is unavailable") from exc
        self.in_flight += 1
        self.calls += 1
        if not self.watched:
            self.watched = True
            self._deadlines.watch(self)
        return client, rid

    def ended(self, client: RPCClient, rid: int) -> None:
        """A call `send` put in flight is over (answered, failed, cancelled or expired)."""
        client.forget(rid)
        self._ended(0)

    def waiters(self) -> list[Waiter]:
        """The calls `send` put in flight on the current connection, oldest first."""
        client = self._client
        if client is None:
            return []
        # The waiters carry a deadline; the futures of `call` (awaited in tasks) do not.
        return [cast(Waiter, w) for w in client.in_flight() if hasattr(w, "deadline")]

    def _ended(self, key: int) -> None:
        if key:
            self._deadlines.done(key)
        self.in_flight -= 1
        if self._retiring and self.in_flight == 0:
            self._spawn(self.close())

    # -- connection management -----------------------------------------------------------------------

    async def _ensure(self) -> RPCClient:
        if self._closed:
            raise errors.ServiceUnavailable(f"Service {self.service!r} is not available")
        if self._connecting is None:
            if time.monotonic() < self._retry_at:
                raise errors.ServiceUnavailable(f"Service {self.service!r} is unavailable (reconnecting)")
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        # Shielded: a caller that gives up must not abort the attempt the others are waiting on.
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> RPCClient:
        self.state = "connecting"
        try:
            client = await _connect_client(self.socket_path, self.max_frame)
        except errors.ServiceUnavailable:
            self._backoff = min(max(_FIRST_BACKOFF, self._backoff * 2), _MAX_BACKOFF)
            self._retry_at = time.monotonic() + self._backoff
            if self.state != "down":
                log.warning("service %s is unreachable; retrying with backoff", self.service)
            self.state = "down"
            self._schedule_reconnect()
            raise errors.ServiceUnavailable(f"Service {self.service!r} is unavailable") from None
        finally:
            self._connecting = None
        if self._closed:
            await client.close()
            raise errors.ServiceUnavailable(f"Service {self.service!r} is not available")
        self._client = client
        self._backoff = 0.0
        self._retry_at = 0.0
        self.state = "up"
        log.info("connected to service %s", self.service)
        self._spawn(self._watch(client))
        return client

    async def _watch(self, client: RPCClient) -> None:
        await client.closed.wait()
        if self._client is client:
            self._client = None
        if not self._closed:
            log.warning("lost the connection to service %s", self.service)
            self.state = "down"
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._closed or (self._reconnect is not None and not self._reconnect.done()):
            return
        self._reconnect = self._spawn(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        while not self._closed and (self._client is None or self._client.closed.is_set()):
            await asyncio.sleep(max(self._retry_at - time.monotonic(), _FIRST_BACKOFF))
            if self._closed or self._connecting is not None:
                continue
            with contextlib.suppress(errors.ServiceUnavailable):
                await self._ensure()

    def kick(self) -> None:
        """The backend announced itself again (its capability file was rewritten): retry now."""
        self._backoff = 0.0
        self._retry_at = 0.0
        if self._closed:
            return
        if self._client is None or self._client.closed.is_set():
            self._spawn(self._try_connect())

    async def _try_connect(self) -> None:
        with contextlib.suppress(errors.ServiceUnavailable):
            await self._ensure()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def retire(self) -> None:
        """Stop taking new calls; let the ones in flight finish, then close."""
        self._retiring = True
        if self.in_flight == 0:
            self._spawn(self.close())

    async def close(self) -> None:
        self._closed = True
        self.state = "closed"
        client, self._client = self._client, None
        if self._reconnect is not None:
            self._reconnect.cancel()
        if client is not None:
            await client.close()


class UpstreamPool:
    """Upstreams by service name."""

    def __init__(self, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._by_service: dict[str, Upstream] = {}
        self._deadlines = Deadlines()

    def get(self, service: str) -> Upstream | None:
        return self._by_service.get(service)

    def ensure(self, service: str, socket_path: str) -> Upstream:
        """The upstream for `service` at `socket_path`, replacing one that pointed elsewhere."""
        current = self._by_service.get(service)
        if current is not None and current.socket_path == socket_path and current.state != "closed":
            current.kick()
            return current
        if current is not None:
            current.retire()
        upstream = Upstream(service, socket_path, max_frame=self.max_frame, deadlines=self._deadlines)
        self._by_service[service] = upstream
        upstream.kick()
        return upstream

    def remove(self, service: str) -> None:
        upstream = self._by_service.pop(service, None)
        if upstream is not None:
            upstream.retire()

    def snapshot(self) -> list[tuple[str, str, int]]:
        return [(u.service, u.state, u.in_flight) for u in self._by_service.values()]

    def all(self) -> list[Upstream]:
        return list(self._by_service.values())

    async def close(self) -> None:
        ups, self._by_service = list(self._by_service.values()), {}
        for u in ups:
            await u.close()
