"""One upstream MCP server, held by one client session of the official SDK, kept alive for as long as it is
registered.

A `Link` connects (stdio: the server runs as a child of the launcher, see launch.py; Streamable HTTP: the
URL, either protocol era), lists what the server offers, tells its owner, and then waits: for the session to
end (the child exited, the pipe closed), for a ping to fail (a hung or vanished server), or for the server to
say its tool list changed (then it lists again). When the session ends it is started again with backoff, so
a call made after a crash reaches a fresh session, never a stale one. Calls made while the server is down
wait for it, up to its connect timeout, then fail with a message that says why.

Results are what the upstream sent: requests go out through the session's typed request objects and their
answers come back as raw dicts (the SDK still checks them against the negotiated protocol's schema), so a
tool's content blocks, `structuredContent`, `isError` and `_meta` reach the host untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx2
from mcp import Client, types
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST, METHOD_NOT_FOUND, REQUEST_TIMEOUT
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import TypeAdapter, ValidationError

from llmbasedos.servers.upstream.registry import RegistryError, ServerEntry

__all__ = ["Link", "Listing", "UpstreamError", "probe"]

log = logging.getLogger("llmbasedos.upstream")

# Answers kept as the raw dicts the server sent (the SDK types the parameter for its models; a TypeAdapter
# is what it accepts at run time for any other shape).
_RAW: Any = TypeAdapter(dict[str, Any])
_PING_EVERY = 10.0
_PING_TIMEOUT = 10.0
_MAX_PAGES = 50  # a server that pages forever is cut off here
_MAX_BACKOFF = 60.0
ProgressSink = Callable[[float, float | None, str | None], None]


class UpstreamError(Exception):
    """Something about an upstream server went wrong; the message says what, never a secret."""


@dataclass
class Listing:
    tools: list[dict[str, Any]] = field(default_factory=list)
    prompts: bool = False  # the server offers prompts
    resources: bool = False
    server_info: dict[str, Any] | None = None
    protocol_version: str | None = None


# -- transports ---------------------------------------------------------------------------------------------

@dataclass
class _Watch:
    """What the watched transport saw: the end of the stream, and lines that were not JSON-RPC."""

    closed: asyncio.Event = field(default_factory=asyncio.Event)
    garbage: int = 0


@asynccontextmanager
async def _watched(inner: Any, watch: _Watch) -> AsyncIterator[Any]:
    """The SDK's transport streams, with the end of the read stream and the garbage on it noticed."""
    async with inner as (read, write):
        ours_send, ours_read = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def pump() -> None:
            try:
                async with ours_send:
                    async for item in read:
                        if isinstance(item, Exception):
                            watch.garbage += 1
                            continue  # a line that is not JSON-RPC answers nothing; the session goes on
                        await ours_send.send(item)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
            finally:
                watch.closed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            try:
                yield ours_read, write
            finally:
                tg.cancel_scope.cancel()


def _stdio_params(entry: ServerEntry, env: dict[str, str]) -> StdioServerParameters:
    assert entry.command is not None
    launcher = [sys.executable, "-m", "llmbasedos.servers.upstream.launch", "--parent", str(os.getpid()),
                "--keep", ",".join(sorted(env)), "--", entry.command, *entry.args]
    return StdioServerParameters(command=launcher[0], args=launcher[1:], env=env,
                                 cwd=str(entry.cwd) if entry.cwd is not None else None)


@asynccontextmanager
async def _session(entry: ServerEntry, watch: _Watch, log_dir: Path | None,
                   on_message: Callable[[Any], Awaitable[None]] | None) -> AsyncIterator[Client]:
    """An initialised client session to the server; UpstreamError when it cannot be had in time."""
    try:
        env, headers = entry.resolve()
    except RegistryError as exc:
        raise UpstreamError(str(exc)) from None
    async with AsyncExitStack() as stack:
        if entry.command is not None:
            errlog: TextIO = (stack.enter_context(open(log_dir / f"upstream-{entry.name}.log", "a",  # noqa: SIM115
                                                        encoding="utf-8"))
                               if log_dir is not None else open(os.devnull, "w"))  # noqa: SIM115
            if log_dir is None:
                stack.callback(errlog.close)
            transport = _watched(stdio_client(_stdio_params(entry, env), errlog=errlog), watch)
        else:
            assert entry.url is not None
            http = await stack.enter_async_context(
                httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(entry.timeouts["connect"],
                                                                          read=entry.timeouts["call"])))
            transport = _watched(streamable_http_client(entry.url, http_client=http), watch)

        async def handler(message: Any) -> None:
            if on_message is not None:
                await on_message(message)

        # The connect timeout is the session's default read timeout: initialize and pings are bounded by it.
        # (A cancel scope around entering the client would not do: the transport's task groups outlive it.)
        client = Client(transport, cache=None, message_handler=handler, read_timeout_seconds=entry.timeouts["connect"],
                        client_info=types.Implementation(name="llmbasedos-upstream", version="1"))
        try:
            await stack.enter_async_context(client)
        except OSError as exc:
            raise UpstreamError(f"cannot start or reach the server: {exc.strerror or exc}") from None
        except MCPError as exc:
            raise UpstreamError(_closed_message(exc, watch, "during initialize")) from None
        except (httpx2.HTTPError, ValidationError) as exc:
            raise UpstreamError(f"initialize failed: {type(exc).__name__}: {str(exc)[:200]}") from None
        yield client


def _without_envelope(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer without what belongs to the upstream's protocol era rather than to the result: the door
    that serves it to a host adds its own (`resultType`, the `io.modelcontextprotocol/` keys of `_meta`)."""
    answer.pop("resultType", None)
    meta = answer.get("_meta")
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if not k.startswith("io.modelcontextprotocol/")}
        if kept:
            answer["_meta"] = kept
        else:
            del answer["_meta"]
    return answer


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside the exception groups anyio's task groups wrap errors in."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        picked = next((e for e in exc.exceptions if isinstance(e, UpstreamError)), exc.exceptions[0])
        exc = picked
    return exc


def _closed_message(exc: MCPError, watch: _Watch, when: str) -> str:
    if exc.error.code == REQUEST_TIMEOUT:
        # Checked first: the transport is closed by the time a timed-out start-up is reported.
        return f"no answer {when}: {exc.error.message}"
    if watch.closed.is_set():
        return f"the server closed the connection {when}" + (
            f" after {watch.garbage} line(s) that were not JSON-RPC" if watch.garbage else "")
    return f"{exc.error.message} {when}"


async def _pages(client: Client, make: Callable[[str | None], Any], key: str, timeout: float) -> list[Any]:
    out: list[Any] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        raw = await client.session.send_request(make(cursor), _RAW, request_read_timeout_seconds=timeout)
        items = raw.get(key)
        if isinstance(items, list):
            out.extend(i for i in items if isinstance(i, dict))
        cursor = raw.get("nextCursor")
        if not isinstance(cursor, str) or not cursor:
            break
    return out


async def _list(client: Client, timeout: float) -> Listing:
    caps = client.server_capabilities
    info = client.server_info
    listing = Listing(prompts=caps.prompts is not None, resources=caps.resources is not None,
                      server_info=info.model_dump(mode="json", exclude_none=True) if info is not None else None,
                      protocol_version=client.protocol_version)
    if caps.tools is not None:
        listing.tools = await _pages(
            client, lambda c: types.ListToolsRequest(params=types.PaginatedRequestParams(cursor=c)), "tools", timeout)
    return listing


async def probe(entry: ServerEntry, *, log_dir: Path | None = None) -> Listing:
    """Connect, list what the server offers, and close: `llmbasedos mcp test`."""
    watch = _Watch()
    try:
        async with _session(entry, watch, log_dir, None) as client:
            with anyio.fail_after(entry.timeouts["list"]):
                return await _list(client, entry.timeouts["list"])
    except TimeoutError:
        raise UpstreamError(f"no answer to tools/list within {entry.timeouts['list']:g} s") from None
    except Exception as exc:  # anyio's task groups wrap what went wrong: say it in one line
        raise _as_upstream_error(_leaf(exc), watch) from None


def _as_upstream_error(cause: BaseException, watch: _Watch) -> UpstreamError:
    if isinstance(cause, UpstreamError):
        return cause
    if isinstance(cause, MCPError):
        return UpstreamError(_closed_message(cause, watch, "during start-up"))
    if isinstance(cause, httpx2.ConnectError | OSError):
        return UpstreamError(f"cannot reach the server ({type(cause).__name__})")
    return UpstreamError(f"{type(cause).__name__}: {cause}"[:300])


# -- the long-lived link ------------------------------------------------------------------------------------

class Link:
    """The session to one registered server, for as long as it is registered."""

    def __init__(self, entry: ServerEntry, *, log_dir: Path | None,
                 on_change: Callable[[Link], None]) -> None:
        self.entry = entry
        self.name = entry.name
        self.log_dir = log_dir
        self._on_change = on_change
        self.state = "starting"
        self.since = time.time()
        self.listing: Listing | None = None
        self.last_error: str | None = None
        self.calls = self.errors = self.restarts = 0
        self._client: Client | None = None
        self._watch = _Watch()
        self._ready = asyncio.Event()
        self._relist = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"upstream:{self.name}")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=8)
        if not done:  # a session that does not close in time is torn down the hard way
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _set(self, state: str, error: str | None = None) -> None:
        if state != self.state:
            self.since = time.time()
        self.state = state
        if error is not None:
            self.last_error = error
        self._on_change(self)

    async def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                await self._one_session()
                failures = 0  # it was up: the next start is quick
            except Exception as exc:  # the SDK's and anyio's own faults too: they end this server's session only
                failures += 1
                cause = _leaf(exc)
                if not isinstance(cause, UpstreamError | MCPError | OSError | httpx2.HTTPError):
                    log.error("upstream %s: session failed", self.name, exc_info=cause)
                self._set("failed" if self.listing is None else "restarting",
                          str(_as_upstream_error(cause, self._watch)))
            self._client = None
            self._ready.clear()
            if self._stop.is_set():
                break
            self.restarts += 1
            if self.state == "ready":
                self._set("restarting")
            delay = min(_MAX_BACKOFF, self.entry.retry_backoff * (2 ** max(0, failures - 1)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _connect(self) -> tuple[AsyncExitStack, Client, Listing]:
        """A session with its listing, retried `retry.count` times (connect and list only)."""
        attempts = self.entry.retry_count + 1
        for attempt in range(attempts):
            self._watch = _Watch()
            stack = AsyncExitStack()
            try:
                client = await stack.enter_async_context(_session(self.entry, self._watch, self.log_dir,
                                                                  self._on_message))
                try:
                    with anyio.fail_after(self.entry.timeouts["list"]):
                        listing = await _list(client, self.entry.timeouts["list"])
                except TimeoutError:
                    raise UpstreamError(f"no answer to tools/list within {self.entry.timeouts['list']:g} s") from None
                except MCPError as exc:
                    raise UpstreamError(_closed_message(exc, self._watch, "while listing")) from None
                return stack, client, listing
            except BaseException:
                await stack.aclose()
                if attempt + 1 >= attempts:
                    raise
            await asyncio.sleep(self.entry.retry_backoff * (attempt + 1))
        raise AssertionError("unreachable")

    async def _one_session(self) -> None:
        stack, client, listing = await self._connect()
        async with stack:
            self._client, self.listing = client, listing
            self._ready.set()
            self._set("ready")
            listener = asyncio.ensure_future(self._listen(client))
            try:
                await self._serve(client)
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listener

    async def _listen(self, client: Client) -> None:
        """On 2026-07-28 sessions, list changes come on a `subscriptions/listen` stream, not on their own."""
        if client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            return  # handshake-era servers send the notifications to _on_message
        caps = client.server_capabilities
        tools = bool(caps.tools and caps.tools.list_changed)
        prompts = bool(caps.prompts and caps.prompts.list_changed)
        resources = bool(caps.resources and caps.resources.list_changed)
        if not (tools or prompts or resources):
            return
        try:
            async with client.listen(tools_list_changed=tools, prompts_list_changed=prompts,
                                     resources_list_changed=resources) as subscription:
                async for _event in subscription:
                    self._relist.set()
        except Exception as exc:  # a server that cannot listen still serves; its list is read at each start
            log.info("upstream %s: no change stream (%s)", self.name, type(exc).__name__)

    async def _serve(self, client: Client) -> None:
        """Until the session ends: pings, and a fresh listing whenever the server says its tools changed."""
        while not self._stop.is_set():
            waits = {asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(self._watch.closed.wait()),
                     asyncio.ensure_future(self._relist.wait())}
            try:
                await asyncio.wait(waits, timeout=_PING_EVERY, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if self._stop.is_set():
                return
            if self._watch.closed.is_set():
                raise UpstreamError("the server closed the connection" + (
                    f" after {self._watch.garbage} line(s) that were not JSON-RPC" if self._watch.garbage else ""))
            try:
                if self._relist.is_set():
                    self._relist.clear()
                    with anyio.fail_after(self.entry.timeouts["list"]):
                        self.listing = await _list(client, self.entry.timeouts["list"])
                    self._set("ready")
                else:
                    await self._ping(client)
            except TimeoutError:
                raise UpstreamError("the server stopped answering (ping or list timed out)") from None
            except MCPError as exc:
                raise UpstreamError(_closed_message(exc, self._watch, "")) from None

    async def _ping(self, client: Client) -> None:
        try:
            with anyio.fail_after(_PING_TIMEOUT):
                await client.send_ping()
        except MCPError as exc:
            # "Method not found" means the server is alive (2026-07-28 servers may no longer know `ping`); any
            # other error (a timeout, a closed connection, an HTTP server that forgot our session) means not.
            if exc.error.code != METHOD_NOT_FOUND or self._watch.closed.is_set():
                raise

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification | types.PromptListChangedNotification
                      | types.ResourceListChangedNotification):
            self._relist.set()

    # -- calls --------------------------------------------------------------------------------------------

    async def _session_now(self) -> Client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.entry.timeouts["connect"]
        while True:
            try:
                await asyncio.wait_for(self._ready.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                why = f": {self.last_error}" if self.last_error else ""
                raise UpstreamError(f"upstream {self.name} is not ready ({self.state}){why}") from None
            if not self._watch.closed.is_set() and self._client is not None:
                return self._client
            # The session just ended and the link has not noticed yet: the call waits for the next one.
            await asyncio.sleep(0.02)

    async def request(self, request: Any, *, timeout: float, progress: ProgressSink | None = None) -> dict[str, Any]:
        """One request to the server, its answer as the server sent it."""
        client = await self._session_now()
        watch = self._watch

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            if progress is not None:
                progress(value, total, message)

        self.calls += 1
        try:
            answer: dict[str, Any] = await client.session.send_request(
                request, _RAW, request_read_timeout_seconds=timeout,
                progress_callback=on_progress if progress else None)  # type: ignore[arg-type]
            return _without_envelope(answer)
        except MCPError as exc:
            self.errors += 1
            if watch.closed.is_set():
                raise UpstreamError(f"upstream {self.name} closed the connection during the call") from None
            if exc.error.code in (CONNECTION_CLOSED, INVALID_REQUEST) and "session" in exc.error.message.lower():
                watch.closed.set()  # an HTTP server that restarted forgot our session: the link starts a new one
                raise UpstreamError(f"upstream {self.name} lost the session; a new one is being opened") from None
            raise
        except ValidationError as exc:
            self.errors += 1
            raise UpstreamError(f"upstream {self.name} answered something that is not a valid MCP result "
                                f"({exc.error_count()} problem(s))") from None
        except (httpx2.HTTPError, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self.errors += 1
            watch.closed.set()
            raise UpstreamError(f"upstream {self.name} cannot be reached: {type(exc).__name__}") from None

    def describe(self) -> dict[str, Any]:
        listing = self.listing
        return {"state": self.state, "transport": self.entry.transport, "since": self.since,
                "calls": self.calls, "errors": self.errors, "restarts": self.restarts,
                "last_error": self.last_error,
                "server_info": listing.server_info if listing else None,
                "protocol_version": listing.protocol_version if listing else None}
