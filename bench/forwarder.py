"""The bare forwarder: the least a Python process between a WebSocket client and a backend can do per call.

    python bench/forwarder.py BACKEND_SOCKET PORT_FILE

`bench/gateway.py` measures it as a third path beside the gateway and the direct socket, so that its ratio
has a floor to be read against: this is the gateway's architecture (one uvloop process, WebSocket on loopback
TCP in front, one multiplexed NUL-framed UNIX socket behind) with none of its work. It does only what any
JSON-RPC multiplexer must: parse each call to give it an id unique on the backend connection, and parse each
answer to give it back the client's id. No authentication, policy, limits, audit, metrics, timeouts or flow
control: it is a measuring instrument, not a door, and it listens on loopback only.

It writes the port it listens on to PORT_FILE once it is ready.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import uvloop
from websockets.http11 import Request
from websockets.server import ServerProtocol

from llmbasedos.gateway.doors.ws_frames import FINAL_TEXT, apply_mask, frame_extent, text_frame


def whole_frames(buf: bytes) -> Iterator[tuple[int, int, int]]:
    """(start, header length, end) of each whole WebSocket frame at the front of `buf`, in order; what follows
    the last one is a frame still arriving. The bench's client reads its answers with it too."""
    pos, end = 0, len(buf)
    while (extent := frame_extent(buf, pos, end)) is not None and pos + extent[0] + extent[1] <= end:
        stop = pos + extent[0] + extent[1]
        yield pos, extent[0], stop
        pos = stop


class _Backend(asyncio.Protocol):
    """The one connection to the backend, shared by every client; answers go back by the id they were sent
    under. What one read brings is written to each client it concerns in one write, as the gateway does."""

    transport: Any

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.unparsed = b""
        self.waiting: dict[int, tuple[_Client, Any]] = {}
        self.last_id = 0
        self.out: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def forward(self, client: _Client, message: dict[str, Any]) -> None:
        self.last_id += 1
        self.waiting[self.last_id] = (client, message["id"])
        message["id"] = self.last_id
        self.out.append(orjson.dumps(message) + b"\0")

    def flush(self) -> None:
        if self.out:
            self.transport.write(b"".join(self.out))
            self.out.clear()

    def data_received(self, data: bytes) -> None:
        frames = (self.unparsed + data if self.unparsed else data).split(b"\0")
        self.unparsed = frames.pop()
        touched: set[_Client] = set()
        for frame in frames:
            answer = orjson.loads(frame)
            entry = self.waiting.pop(answer.get("id"), None)
            if entry is None:
                continue  # a notification: nobody asked the forwarder to relay those
            client, client_id = entry
            answer["id"] = client_id
            client.out.append(text_frame(orjson.dumps(answer)))
            touched.add(client)
        for client in touched:
            client.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Client(asyncio.Protocol):
    """One WebSocket client: websockets' sans-I/O protocol for the handshake, then plain text frames only."""

    transport: Any

    def __init__(self, backend: _Backend) -> None:
        self.backend = backend
        self.handshake = ServerProtocol(max_size=None)
        self.open = False
        self.unparsed = b""
        self.out: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def flush(self) -> None:
        if self.out and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.handshake.receive_data(data)
            for request in self.handshake.events_received():
                if isinstance(request, Request):
                    self.handshake.send_response(self.handshake.accept(request))
                    self.open = True
            for chunk in self.handshake.data_to_send():
                self.transport.write(chunk)
            return
        buf = self.unparsed + data if self.unparsed else data
        rest = 0
        for start, header, stop in whole_frames(buf):
            if buf[start] != FINAL_TEXT or header < 6:  # anything but a masked text frame: this is not a door
                self.transport.close()
                return
            key = buf[start + header - 4:start + header]
            self.backend.forward(self, orjson.loads(apply_mask(buf[start + header:stop], key)))
            rest = stop
        self.unparsed = buf[rest:]
        self.backend.flush()


async def _serve(backend_socket: str, port_file: Path) -> None:
    loop = asyncio.get_running_loop()
    _, backend = await loop.create_unix_connection(_Backend, backend_socket)
    server = await loop.create_server(lambda: _Client(backend), "127.0.0.1", 0)
    staged = port_file.with_suffix(".part")
    staged.write_text(str(server.sockets[0].getsockname()[1]), encoding="utf-8")
    staged.rename(port_file)  # whole or absent: the bench polls for it
    await backend.closed  # until the backend goes away, or the process is ended


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__.splitlines()[2].strip())
    uvloop.run(_serve(sys.argv[1], Path(sys.argv[2])))


if __name__ == "__main__":
    main()
