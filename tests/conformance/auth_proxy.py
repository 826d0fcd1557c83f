"""A loopback TCP proxy that adds `Authorization: Bearer <token>` to HTTP requests that carry no credential.

Why: some checks of the conformance suite open raw HTTP requests with only the URL's path (they drop the
query string), so `/mcp?token=...` loses its token there. Requests that keep the query string, or carry their
own Authorization header, pass unchanged. Everything else is relayed byte for byte, both ways, so the gateway
sees the suite's requests (Host and Origin headers included) exactly as sent.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["AuthProxy"]

_MAX_HEAD = 1 << 16


class AuthProxy:
    def __init__(self, upstream_host: str, upstream_port: int, token: str) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.header = f"Authorization: Bearer {token}\r\n".encode()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> AuthProxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        back = asyncio.get_running_loop().create_task(self._pipe(up_reader, writer))
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    break
                if len(head) > _MAX_HEAD:
                    break
                up_writer.write(self._with_credential(head))
                await self._relay_body(head, reader, up_writer)
                await up_writer.drain()
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(back, 5)
            writer.close()

    def _with_credential(self, head: bytes) -> bytes:
        request_line, _, rest = head.partition(b"\r\n")
        lower = rest.lower()
        if b"token=" in request_line or b"\r\nauthorization:" in b"\r\n" + lower:
            return head
        return request_line + b"\r\n" + self.header + rest

    @staticmethod
    async def _relay_body(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            while True:
                size_line = await reader.readuntil(b"\r\n")
                writer.write(size_line)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                writer.write(await reader.readexactly(size + 2))
                if size == 0:
                    return
        for line in lower.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1].strip())
                if length:
                    writer.write(await reader.readexactly(length))
                return

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
