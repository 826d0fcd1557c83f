"""`subscriptions/listen` of the 2026-07-28 era: each open stream carries the notifications its client opted
in to (here, only the tool list changes), tagged with the subscription's id, until the client leaves or the
gateway stops.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Send

from llmbasedos.gateway.doors.mcp_http.http_io import (
    SSE_HEADERS,
    error_answer,
    relay_events,
    send_json,
    sse_event,
    watch_disconnect,
)
from llmbasedos.protocol import errors

__all__ = ["ListenStreams", "SUBSCRIPTION_ID"]

SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
_BACKLOG = 100  # events queued for a stream nobody reads before more are dropped


class ListenStreams:
    def __init__(self) -> None:
        self._streams: dict[asyncio.Queue[bytes | None], Any] = {}  # open stream -> its subscription id
        self.closing = False

    def announce(self, method: str) -> None:
        """Send the notification `method` down every open stream (one that is not read drops it)."""
        for queue, sub_id in self._streams.items():
            if queue.qsize() < _BACKLOG:
                queue.put_nowait(sse_event({"jsonrpc": "2.0", "method": method,
                                            "params": {"_meta": {SUBSCRIPTION_ID: sub_id}}}))

    def close(self) -> None:
        """End every stream with its result (the gateway stops)."""
        self.closing = True
        for queue in self._streams:
            queue.put_nowait(None)

    async def serve(self, receive: Receive, send: Send, rid: Any, params: dict[str, Any], wants_sse: bool) -> None:
        """`subscriptions/listen`: the response is the stream of the notifications the client opted in to."""
        if not wants_sse:
            await send_json(send, 406, error_answer(rid, errors.InvalidRequest(
                "Not Acceptable: subscriptions/listen answers with text/event-stream")))
            return
        wanted = params.get("notifications")
        if not isinstance(wanted, dict):
            await send_json(send, 400, error_answer(
                rid, errors.InvalidParams("params.notifications must be an object")))
            return
        # Only the tool list changes here: resources and prompts are not announced (their listChanged is false).
        honored: dict[str, Any] = {"toolsListChanged": True} if wanted.get("toolsListChanged") is True else {}
        meta = {SUBSCRIPTION_ID: rid}
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        if honored:
            self._streams[queue] = rid
        watcher = asyncio.get_running_loop().create_task(watch_disconnect(receive, lambda: queue.put_nowait(None)))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            ack = {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                   "params": {"notifications": honored, "_meta": meta}}
            await send({"type": "http.response.body", "body": sse_event(ack), "more_body": True})
            await relay_events(queue, send)
            if not self.closing:
                return  # the client went away: an abrupt close carries no result
            done = {"jsonrpc": "2.0", "id": rid, "result": {"_meta": meta, "resultType": "complete"}}
            await send({"type": "http.response.body", "body": sse_event(done), "more_body": False})
        except OSError:
            pass
        finally:
            watcher.cancel()
            self._streams.pop(queue, None)
