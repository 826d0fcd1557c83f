"""One client connection, whatever its door: JSON-RPC 2.0 dispatch with many calls in flight.

A door decodes frames into JSON values and hands them to `Session.receive`; the session answers through the
door's `send` callable (which takes a dict or a list and must not block). Requests run as tasks, so answers
go out in completion order; batches are answered as one array once all their requests are done.

A session holds its client's identity and the generation of the policy's clients it was last checked against.
When the generation has moved (a token revoked, expired or changed, a new licence), the next message first
re-resolves the client: a changed allowlist or tier applies to that message already; a revoked or expired
client gets the message refused (Unauthorized) and the connection ended through the door's `end` hook
(WebSocket close code 1008). The gateway also re-checks every open session when the generation moves, so a
revoked client's idle connection is closed without waiting for its next call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from llmbasedos.gateway.policy.gatekeeper import ClientIdentity
from llmbasedos.gateway.routing.router import RoutedCall, Router
from llmbasedos.protocol import errors
from llmbasedos.protocol.messages import RequestId, answer_id, check_call, is_valid_id, refusal

__all__ = ["Session", "SendFn", "EndFn", "CANCEL_METHOD", "MAX_IN_FLIGHT", "MAX_BATCH", "POLICY_VIOLATION"]

log = logging.getLogger("llmbasedos.gateway.doors.session")

CANCEL_METHOD = "mcp.cancel"
MAX_IN_FLIGHT = 4096  # per connection: a client cannot make the gateway hold unbounded work for it
MAX_BATCH = 1000
MAX_RUN_ID = 64  # the longest "caller.run" (an execution id) the UNIX door passes on
SendFn = Callable[[Any], None]
EndFn = Callable[[int, str], None]
"""Ends the door's connection with a WebSocket-style close code and reason (must not block)."""
POLICY_VIOLATION = 1008  # RFC 6455: the close code for a client whose rights are gone
_ids = itertools.count(1)


class Session:
    def __init__(self, router: Router, client: ClientIdentity, send: SendFn, *, transport: str,
                 remote: str = "") -> None:
        self.router = router
        self.client = client
        self._clients = router.policy.clients
        # Never a real generation: the first message re-resolves the client, in case its rights changed
        # between the door's authentication and this session.
        self._generation = -1
        self.revoked = False
        # Set by the door: how to end its connection when the client's rights are gone.
        self.end: EndFn | None = None
        self.transport = transport
        self.remote = remote
        self.session_id = next(_ids)
        self.connected_at = time.time()
        self.disconnected = asyncio.Event()
        self._send = send
        self._loop = asyncio.get_running_loop()
        # Calls in flight by id: tasks, or calls routed without one (anything with cancel()).
        self._tasks: dict[RequestId, asyncio.Task[None] | RoutedCall] = {}
        self._batches: set[asyncio.Task[None]] = set()
        # Set by the UNIX door only: resolves a message's top-level "caller" {"client_id"} to the client the
        # call is made for (the agent acting for the client that started a workflow), and passes its "run"
        # (the execution making the call) on to the backend. Elsewhere "caller" is ignored, so a /ws client can
        # never borrow an identity nor claim to be a run.
        self.act_for: Callable[[str], ClientIdentity] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks) + len(self._batches)

    def info(self) -> dict[str, Any]:
        return {"session": self.session_id, "client_id": self.client.client_id, "name": self.client.name,
                "tier": self.client.tier, "transport": self.transport,
                "connected_at": round(self.connected_at, 3), "in_flight": self.in_flight}

    def send(self, message: Any) -> None:
        if not self.disconnected.is_set():
            self._send(message)

    def _notify(self, method: str, params: dict[str, Any]) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    # -- input ---------------------------------------------------------------------------------------

    def receive_error(self, error: errors.RPCError) -> None:
        """A frame could not be decoded (parse error, oversize, nested too deep): answer it, keep going."""
        self.send(refusal(error))

    def revalidate(self) -> bool:
        """Re-resolve the client if the policy's clients changed since the last check; False (and the
        connection ended) once it is revoked or expired."""
        return self._check_rights(None, answer=False)

    def _check_rights(self, value: Any, *, answer: bool) -> bool:
        if self.revoked:
            return False
        generation = self._clients.generation
        if generation == self._generation:
            return True
        try:
            self.client = self.router.policy.refresh(self.client, transport=self.transport)
        except errors.RPCError as exc:
            self.revoked = True
            if answer:  # the message that found out is refused before the connection ends
                rid = value.get("id") if isinstance(value, dict) else None
                self.send({"jsonrpc": "2.0", "id": answer_id(rid), "error": exc.to_error()})
            end = self.end
            self.close()
            if end is not None:
                end(POLICY_VIOLATION, "token revoked or expired")
            return False
        self._generation = generation
        return True

    def receive(self, value: Any) -> None:
        """Handle one decoded JSON value: a message or a batch."""
        if (self._generation != self._clients.generation or self.revoked) and not self._check_rights(
                value, answer=True):  # the one check per message: an integer compare
            return
        if isinstance(value, list):
            if not value:
                self.receive_error(errors.InvalidRequest("Empty batch"))
                return
            if len(value) > MAX_BATCH:
                self.receive_error(errors.InvalidRequest(f"A batch may hold at most {MAX_BATCH} messages"))
                return
            if len(self._batches) >= MAX_IN_FLIGHT:
                self.receive_error(errors.RateLimited("Too much work in flight on this connection",
                                                      {"retry_after": 1}))
                return
            task = self._loop.create_task(self._run_batch(value))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
            return
        if not isinstance(value, dict):
            self.receive_error(errors.InvalidRequest("A JSON-RPC message must be an object"))
            return
        checked = self._check(value)
        if isinstance(checked, errors.RPCError):
            rid = value.get("id")
            self.send({"jsonrpc": "2.0", "id": answer_id(rid), "error": checked.to_error()})
            return
        if checked is None:
            return
        method, params = checked
        acting = self._acting_for(value)
        if isinstance(acting, errors.RPCError):
            if "id" in value:
                self.send({"jsonrpc": "2.0", "id": value["id"], "error": acting.to_error()})
            return
        client, run = acting
        if "id" in value:
            rid = value["id"]
            if rid in self._tasks:
                self.send({"jsonrpc": "2.0", "id": rid,
                           "error": errors.InvalidRequest(f"Request id {rid!r} already in flight").to_error()})
                return
            if len(self._tasks) >= MAX_IN_FLIGHT:
                self.send({"jsonrpc": "2.0", "id": rid, "error": errors.RateLimited(
                    f"More than {MAX_IN_FLIGHT} calls in flight on this connection", {"retry_after": 1}).to_error()})
                return
            try:
                routed = self.router.start(client, method, params, request_id=rid, answer=self._answer,
                                           notify=self._notify, run=run)
            except errors.RPCError as exc:
                self.send({"jsonrpc": "2.0", "id": rid, "error": exc.to_error()})
                return
            if routed is None:
                self._tasks[rid] = self._loop.create_task(self._run(rid, method, params, client, run))
            elif not routed.finished:
                self._tasks[rid] = routed
        else:
            self._notification(method, params, client, run)

    def _acting_for(self, msg: dict[str, Any]) -> tuple[ClientIdentity, str | None] | errors.RPCError:
        """Who a message acts as — the session's client, or on the UNIX door the client named by "caller" — and
        the run it is made by (the UNIX door's "caller" "run", else None)."""
        if self.act_for is None or "caller" not in msg:
            return self.client, None
        caller = msg["caller"]
        if not isinstance(caller, dict):
            return errors.InvalidRequest('"caller" must be an object with a "client_id" string')
        run = caller.get("run")
        if run is not None and (not isinstance(run, str) or not 0 < len(run) <= MAX_RUN_ID):
            return errors.InvalidRequest(f'"caller.run" must be a string of 1 to {MAX_RUN_ID} characters')
        client_id = caller.get("client_id")
        if client_id is None and run is not None:
            return self.client, run  # a run started on the agent's own socket: the owner's rights
        if not isinstance(client_id, str) or not client_id:
            return errors.InvalidRequest('"caller" must be an object with a "client_id" string')
        try:
            return self.act_for(client_id), run
        except errors.RPCError as exc:
            return exc

    def _check(self, msg: dict[str, Any]) -> tuple[str, Any] | errors.RPCError | None:
        """(method, params) for a request or notification; None for a response; the error otherwise."""
        if msg.get("method") is None:
            if msg.get("jsonrpc") != "2.0":
                return errors.InvalidRequest('"jsonrpc" must be "2.0"')
            if "result" in msg or "error" in msg:
                return None  # the gateway sends no requests to clients, so a response is stray: drop it
            return errors.InvalidRequest("Neither a request nor a response")
        wrong = check_call(msg)
        return (msg["method"], msg.get("params")) if wrong is None else wrong

    def _notification(self, method: str, params: Any, client: ClientIdentity | None = None,
                      run: str | None = None) -> None:
        if method == CANCEL_METHOD:
            rid = params.get("id") if isinstance(params, dict) else None
            task = self._tasks.get(rid) if is_valid_id(rid) else None  # type: ignore[arg-type]
            if task is not None:
                task.cancel()
            return
        # JSON-RPC: a notification is a call whose answer is never sent. It still goes through policy.
        if len(self._batches) >= MAX_IN_FLIGHT:
            return  # nothing can be answered to a notification: past the cap it is dropped
        task = self._loop.create_task(self._fire_and_forget(method, params, client, run))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    # -- calls ---------------------------------------------------------------------------------------

    async def _invoke(self, rid: RequestId | None, method: str, params: Any,
                      client: ClientIdentity | None = None, run: str | None = None) -> dict[str, Any]:
        try:
            result = await self.router.call(client or self.client, method, params, notify=self._notify, request_id=rid,
                                            disconnected=self.disconnected, run=run)
        except errors.RPCError as exc:
            return {"jsonrpc": "2.0", "id": rid, "error": exc.to_error()}
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    async def _run(self, rid: RequestId, method: str, params: Any, client: ClientIdentity | None = None,
                   run: str | None = None) -> None:
        try:
            answer = await self._invoke(rid, method, params, client, run)
        except asyncio.CancelledError:
            if self.disconnected.is_set():
                return
            answer = {"jsonrpc": "2.0", "id": rid, "error": errors.Cancelled("Call cancelled").to_error()}
        finally:
            self._tasks.pop(rid, None)
        self.send(answer)

    def _answer(self, call: RoutedCall, result: Any, error: errors.RPCError | None) -> None:
        """The end of a call started with `Router.start` (no task: see `Session._run` for the others)."""
        rid = call.request_id
        if self._tasks.get(rid) is call:
            del self._tasks[rid]
        if self.disconnected.is_set():
            return  # a call cancelled because its caller left is not answered
        self._send({"jsonrpc": "2.0", "id": rid, "result": result} if error is None
                   else {"jsonrpc": "2.0", "id": rid, "error": error.to_error()})

    async def _fire_and_forget(self, method: str, params: Any, client: ClientIdentity | None = None,
                               run: str | None = None) -> None:
        try:
            await self.router.call(client or self.client, method, params, disconnected=self.disconnected, run=run)
        except errors.RPCError:
            pass

    async def _batch_item(self, item: Any) -> dict[str, Any] | None:
        if not isinstance(item, dict):
            return {"jsonrpc": "2.0", "id": None,
                    "error": errors.InvalidRequest("A JSON-RPC message must be an object").to_error()}
        checked = self._check(item)
        if isinstance(checked, errors.RPCError):
            rid = item.get("id")
            return {"jsonrpc": "2.0", "id": answer_id(rid), "error": checked.to_error()}
        if checked is None:
            return None
        method, params = checked
        acting = self._acting_for(item)
        if isinstance(acting, errors.RPCError):
            return {"jsonrpc": "2.0", "id": item["id"], "error": acting.to_error()} if "id" in item else None
        client, run = acting
        if "id" not in item:
            if method == CANCEL_METHOD:
                self._notification(method, params)
            else:
                await self._fire_and_forget(method, params, client, run)
            return None
        return await self._invoke(item["id"], method, params, client, run)

    async def _run_batch(self, batch: list[Any]) -> None:
        answers = await asyncio.gather(*(self._batch_item(item) for item in batch))
        out = [a for a in answers if a is not None]
        if out:
            self.send(out)

    # -- end -----------------------------------------------------------------------------------------

    def close(self) -> None:
        """The connection is gone: stop all its work; nobody will read the answers."""
        self.disconnected.set()
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._batches):
            task.cancel()
