"""The XML-RPC client of one supervisord, through its UNIX socket, with a timeout on every call.

`Supervisor` wraps the few calls the command needs; `SupervisorDown` is what a missing socket or a
supervisord that does not answer becomes, so callers handle one exception instead of the transport's many.
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from pathlib import Path
from typing import Any

__all__ = ["Supervisor", "SupervisorDown"]


class _UnixHTTPConnection(http.client.HTTPConnection):
    # supervisor's own UNIX connection class has no timeout: a hung supervisord would hang the CLI.
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class SupervisorDown(Exception):
    """Nothing answers on the supervisor socket."""


class Supervisor:
    """XML-RPC client of one supervisord, through its UNIX socket."""

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        from supervisor.xmlrpc import SupervisorTransport

        self.socket_path = socket_path
        transport = SupervisorTransport(None, None, "unix://" + str(socket_path))
        transport._get_connection = lambda: _UnixHTTPConnection(str(socket_path), timeout)
        # The host part is ignored: the transport always talks to the socket.
        self._proxy = xmlrpc.client.ServerProxy("http://localhost", transport=transport)

    def _call(self, name: str, *args: Any) -> Any:
        if not self.socket_path.exists():
            raise SupervisorDown(str(self.socket_path))
        try:
            return getattr(self._proxy.supervisor, name)(*args)
        except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError) as exc:
            raise SupervisorDown(str(exc)) from exc

    def running(self) -> bool:
        try:
            return bool(self._call("getState")["statename"] == "RUNNING")
        except (SupervisorDown, xmlrpc.client.Fault):
            return False

    def pid(self) -> int:
        return int(self._call("getPID"))

    def processes(self) -> list[dict[str, Any]]:
        return list(self._call("getAllProcessInfo"))

    def shutdown(self) -> None:
        self._call("shutdown")
