"""The local front door: `<run dir>/gateway.sock`, NUL-framed JSON-RPC, same dialect as `/ws`.

Trust comes from the file system: the socket is created 0660, so only the owner (and the group) can connect,
and every connection acts with the owner's identity — unless a request names another client in its top-level
`"caller": {"client_id"}` member, which the agent uses to act for the client that started a workflow with
that client's rights (an unknown or revoked id is refused). `"caller": {"run"}` names the agent's execution
making the call; it is passed on to the backend in the forwarded `caller`, so the agent knows a run started
by a run (and bounds them). Only this door reads it: a /ws client cannot claim to be a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmbasedos.protocol.framing import NulFrameDecoder, encode_answer

if TYPE_CHECKING:
    from llmbasedos.gateway.doors.host import DoorHost

__all__ = ["UnixDoor", "GatewayAlreadyRunning"]

log = logging.getLogger("llmbasedos.gateway.unix")

_HIGH_WATER = 1 << 20


class GatewayAlreadyRunning(RuntimeError):
    """Another gateway answers on the socket path."""


def _is_live(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


class UnixDoor:
    def __init__(self, gateway: DoorHost, path: Path, *, max_frame: int) -> None:
        self.gateway = gateway
        self.path = path
        self.max_frame = max_frame
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if _is_live(self.path):
                raise GatewayAlreadyRunning(f"another gateway is listening on {self.path.name}")
            self.path.unlink()  # left over by a gateway that crashed
        old_umask = os.umask(0o117)  # the socket is born 0660, never briefly wider
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=str(self.path), limit=1 << 20)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:  # never remove a socket another gateway is serving
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        client = self.gateway.policy.local_identity()

        def send(message: Any) -> None:
            if writer.is_closing():
                return
            data, encoded = encode_answer(message, b"\0")
            if not encoded:
                log.error("an answer could not be serialised")
            writer.write(data)

        session = self.gateway.open_session(client, send, transport="unix", remote="local")
        # A connection here already has the owner's rights, so acting for another client can only narrow them.
        session.act_for = functools.partial(self.gateway.policy.identity_by_id, transport="unix", remote="local")
        decoder = NulFrameDecoder(self.max_frame)
        transport = writer.transport
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                for frame in decoder.receive_data(data):
                    if frame.error is not None:
                        session.receive_error(frame.error)
                    else:
                        session.receive(frame.value)
                if transport.get_write_buffer_size() > _HIGH_WATER:
                    # The client does not read its answers: stop reading its requests until it does.
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("local connection failed")
        finally:
            self.gateway.close_session(session)
            self._writers.discard(writer)
            writer.close()
