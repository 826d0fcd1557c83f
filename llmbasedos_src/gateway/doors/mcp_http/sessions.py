"""Sessions of the 2025-11-25 (initialize-based) era: who holds a `Mcp-Session-Id`, what runs in it, and the
GET stream that carries server notifications (list_changed) to it.

Each client holds at most `per_client` sessions (LLMBDO_MCP_SESSIONS_PER_CLIENT): a new one beyond that ends
the client's own least recently used, so one client cannot push out another's. The store as a whole holds at
most `max_sessions`; when it is full, the least recently used session of the client holding the most goes.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

from llmbasedos.gateway.config import MCP_SESSIONS_PER_CLIENT
from llmbasedos.gateway.policy.gatekeeper import ClientIdentity
from llmbasedos.protocol import errors

__all__ = ["McpSession", "SessionStore", "IDLE_TIMEOUT", "MAX_SESSIONS"]

IDLE_TIMEOUT = 3600.0  # seconds without a request before a session is forgotten
MAX_SESSIONS = 10_000
_STREAM_BACKLOG = 1000


class McpSession:
    __slots__ = (
        "client",
        "closed",
        "created",
        "id",
        "initialized",
        "last_seen",
        "protocol_version",
        "stream",
        "tasks",
    )

    def __init__(self, client: ClientIdentity, protocol_version: str) -> None:
        self.id = secrets.token_hex(16)
        self.client = client
        self.protocol_version = protocol_version
        self.created = self.last_seen = time.monotonic()
        self.initialized = False
        self.tasks: dict[Any, asyncio.Task[Any]] = {}
        self.stream: asyncio.Queue[bytes | None] | None = None
        self.closed = False

    def push(self, event: bytes) -> None:
        """Queue a server notification for the GET stream, if one is open; a stream nobody reads drops it."""
        if self.stream is not None and self.stream.qsize() < _STREAM_BACKLOG:
            self.stream.put_nowait(event)

    def close(self) -> None:
        self.closed = True
        for task in list(self.tasks.values()):
            task.cancel()
        if self.stream is not None:
            self.stream.put_nowait(None)


class SessionStore:
    def __init__(self, idle_timeout: float = IDLE_TIMEOUT, max_sessions: int = MAX_SESSIONS,
                 per_client: int = MCP_SESSIONS_PER_CLIENT) -> None:
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self.per_client = per_client
        self._sessions: dict[str, McpSession] = {}
        self._by_client: dict[str, dict[str, McpSession]] = {}  # client id -> its sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Any:
        return iter(list(self._sessions.values()))

    def create(self, client: ClientIdentity, protocol_version: str) -> McpSession:
        own = self._by_client.get(client.client_id)
        if own is not None and len(own) >= self.per_client:
            self._remove_oldest(own)
        if len(self._sessions) >= self.max_sessions:
            self.sweep()
            if len(self._sessions) >= self.max_sessions:
                self._remove_oldest(max(self._by_client.values(), key=len))
        session = McpSession(client, protocol_version)
        self._sessions[session.id] = session
        self._by_client.setdefault(client.client_id, {})[session.id] = session
        return session

    def _remove_oldest(self, sessions: dict[str, McpSession]) -> None:
        self.remove(min(sessions.values(), key=lambda s: s.last_seen).id)

    def count(self, client: ClientIdentity) -> int:
        return len(self._by_client.get(client.client_id, ()))

    def get(self, session_id: str, client: ClientIdentity) -> McpSession | None:
        """The live session with this id held by this client; None if unknown, expired or someone else's."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_seen > self.idle_timeout and not session.tasks and session.stream is None:
            self.remove(session_id)
            return None
        if session.client.client_id != client.client_id:
            return None
        session.client = client  # its rights as they are now (an allowlist or tier may have changed)
        session.last_seen = now
        return session

    def remove(self, session_id: str) -> bool:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        own = self._by_client.get(session.client.client_id)
        if own is not None:
            own.pop(session_id, None)
            if not own:
                del self._by_client[session.client.client_id]
        session.close()
        return True

    def follow_rights(self, refresh: Callable[[ClientIdentity], ClientIdentity]) -> None:
        """Give each session its client as it is now (`Policy.refresh`); end those whose client is refused
        (revoked or expired): their work is cancelled and their GET stream ends."""
        for sid, s in list(self._sessions.items()):
            try:
                s.client = refresh(s.client)
            except errors.RPCError:
                self.remove(sid)

    def sweep(self) -> None:
        now = time.monotonic()
        for sid, s in list(self._sessions.items()):
            if now - s.last_seen > self.idle_timeout and not s.tasks and s.stream is None:
                self.remove(sid)

    def close(self) -> None:
        for sid in list(self._sessions):
            self.remove(sid)
