"""`llmbasedos mcp-stdio`: a stdio MCP server for hosts that only launch commands (Claude Desktop).

It reads newline-delimited JSON-RPC on stdin and forwards each message to the gateway's `/mcp` door with the
client's token, writing every answer and notification back on stdout, one JSON message per line. The gateway
does the work — tools, resources, policy, limits and audit are exactly those of `/mcp`.

The host's `initialize` opens a 2025-11-25 session on the gateway; after it, the bridge also opens the
session's GET stream so `notifications/tools/list_changed` reaches the host. A message that carries the
2026-07-28 `_meta` envelope is forwarded as a stateless request, with the routing headers that era requires.
Requests run concurrently, so `notifications/cancelled` reaches the gateway while the call runs.

Where it connects (first found wins):
    --url URL | $LLMBDO_GATEWAY_URL | the `url` in <run dir>/gateway.json written by the running gateway
Which token it presents (first found wins; the token itself is never printed or logged):
    --token-file PATH | $LLMBDO_TOKEN | $LLMBDO_TOKEN_FILE | <data dir>/owner.token
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmbasedos.protocol import errors
from llmbasedos.protocol.decoding import decode_json

if TYPE_CHECKING:
    import httpx

__all__ = ["register", "Bridge", "resolve_url", "resolve_token", "BridgeError"]

_ENVELOPE_VERSION = "io.modelcontextprotocol/protocolVersion"
_NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
_UNREACHABLE = -32004  # as the gateway's SERVICE_UNAVAILABLE


class BridgeError(Exception):
    """A configuration problem the user must fix (no gateway URL, no token)."""


def _settings(state_dir: str | None) -> Any:
    from llmbasedos.settings import Settings

    return Settings.from_env(state_dir or None)


def resolve_url(url: str | None, state_dir: str | None) -> str:
    """The `/mcp` URL to forward to."""
    url = url or os.environ.get("LLMBDO_GATEWAY_URL") or None
    if url is None:
        endpoint = _settings(state_dir).run_dir / "gateway.json"
        try:
            url = str(json.loads(endpoint.read_text(encoding="utf-8"))["url"])
        except (OSError, ValueError, KeyError, TypeError):
            raise BridgeError("no gateway URL: pass --url, set LLMBDO_GATEWAY_URL, or start the gateway "
                              "(`llmbasedos up`) so it writes gateway.json in its run dir") from None
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BridgeError("the gateway URL must start with http:// or https://")
    return url if url.endswith("/mcp") else url + "/mcp"


def resolve_token(token_file: str | None, state_dir: str | None) -> str:
    if token_file is None:
        token = os.environ.get("LLMBDO_TOKEN", "").strip()
        if token:
            return token
        token_file = os.environ.get("LLMBDO_TOKEN_FILE") or None
    path = Path(token_file).expanduser() if token_file else _settings(state_dir).data_dir / "owner.token"
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise BridgeError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise BridgeError(f"the token file {path} is empty")
    return token


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


class Bridge:
    """Forwards one host's stdio session to `/mcp`."""

    def __init__(self, client: httpx.AsyncClient, url: str, token: str) -> None:
        self.client = client
        self.url = url
        self._auth = {"authorization": f"Bearer {token}"}
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stream: asyncio.Task[None] | None = None
        self._out = sys.stdout.buffer

    def write(self, message: Any) -> None:
        self._out.write(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
        self._out.flush()

    def _headers(self, message: dict[str, Any]) -> dict[str, str]:
        headers = {**self._auth, "accept": "application/json, text/event-stream",
                   "content-type": "application/json"}
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get(_ENVELOPE_VERSION), str):
            from mcp.shared.inbound import encode_header_value

            method = message.get("method")
            headers["mcp-protocol-version"] = meta[_ENVELOPE_VERSION]
            if isinstance(method, str):
                headers["mcp-method"] = method
                key = _NAME_PARAM.get(method)
                if key is not None and isinstance(params, dict) and isinstance(params.get(key), str):
                    headers["mcp-name"] = encode_header_value(params[key])
            return headers
        if self.session_id is not None:
            headers["mcp-session-id"] = self.session_id
        if self.protocol_version is not None:
            headers["mcp-protocol-version"] = self.protocol_version
        return headers

    def receive_line(self, line: bytes) -> None:
        text = line.strip()
        if not text:
            return
        try:
            message = decode_json(text)
        except errors.NestingTooDeep as exc:
            self.write(_error(exc.request_id, exc.code, exc.message))
            return
        except errors.ParseError:
            self.write(_error(None, -32700, "Parse error: a line on stdin is not valid JSON"))
            return
        if not isinstance(message, dict):
            self.write(_error(None, -32600, "Each line must be one JSON-RPC message object"))
            return
        task = asyncio.get_running_loop().create_task(self._forward(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, message: dict[str, Any]) -> None:
        import httpx

        rid = message.get("id") if "method" in message else None
        is_request = "id" in message and "method" in message
        try:
            async with self.client.stream("POST", self.url, json=message, headers=self._headers(message)) as resp:
                content_type = resp.headers.get("content-type", "")
                if "text/event-stream" in content_type:
                    async for data in _sse_data(resp):
                        self._relay(data)
                    return
                body = await resp.aread()
                if message.get("method") == "initialize" and resp.status_code == 200:
                    self._session_opened(resp, body)
                if not body:
                    if is_request:
                        self.write(_error(rid, -32603, f"The gateway answered HTTP {resp.status_code} without a body"))
                    return
                try:
                    answer = json.loads(body)
                except ValueError:
                    if is_request:
                        self.write(_error(rid, -32603, f"The gateway answered HTTP {resp.status_code}, not JSON"))
                    return
                if isinstance(answer, dict) and "jsonrpc" not in answer and isinstance(answer.get("error"), dict):
                    answer = {"jsonrpc": "2.0", "id": rid, "error": answer["error"]}  # a refusal (401, 403)
                elif isinstance(answer, dict) and answer.get("id") is None and is_request:
                    answer["id"] = rid
                if is_request or (isinstance(answer, dict) and "error" in answer and answer.get("id") is not None):
                    self.write(answer)
        except httpx.HTTPError as exc:
            if is_request:
                self.write(_error(rid, _UNREACHABLE, f"The gateway is unreachable: {type(exc).__name__}"))

    def _relay(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        self.write(message)

    def _session_opened(self, resp: httpx.Response, body: bytes) -> None:
        session_id = resp.headers.get("mcp-session-id")
        try:
            result = json.loads(body).get("result") or {}
            version = result.get("protocolVersion")
        except (ValueError, AttributeError):
            version = None
        if session_id:
            self.session_id = session_id
            self.protocol_version = version if isinstance(version, str) else None
            if self._stream is None:
                self._stream = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        """The session's GET stream: server notifications (list_changed) for the host."""
        import httpx

        headers = {**self._auth, "accept": "text/event-stream", "mcp-session-id": self.session_id or ""}
        if self.protocol_version:
            headers["mcp-protocol-version"] = self.protocol_version
        with contextlib.suppress(httpx.HTTPError):
            async with self.client.stream("GET", self.url, headers=headers) as resp:
                if resp.status_code != 200:
                    return
                async for data in _sse_data(resp):
                    self._relay(data)

    async def close(self) -> None:
        import httpx

        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 30)
        if self._stream is not None:
            self._stream.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stream
        if self.session_id is not None:
            with contextlib.suppress(httpx.HTTPError):
                await self.client.delete(self.url, headers={**self._auth, "mcp-session-id": self.session_id})


async def _sse_data(resp: httpx.Response) -> Any:
    """The `data` of each SSE event (multi-line data joined), as the spec of EventSource reads it."""
    lines: list[str] = []
    async for line in resp.aiter_lines():
        if line == "":
            if lines:
                yield "\n".join(lines)
                lines = []
        elif line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
    if lines:
        yield "\n".join(lines)


async def run(url: str, token: str) -> int:
    import httpx

    stdin = sys.stdin.buffer
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None), trust_env=False) as client:
        bridge = Bridge(client, url, token)
        try:
            while True:
                line = await asyncio.to_thread(stdin.readline)
                if not line:
                    break
                bridge.receive_line(line)
        finally:
            await bridge.close()
    return 0


def _command(args: argparse.Namespace) -> int:
    try:
        url = resolve_url(args.url, args.state_dir)
        token = resolve_token(args.token_file, args.state_dir)
    except BridgeError as exc:
        print(f"llmbasedos mcp-stdio: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(url, token))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mcp-stdio", help="serve MCP on stdin/stdout, forwarded to the gateway (for Claude Desktop and other hosts)",
        description="A stdio MCP server that forwards every message to the gateway's /mcp door with your token.")
    parser.add_argument("--url", metavar="URL", help="the gateway (http://127.0.0.1:8000) or its /mcp URL "
                        "(default: $LLMBDO_GATEWAY_URL, else the running gateway's gateway.json)")
    parser.add_argument("--token-file", metavar="PATH", help="file holding the token (default: $LLMBDO_TOKEN, "
                        "$LLMBDO_TOKEN_FILE, else the owner token of the state dir)")
    parser.add_argument("--state-dir", metavar="DIR", help="the appliance's state dir (default: $LLMBDO_STATE_DIR, "
                        "else the user's data dir)")
    parser.set_defaults(func=_command)
