"""The standard MCP door `/mcp`: Streamable HTTP in both eras, as a plain ASGI endpoint.

Every request is first checked like on `/ws`: a browser `Origin` off the allowlist (or, on a loopback bind, a
`Host` that is not a loopback name) gets 403, a missing or bad token 401 (`Authorization: Bearer`, or `?token=`
for clients that cannot set headers). Then the era is chosen the way the official SDK chooses it: an
`MCP-Protocol-Version` header that names a handshake-era version, or none at all, is the 2025-11-25 era
(`initialize`, `Mcp-Session-Id`, GET stream, DELETE); any other version is the stateless 2026-07-28 era, where
each POST carries its own `_meta` envelope and `Mcp-Method`/`Mcp-Name` headers checked against the body.

Answers are JSON, or an SSE stream when the client only accepts SSE or asked for progress on a tool call.
Closing the response stream (or, in a session, `notifications/cancelled`) cancels the call, backend included.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any

from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    unsupported_protocol_version_rejection,
)
from starlette.types import Receive, Scope, Send

from llmbasedos.gateway.doors.auth import refusal_response
from llmbasedos.gateway.doors.mcp_http.envelope import envelope_accepted, has_envelope, progress_token
from llmbasedos.gateway.doors.mcp_http.front import FrontChecks
from llmbasedos.gateway.doors.mcp_http.http_io import (
    SSE_HEADERS,
    Disconnected,
    accepts,
    error_answer,
    read_body,
    relay_events,
    send_empty,
    send_json,
    sse_event,
    watch_disconnect,
)
from llmbasedos.gateway.doors.mcp_http.listen import ListenStreams
from llmbasedos.gateway.doors.mcp_http.service import (
    HANDSHAKE_VERSIONS,
    LATEST_HANDSHAKE,
    MODERN_VERSIONS,
    McpCall,
    McpService,
)
from llmbasedos.gateway.doors.mcp_http.sessions import McpSession, SessionStore
from llmbasedos.loopback import is_loopback
from llmbasedos.protocol import errors
from llmbasedos.protocol.decoding import decode_json
from llmbasedos.protocol.messages import answer_id, is_valid_id

if TYPE_CHECKING:
    from llmbasedos.gateway.doors.host import DoorHost
    from llmbasedos.gateway.policy.gatekeeper import ClientIdentity

__all__ = ["McpDoor"]

log = logging.getLogger("llmbasedos.gateway.doors.mcp_http")

_WATCH_AFTER = 0.05  # seconds a plain tools/call runs before its caller's disconnect is watched for
_CANCELLED_NOTIFICATION = "notifications/cancelled"


def _rejection(rid: Any, rejection: InboundLadderRejection) -> tuple[int, dict[str, Any]]:
    error: dict[str, Any] = {"code": rejection.code, "message": rejection.message}
    if rejection.data is not None:
        error["data"] = rejection.data
    return ERROR_CODE_HTTP_STATUS.get(rejection.code, 400), {"jsonrpc": "2.0", "id": rid, "error": error}


class McpDoor:
    """`/mcp` for one running gateway: sessions, the token cache and the MCP service."""

    def __init__(self, gateway: DoorHost) -> None:
        self.gateway = gateway
        self.policy = gateway.policy
        self.service = McpService(gateway)
        self.sessions = SessionStore(per_client=gateway.config.mcp_sessions_per_client)
        self.max_body = gateway.settings.max_frame
        self.front = FrontChecks(gateway.policy, loopback_only=is_loopback(gateway.config.host))
        self.closing = False
        self.listens = ListenStreams()  # 2026-07-28 subscriptions/listen
        self.service.on_tools_changed(self._tools_changed)
        gateway.on_rights_changed(self._rights_changed)

    def _rights_changed(self) -> None:
        """A token was revoked, expired or changed: its sessions end (their work is cancelled, the next
        request with it gets 401, or 404 for the session) or take the client's new rights."""
        self.front.forget()
        self.sessions.follow_rights(functools.partial(self.policy.refresh, transport="mcp"))

    def _tools_changed(self) -> None:
        event = sse_event({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        for session in self.sessions:
            session.push(event)
        self.listens.announce("notifications/tools/list_changed")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers = scope["headers"]
        headers = {k.decode("latin-1"): v.decode("latin-1").strip() for k, v in raw_headers}
        if not self.policy.check_origin(headers.get("origin")) or not self.front.host_ok(headers):
            log.warning("refused an MCP request from a foreign origin or host")
            await refusal_response(errors.Forbidden("Origin or Host not allowed"))(scope, receive, send)
            return
        try:
            client = self.front.client(scope, headers)
        except errors.RPCError as exc:
            await refusal_response(exc)(scope, receive, send)
            return
        method = scope["method"]
        version = headers.get("mcp-protocol-version")
        modern_header = version is not None and version not in HANDSHAKE_VERSIONS
        if modern_header and "mcp-session-id" in headers and version not in MODERN_VERSIONS:
            # A session client with a version nobody speaks: say so in its own era's terms.
            await send_json(send, 400, error_answer(None, errors.InvalidRequest(
                f"Unsupported MCP-Protocol-Version {version!r}; supported: "
                f"{', '.join((*MODERN_VERSIONS, *HANDSHAKE_VERSIONS))}")))
            return
        try:
            if method == "POST":
                await self._post(scope, receive, send, headers, client, modern_header)
            elif modern_header:
                await send_empty(send, 405, [(b"allow", b"POST")])
            elif method == "GET":
                await self._get(receive, send, headers, client)
            elif method == "DELETE":
                await self._delete(send, headers, client)
            else:
                await send_empty(send, 405, [(b"allow", b"GET, POST, DELETE")])
        except Disconnected:
            return

    # -- POST ------------------------------------------------------------------------------------------

    async def _post(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str],
                    client: ClientIdentity, modern_header: bool) -> None:
        wants_json, wants_sse = accepts(headers)
        if not (wants_json or wants_sse):
            await send_json(send, 406, error_answer(None, errors.InvalidRequest(
                "Not Acceptable: the client must accept application/json or text/event-stream")))
            return
        content_type = headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            await send_json(send, 415, error_answer(None, errors.InvalidRequest(
                "Unsupported Media Type: the body must be application/json")))
            return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await send_json(send, 413, error_answer(None, errors.PayloadTooLarge(
                f"Request body is larger than {self.max_body} bytes")))
            return
        body = await read_body(receive, self.max_body)
        if body is None:
            await send_json(send, 413, error_answer(None, errors.PayloadTooLarge(
                f"Request body is larger than {self.max_body} bytes")))
            return
        try:
            message = decode_json(body)
        except errors.NestingTooDeep as exc:
            await send_json(send, 400, error_answer(exc.request_id, exc))
            return
        except errors.ParseError:
            await send_json(send, 400, error_answer(None, errors.ParseError("Parse error: the body is not valid JSON")))
            return
        if isinstance(message, list):
            await send_json(send, 400, error_answer(None, errors.InvalidRequest(
                "Batches are not supported: send one JSON-RPC message per request")))
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            await send_json(send, 400, error_answer(None, errors.InvalidRequest(
                'The body must be one JSON-RPC 2.0 message (with "jsonrpc": "2.0")')))
            return
        modern = modern_header or ("mcp-session-id" not in headers and "mcp-protocol-version" not in headers
                                   and message.get("method") != "initialize" and has_envelope(message))
        if modern:
            await self._post_modern(scope, receive, send, headers, client, message, wants_json, wants_sse)
        else:
            await self._post_session(receive, send, headers, client, message, wants_json, wants_sse)

    async def _post_modern(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str],
                           client: ClientIdentity, message: dict[str, Any], wants_json: bool,
                           wants_sse: bool) -> None:
        if "id" not in message:
            if "method" not in message or not isinstance(message["method"], str):
                await send_json(send, 400, error_answer(None, errors.InvalidRequest(
                    "The body must be a single JSON-RPC request or notification")))
                return
            rejected = unsupported_protocol_version_rejection(headers.get("mcp-protocol-version", ""))
            if rejected is not None:
                status, answer = _rejection(None, rejected)
                await send_json(send, status, answer)
                return
            await send_empty(send, 202)  # no client notification acts on anything in this era
            return
        rid = message["id"]
        method = message.get("method")
        params = message.get("params", {})
        if not is_valid_id(rid) or not isinstance(method, str) or not isinstance(params, dict):
            await send_json(send, 400, error_answer(answer_id(rid), errors.InvalidRequest(
                "The body must be a single JSON-RPC request: string or integer id, string method, object params")))
            return
        # ASGI header names are lowercase: with no name repeated, no routing header can be.
        duplicated = None if len(headers) == len(scope["headers"]) else \
            find_duplicated_routing_header((k.decode("latin-1"), "") for k, _ in scope["headers"])
        if duplicated is not None:
            status, answer = _rejection(rid, InboundLadderRejection(errors.MCP_HEADER_MISMATCH,
                                                                    f"{duplicated} header appears more than once"))
            await send_json(send, status, answer)
            return
        if not envelope_accepted(method, params, headers):
            verdict = classify_inbound_request(message, headers=headers)
            if isinstance(verdict, InboundLadderRejection):
                status, answer = _rejection(rid, verdict)
                await send_json(send, status, answer)
                return
        if method == "subscriptions/listen":
            await self.listens.serve(receive, send, rid, params, wants_sse)
            return
        call = McpCall(client, True, rid, progress_token(params))
        await self._answer(receive, send, call, method, params, wants_json, wants_sse, modern=True)

    async def _post_session(self, receive: Receive, send: Send, headers: dict[str, str], client: ClientIdentity,
                            message: dict[str, Any], wants_json: bool, wants_sse: bool) -> None:
        method = message.get("method")
        rid = message.get("id")
        if method == "initialize":
            await self._initialize(send, client, message, wants_json)
            return
        session_id = headers.get("mcp-session-id")
        if not session_id:
            await send_json(send, 400, error_answer(answer_id(rid), errors.InvalidRequest(
                "Bad Request: Missing session ID (send initialize first, then the Mcp-Session-Id it returns)")))
            return
        session = self.sessions.get(session_id, client)
        if session is None:
            await send_json(send, 404, error_answer(answer_id(rid), errors.RPCError(
                "Session not found: it expired or was closed; initialize a new one", code=-32001)))
            return
        if method is None:
            await send_empty(send, 202)  # a response to a server request: this server sends none
            return
        params = message.get("params", {})
        if not isinstance(method, str) or not isinstance(params, dict) or ("id" in message and not is_valid_id(rid)):
            await send_json(send, 400, error_answer(answer_id(rid), errors.InvalidRequest(
                "Invalid JSON-RPC message: string or integer id, string method, object params")))
            return
        if "id" not in message:
            self._session_notification(session, method, params)
            await send_empty(send, 202)
            return
        if rid in session.tasks:
            await send_json(send, 200, error_answer(
                rid, errors.InvalidRequest(f"Request id {rid!r} already in flight")))
            return
        call = McpCall(client, False, rid, progress_token(params))
        await self._answer(receive, send, call, method, params, wants_json, wants_sse, modern=False, session=session)

    async def _initialize(self, send: Send, client: ClientIdentity, message: dict[str, Any],
                          wants_json: bool) -> None:
        rid = message.get("id")
        params = message.get("params")
        if not is_valid_id(rid) or not isinstance(params, dict):
            await send_json(send, 400, error_answer(answer_id(rid), errors.InvalidRequest(
                "initialize must be a request with an id and object params")))
            return
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            await send_json(send, 200, error_answer(
                rid, errors.InvalidParams("params.protocolVersion must be a string")))
            return
        version = requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE
        try:
            # A session costs memory and may push out the client's oldest: it counts like a call.
            self.policy.limit(client, "initialize")
        except errors.RPCError as exc:
            await send_json(send, 200, error_answer(rid, exc))
            return
        session = self.sessions.create(client, version)
        answer = {"jsonrpc": "2.0", "id": rid, "result": self.service.initialize_result(version)}
        extra = [(b"mcp-session-id", session.id.encode())]
        if wants_json:
            await send_json(send, 200, answer, extra)
        else:
            await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *extra]})
            await send({"type": "http.response.body", "body": sse_event(answer)})

    def _session_notification(self, session: McpSession, method: str, params: dict[str, Any]) -> None:
        if method == "notifications/initialized":
            session.initialized = True
        elif method == _CANCELLED_NOTIFICATION:
            task = session.tasks.get(params.get("requestId"))
            if task is not None:
                task.cancel()

    # -- answering one request -------------------------------------------------------------------------

    async def _answer(self, receive: Receive, send: Send, call: McpCall, method: str, params: dict[str, Any],
                      wants_json: bool, wants_sse: bool, *, modern: bool, session: McpSession | None = None) -> None:
        stream = wants_sse and (not wants_json or (call.progress_token is not None and method == "tools/call"))
        rid = call.request_id
        if not stream and method != "tools/call":
            # Quick methods: no task, no disconnect watch.
            status, answer = await self._run(call, method, params, modern)
            await send_json(send, status, answer)
            return
        queue: asyncio.Queue[bytes | None] | None = None
        if stream:
            queue = asyncio.Queue()
            q = queue

            def notify(n_method: str, n_params: dict[str, Any]) -> None:
                q.put_nowait(sse_event({"jsonrpc": "2.0", "method": n_method, "params": n_params}))
            call.notify = notify
        loop = asyncio.get_running_loop()
        if queue is None and session is None:
            # A plain JSON answer: the call runs in this request's own task, which a disconnect cancels. One task
            # fewer per call than the general path below.
            await self._answer_here(receive, send, call, method, params, modern)
            return
        task = loop.create_task(self._run(call, method, params, modern))
        if session is not None:
            session.tasks[rid] = task

        def gone() -> None:
            call.disconnected.set()
            task.cancel()
        watcher = loop.create_task(watch_disconnect(receive, gone))
        try:
            if queue is None:
                try:
                    status, answer = await task
                except asyncio.CancelledError:
                    if call.disconnected.is_set():
                        return
                    status, answer = 200, error_answer(rid, errors.Cancelled("Request cancelled"))
                await send_json(send, status, answer)
                return
            task.add_done_callback(lambda _t: queue.put_nowait(None))  # type: ignore[union-attr]
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await relay_events(queue, send)
            if task.cancelled():
                if call.disconnected.is_set():
                    return
                answer = error_answer(rid, errors.Cancelled("Request cancelled"))
            else:
                answer = task.result()[1]
            await send({"type": "http.response.body", "body": sse_event(answer), "more_body": False})
        except OSError:
            task.cancel()
        finally:
            watcher.cancel()
            if session is not None:
                session.tasks.pop(rid, None)

    async def _answer_here(self, receive: Receive, send: Send, call: McpCall, method: str, params: dict[str, Any],
                           modern: bool) -> None:
        me = asyncio.current_task()
        assert me is not None
        loop = asyncio.get_running_loop()
        watcher: asyncio.Task[None] | None = None

        def gone() -> None:
            call.disconnected.set()
            me.cancel()

        def watch() -> None:
            nonlocal watcher
            watcher = loop.create_task(watch_disconnect(receive, gone))
        # Most calls end in a few milliseconds: watching for a disconnect only once a call has lasted a while
        # saves a task per call, and a caller that leaves is still noticed within _WATCH_AFTER.
        timer = loop.call_later(_WATCH_AFTER, watch)
        try:
            status, answer = await self._run(call, method, params, modern)
        except asyncio.CancelledError:
            if not call.disconnected.is_set():
                raise  # not ours: the server is shutting down
            me.uncancel()
            return
        finally:
            timer.cancel()
            if watcher is not None:
                watcher.cancel()
        await send_json(send, status, answer)

    async def _run(self, call: McpCall, method: str, params: dict[str, Any],
                   modern: bool) -> tuple[int, dict[str, Any]]:
        rid = call.request_id
        try:
            result = await self.service.handle(call, method, params)
        except errors.RPCError as exc:
            status = ERROR_CODE_HTTP_STATUS.get(exc.code, 200) if modern else 200
            return status, error_answer(rid, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("MCP method %s failed unexpectedly", method)
            return 200, error_answer(rid, errors.wire_error(exc))
        return 200, {"jsonrpc": "2.0", "id": rid, "result": result}

    # -- GET and DELETE (sessions) ---------------------------------------------------------------------

    async def _get(self, receive: Receive, send: Send, headers: dict[str, str], client: ClientIdentity) -> None:
        _, wants_sse = accepts(headers)
        if not wants_sse or "text/event-stream" not in headers.get("accept", ""):
            await send_json(send, 406, error_answer(None, errors.InvalidRequest(
                "Not Acceptable: the GET stream is text/event-stream")))
            return
        session = await self._session_of(send, headers, client)
        if session is None:
            return
        if session.stream is not None:
            await send_json(send, 409, error_answer(None, errors.Conflict(
                "Conflict: this session already has a GET stream open")))
            return
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        session.stream = queue
        watcher = asyncio.get_running_loop().create_task(watch_disconnect(receive, lambda: queue.put_nowait(None)))
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [*SSE_HEADERS, (b"mcp-session-id", session.id.encode())]})
            await send({"type": "http.response.body", "body": b": stream open\n\n", "more_body": True})
            await relay_events(queue, send)
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass
        finally:
            watcher.cancel()
            if session.stream is queue:
                session.stream = None

    async def _delete(self, send: Send, headers: dict[str, str], client: ClientIdentity) -> None:
        session = await self._session_of(send, headers, client)
        if session is None:
            return
        self.sessions.remove(session.id)
        await send_empty(send, 200)

    async def _session_of(self, send: Send, headers: dict[str, str], client: ClientIdentity) -> McpSession | None:
        session_id = headers.get("mcp-session-id")
        if not session_id:
            await send_json(send, 400, error_answer(None, errors.InvalidRequest("Bad Request: Missing session ID")))
            return None
        session = self.sessions.get(session_id, client)
        if session is None:
            await send_json(send, 404, error_answer(None, errors.RPCError("Session not found", code=-32001)))
        return session

    def close(self) -> None:
        self.closing = True
        self.sessions.close()
        self.listens.close()
