"""The active clients as the gateway knows them now, and a generation number that moves when that changes.

Open connections and sessions keep a client's identity, not a copy of its rights frozen at connect time: they
compare `generation` with the one they last saw (one integer compare per call) and, when it moved, ask the
policy again who their client is now. The generation moves when the clients table changes (a token created,
revoked or updated by `llmbasedos token`, in any process: `TokenStore.version`) and when an active client's
expiry passes. `poll` is called by the policy's background thread every tick; lookups by id are dict reads.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from llmbasedos.gateway.policy.tokens import ClientRecord, TokenStore

__all__ = ["LiveClients"]

log = logging.getLogger("llmbasedos.gateway.policy.gatekeeper")


class LiveClients:
    def __init__(self, tokens: TokenStore) -> None:
        self._tokens = tokens
        self._lock = threading.Lock()
        self.generation = 0
        self._version = -1
        self._active: dict[str, ClientRecord] = {}
        self._next_expiry = math.inf
        self._listeners: list[Callable[[], None]] = []
        self.poll()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` (from the thread that noticed, often the policy's) whenever the generation moves."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("a listener of client changes failed")

    def poll(self, now: float | None = None) -> bool:
        """Re-read the clients when they changed or one expired; True when the generation moved."""
        now = time.time() if now is None else now
        with self._lock:
            version = self._tokens.version()
            if version == self._version and now < self._next_expiry:
                return False
            self._version = version
            active = {r.id: r for r in self._tokens.list(include_revoked=False) if not r.expired(now)}
            self._next_expiry = min((r.expires for r in active.values() if r.expires is not None),
                                    default=math.inf)
            self._active = active  # replaced whole: readers on other threads see the old map or the new one
            self.generation += 1
        self._changed()
        return True

    def active(self, client_id: str, now: float | None = None) -> ClientRecord | None:
        """The active, unexpired client with this id, or None."""
        record = self._active.get(client_id)
        if record is None or record.expired(now):
            return None
        return record

    def bump(self) -> None:
        """Move the generation for a change outside the clients table (a new licence tier)."""
        with self._lock:
            self._version = -1  # re-read the clients too: a generation always comes with a fresh map
        self.poll()
