"""The calls in flight on one JSON-RPC connection, whatever carries it: ids, the pending table, and where
each answer and notification goes. No I/O: the NUL-framed RPCClient (client.py) and luca-shell's WebSocket
client put their bytes around it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, Protocol

from llmbasedos.protocol import errors
from llmbasedos.protocol.messages import Notification, Response, parse_message

__all__ = ["CallTable", "NotificationHandler", "Pending"]

NotificationHandler = Callable[[str, Any], None]


class Pending(Protocol):
    """A call in flight, resolved by the read loop as a future is. It may also `relay` its call's notifications
    (a waiter does; a future's are relayed by the listener given to `call`)."""

    def done(self) -> bool: ...

    def set_result(self, value: Any) -> None: ...

    def set_exception(self, exc: BaseException) -> None: ...


class CallTable:
    __slots__ = ("_ids", "_listeners", "_on_notification", "_pending")

    def __init__(self, on_notification: NotificationHandler | None = None) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[Any, Pending] = {}
        self._listeners: dict[Any, NotificationHandler] = {}
        self._on_notification = on_notification  # notifications that are about no call of ours

    def open(self, pending: Pending, listener: NotificationHandler | None = None) -> int:
        """A new id for a call; its answer resolves `pending`, its notifications go to `listener`."""
        rid = next(self._ids)
        self._pending[rid] = pending
        if listener is not None:
            self._listeners[rid] = listener
        return rid

    def forget(self, rid: Any) -> None:
        self._pending.pop(rid, None)
        self._listeners.pop(rid, None)

    def in_flight(self) -> list[Pending]:
        """Oldest first."""
        return list(self._pending.values())

    def fail_all(self, exc: BaseException) -> None:
        """The connection is gone: every call still waiting fails with `exc`."""
        # Taken out first: what a waiter does when it fails may touch the table (the gateway's calls do).
        pending, self._pending = self._pending, {}
        self._listeners.clear()
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    def _listener_for(self, rid: Any) -> NotificationHandler | None:
        # A waiter relays its own call's notifications: no listener entry to add and remove per call.
        listener = self._listeners.get(rid)
        if listener is None:
            listener = getattr(self._pending.get(rid), "relay", None)
        return listener

    def deliver(self, value: Any) -> None:
        """A decoded message or batch from the peer: answers resolve their calls, a notification about a call
        goes to that call's listener (or the waiter's own relay), any other to the table's handler."""
        if (type(value) is dict and "result" in value and "error" not in value and "method" not in value
                and value.get("jsonrpc") == "2.0"):
            rid = value.get("id")
            if type(rid) is int or type(rid) is str:  # the common case, a plain answer: no Response built
                fut = self._pending.pop(rid, None)
                if fut is not None and not fut.done():
                    fut.set_result(value["result"])
                return
        items = value if isinstance(value, list) else [value]
        for item in items:
            try:
                msg = parse_message(item)
            except errors.InvalidRequest:
                continue
            if isinstance(msg, Response):
                fut = self._pending.pop(msg.id, None)
                if fut is not None and not fut.done():
                    if msg.error is not None:
                        fut.set_exception(errors.from_error_object(msg.error))
                    else:
                        fut.set_result(msg.result)
            elif isinstance(msg, Notification):
                rid = msg.params.get("id") if isinstance(msg.params, dict) else None
                listener = self._listener_for(rid) if type(rid) is int or type(rid) is str else None
                if listener is not None:
                    listener(msg.method, msg.params)
                elif self._on_notification is not None:
                    self._on_notification(msg.method, msg.params)
