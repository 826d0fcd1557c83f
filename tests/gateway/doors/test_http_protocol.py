"""CorkedTransport on a real socket pair: writes of one loop turn leave together, in order; close sends
what is pending, abort drops it."""

from __future__ import annotations

import asyncio
import socket

from llmbasedos.gateway.doors.http_protocol import CorkedTransport


async def _pair() -> tuple[asyncio.Transport, socket.socket]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    return transport, theirs


async def _read_all(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    chunks = []
    while True:
        data = await loop.sock_recv(sock, 65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


async def test_writes_of_one_turn_are_held_until_the_turn_ends_then_sent_in_order() -> None:
    transport, peer = await _pair()
    corked = CorkedTransport(transport, asyncio.get_running_loop())
    corked.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    corked.write(memoryview(b"hello"))
    corked.write(b"")
    assert corked.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
    await asyncio.sleep(0)  # the turn ends: one write to the real transport
    assert corked.get_write_buffer_size() == transport.get_write_buffer_size()
    corked.write(b"second")
    corked.close()  # pending bytes go out before the close
    assert await _read_all(peer) == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhellosecond"
    assert corked.is_closing()  # everything else reaches the real transport
    peer.close()


async def test_abort_drops_what_is_pending() -> None:
    transport, peer = await _pair()
    corked = CorkedTransport(transport, asyncio.get_running_loop())
    corked.write(b"never sent")
    corked.abort()
    assert await _read_all(peer) == b""
    peer.close()
