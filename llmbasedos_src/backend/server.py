"""`MCPServer`: the base class every backend daemon subclasses.

The base owns the lifecycle — UNIX socket, capability file, param validation, logging, shutdown — and a
service only writes handlers:

    class EchoServer(MCPServer):
        service_name = "echo"
        caps_file = Path(__file__).with_name("caps.json")

        @method("mcp.echo.say")
        async def say(self, params: dict[str, Any], ctx: CallContext) -> Any:
            return params["text"]

Handlers that are plain `def` functions run in a thread pool, so blocking work never stalls the loop. A
plain handler that is quick and never blocks (a stat of one path: microseconds) may say so with
`@method("mcp.x.y", inline=True)`: it then runs on the loop itself, with no thread hop and no task, which
costs far less than the hand-off to a worker. Inline handlers cannot be cancelled (they never wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from llmbasedos.backend.connection import PROGRESS_METHOD, CallContext, Connection
from llmbasedos.backend.params_check import fast_params_check
from llmbasedos.files import atomic_write_text
from llmbasedos.heap import freeze_startup_heap
from llmbasedos.logs import setup_logging
from llmbasedos.protocol import errors
from llmbasedos.protocol.caps import Capability, CapsError, ServiceCaps, parse_caps
from llmbasedos.protocol.messages import (
    Notification,
    Request,
    RequestId,
    Response,
    error_response,
    parse_message,
    result_response,
)
from llmbasedos.settings import Settings

__all__ = ["MCPServer", "CallContext", "method", "to_rpc_error", "CANCEL_METHOD", "PROGRESS_METHOD"]

log = logging.getLogger("llmbasedos.server")

CANCEL_METHOD = "mcp.cancel"  # notification {"id": <request id>}: cancel that call

F = TypeVar("F", bound=Callable[..., Any])


def method(name: str, *, inline: bool = False) -> Callable[[F], F]:
    """Mark a server method as the handler of JSON-RPC method `name`.

    `inline=True` (plain `def` handlers only) runs the handler on the event loop instead of the thread
    pool: only for work that takes microseconds and never blocks, since every other call waits meanwhile.
    """

    def deco(fn: F) -> F:
        if inline and inspect.iscoroutinefunction(fn):
            raise TypeError(f"{name}: inline=True is for plain def handlers; async ones already run on the loop")
        fn.__mcp_method__ = name  # type: ignore[attr-defined]
        fn.__mcp_inline__ = inline  # type: ignore[attr-defined]
        return fn

    return deco


def to_rpc_error(exc: BaseException) -> errors.RPCError:
    """A handler's exception as its caller sees it (errors.wire_error); a bug is logged with its traceback,
    which never leaves the server."""
    error = errors.wire_error(exc)
    if type(error) is errors.InternalError and not isinstance(exc, errors.RPCError):
        log.error("unhandled exception in handler", exc_info=exc)
    return error


class _Handler:
    __slots__ = ("cap", "fn", "inline", "is_async", "params_fast", "params_validator", "result_validator")

    def __init__(self, fn: Callable[..., Any], cap: Capability, inline: bool = False) -> None:
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        self.inline = inline
        self.cap = cap
        self.params_validator = Draft202012Validator(cap.params_schema)
        self.params_fast = fast_params_check(cap.params_schema)
        self.result_validator = Draft202012Validator(cap.result_schema) if cap.result_schema else None


class MCPServer:
    """Base of every backend daemon. Subclasses set `service_name`, `caps_file` and write handlers."""

    service_name: ClassVar[str] = ""
    caps_file: ClassVar[Path]
    # A mixin of handlers may bring its own fragment: a JSON file with a "capabilities" array that is
    # appended to the server's caps. Collected from every class of the MRO that defines it.
    caps_fragment: ClassVar[Path | None] = None
    shutdown_grace: ClassVar[float] = 10.0

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.log = logging.getLogger(f"llmbasedos.{self.service_name}")
        self.caps = self._load_caps()
        self._handlers = self._bind_handlers()
        self.executor = ThreadPoolExecutor(max_workers=int(os.environ.get("LLMBDO_WORKERS", "8")),
                                           thread_name_prefix=self.service_name)
        self._connections: set[Connection] = set()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        # Results of plain-def handlers, handed back to the loop in batches (see _run_sync).
        self._finished: list[tuple[asyncio.Future[Any], bool, Any]] = []
        self._finished_lock = threading.Lock()
        self._finished_wake = False
        self._owns_process = False  # set by run(): the server is the program, not a guest of a test process

    # -- paths ---------------------------------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        return self.settings.run_dir / f"{self.service_name}.sock"

    @property
    def cap_path(self) -> Path:
        return self.settings.run_dir / f"{self.service_name}.cap.json"

    # -- start-up checks -----------------------------------------------------------------------------

    def _load_caps(self) -> ServiceCaps:
        source = self.caps_file.name
        raw = _read_json(self.caps_file)
        for klass in type(self).__mro__:
            fragment = vars(klass).get("caps_fragment")
            if fragment is not None:
                extra = _read_json(fragment)
                if not isinstance(extra, dict) or not isinstance(extra.get("capabilities"), list):
                    raise CapsError(f"{fragment.name}: must be an object with a 'capabilities' array")
                raw = {**raw, "capabilities": [*raw.get("capabilities", []), *extra["capabilities"]]}
        caps = parse_caps(raw, source)
        if caps.service_name != self.service_name:
            raise CapsError(f"{source}: service_name {caps.service_name!r} is not {self.service_name!r}")
        self._caps_raw = raw
        return caps

    def _bind_handlers(self) -> dict[str, _Handler]:
        by_method = {c.method: c for c in self.caps.capabilities}
        handlers: dict[str, _Handler] = {}
        for klass in reversed(type(self).__mro__):
            for attr in vars(klass).values():
                name = getattr(attr, "__mcp_method__", None)
                if name is None:
                    continue
                if name not in by_method:
                    raise CapsError(f"{self.caps_file.name}: handler for {name!r} has no capability entry")
                handlers[name] = _Handler(functools.partial(attr, self), by_method[name],
                                          bool(getattr(attr, "__mcp_inline__", False)))
        missing = set(by_method) - set(handlers)
        if missing:
            raise CapsError(f"{self.caps_file.name}: no handler for {sorted(missing)}")
        # partial() hides coroutine-ness from inspect in some versions: look at the function itself.
        for h in handlers.values():
            h.is_async = inspect.iscoroutinefunction(h.fn.func)  # type: ignore[attr-defined]
        return handlers

    # -- hooks for subclasses ------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Called before the socket listens."""

    async def on_stop(self) -> None:
        """Called after the last call has been answered."""

    async def call_unlisted(self, method_name: str, params: Any, ctx: CallContext) -> Any:
        """A call of a method the server's own caps do not list: for a server whose methods come and go at run
        time (the upstream program publishes one service per registered MCP server). No such method by default."""
        raise errors.MethodNotFound(f"Method not found: {method_name}")

    # -- dispatch ------------------------------------------------------------------------------------

    def _map_params(self, handler: _Handler, params: Any) -> dict[str, Any]:
        if params is None:
            return {}
        if isinstance(params, list):
            names = handler.cap.positional
            if len(params) > len(names):
                raise errors.InvalidParams(
                    f"{handler.cap.method} takes at most {len(names)} positional params, got {len(params)}")
            return dict(zip(names, params, strict=False))
        return params  # type: ignore[no-any-return]

    def _checked_params(self, handler: _Handler, raw: Any) -> dict[str, Any]:
        params = self._map_params(handler, raw)
        fast = handler.params_fast
        error = None if fast is not None and fast(params) else best_match(handler.params_validator.iter_errors(params))
        if error is not None:
            where = "params" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            raise errors.InvalidParams(f"{where}: {error.message}")
        return params

    def _checked_result(self, handler: _Handler, result: Any) -> Any:
        if self.settings.debug and handler.result_validator is not None:
            bad = best_match(handler.result_validator.iter_errors(result))
            if bad is not None:
                log.error("result of %s fails its result_schema: %s", handler.cap.method, bad.message)
                raise errors.InternalError("Result does not match the declared result_schema")
        return result

    async def _invoke(self, req: Request, ctx: CallContext) -> Any:
        handler = self._handlers.get(req.method)
        if handler is None:
            return await self.call_unlisted(req.method, req.params, ctx)
        params = self._checked_params(handler, req.params)
        if handler.is_async:
            result = await handler.fn(params, ctx)
        elif handler.inline:
            result = handler.fn(params, ctx)
        else:
            assert self._loop is not None
            result = await self._run_sync(handler.fn, params, ctx)
        return self._checked_result(handler, result)

    def _run_inline(self, conn: Connection, rid: RequestId, method_name: str, raw: Any, caller: Any,
                    handler: _Handler) -> None:
        """Answer a call of an inline handler right here: no task, no thread, nothing to cancel."""
        assert self._loop is not None
        try:
            fast = handler.params_fast
            # The accept-only check inline for the common named-params call; anything else takes the long way.
            params = raw if fast is not None and type(raw) is dict and fast(raw) else self._checked_params(handler, raw)
            result = handler.fn(params, CallContext(rid, method_name, conn, self._loop, caller))
            if self.settings.debug:
                result = self._checked_result(handler, result)
            response = {"jsonrpc": "2.0", "id": rid, "result": result}
        except Exception as exc:  # the same boundary as _run
            response = error_response(rid, to_rpc_error(exc))
        conn.send(response)

    def _run_sync(self, fn: Callable[..., Any], params: dict[str, Any], ctx: CallContext) -> asyncio.Future[Any]:
        """Run a plain-def handler in the thread pool.

        Like run_in_executor, but the results of calls that finish close together wake the loop once, not
        once each: under load the per-call wake-up of the loop was the largest cost of a thread-pool call.
        """
        assert self._loop is not None
        fut = self._loop.create_future()
        self.executor.submit(self._sync_job, fut, fn, params, ctx)
        return fut

    def _sync_job(self, fut: asyncio.Future[Any], fn: Callable[..., Any], params: dict[str, Any],
                  ctx: CallContext) -> None:
        if fut.cancelled():
            return  # the caller gave up before a worker was free
        try:
            outcome: tuple[asyncio.Future[Any], bool, Any] = (fut, True, fn(params, ctx))
        except Exception as exc:
            outcome = (fut, False, exc)
        except BaseException as exc:  # never let SystemExit & co. escape into a worker thread unseen
            outcome = (fut, False, RuntimeError(f"handler raised {type(exc).__name__}"))
        with self._finished_lock:
            self._finished.append(outcome)
            wake = not self._finished_wake
            self._finished_wake = True
        if wake:
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                self._loop.call_soon_threadsafe(self._deliver_finished)

    def _deliver_finished(self) -> None:
        with self._finished_lock:
            finished, self._finished = self._finished, []
            self._finished_wake = False
        for fut, ok, value in finished:
            if fut.cancelled():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    async def _run(self, conn: Connection, req: Request) -> None:
        assert self._loop is not None
        try:
            ctx = CallContext(req.id, req.method, conn, self._loop, req.caller)
            result = await self._invoke(req, ctx)
            response = result_response(req.id, result)
        except asyncio.CancelledError:
            response = error_response(req.id, errors.Cancelled("Call cancelled"))
        except Exception as exc:  # the one place exceptions become wire errors
            response = error_response(req.id, to_rpc_error(exc))
        finally:
            conn.tasks.pop(req.id, None)
        conn.send(response)
        await conn.drain_if_needed()

    async def _run_one_for_batch(self, conn: Connection, obj: Any) -> dict[str, Any] | None:
        try:
            msg = parse_message(obj)
        except errors.InvalidRequest as exc:
            return error_response(None, exc)
        if not isinstance(msg, Request):
            return None
        assert self._loop is not None
        ctx = CallContext(msg.id, msg.method, conn, self._loop, msg.caller)
        try:
            return result_response(msg.id, await self._invoke(msg, ctx))
        except Exception as exc:
            return error_response(msg.id, to_rpc_error(exc))

    async def _run_batch(self, conn: Connection, batch: list[Any]) -> None:
        answers = await asyncio.gather(*(self._run_one_for_batch(conn, item) for item in batch))
        out = [a for a in answers if a is not None]
        if out:
            conn.send(out)

    def _dispatch(self, conn: Connection, value: Any) -> None:
        assert self._loop is not None
        if type(value) is dict:
            # The common case first: a well-formed request for an inline handler is answered without building
            # a Request. Whatever does not fit exactly goes on to parse_message, which words the errors.
            method_name = value.get("method")
            rid: Any = value.get("id")
            t = type(rid)
            if (t is int or t is str) and type(method_name) is str and value.get("jsonrpc") == "2.0":
                handler = self._handlers.get(method_name)
                params = value.get("params")
                if (handler is not None and handler.inline and rid not in conn.tasks
                        and (params is None or type(params) is dict or type(params) is list)):
                    self._run_inline(conn, rid, method_name, params, value.get("caller"), handler)
                    return
        if isinstance(value, list):
            if not value:
                conn.send(error_response(None, errors.InvalidRequest("Empty batch")))
                return
            task = self._loop.create_task(self._run_batch(conn, value))
            conn.tasks[f"batch:{id(task)}"] = task
            task.add_done_callback(lambda t: conn.tasks.pop(f"batch:{id(t)}", None))
            return
        try:
            msg = parse_message(value)
        except errors.InvalidRequest as exc:
            rid = exc.data.get("id") if isinstance(exc.data, dict) else None
            conn.send(error_response(rid, errors.InvalidRequest(exc.message)))
            return
        if isinstance(msg, Request):
            if msg.id in conn.tasks:
                conn.send(error_response(msg.id, errors.InvalidRequest(f"Request id {msg.id!r} already in flight")))
                return
            handler = self._handlers.get(msg.method)
            if handler is not None and handler.inline:
                self._run_inline(conn, msg.id, msg.method, msg.params, msg.caller, handler)
                return
            conn.tasks[msg.id] = self._loop.create_task(self._run(conn, msg))
        elif isinstance(msg, Notification):
            if msg.method == CANCEL_METHOD and isinstance(msg.params, dict):
                target = conn.tasks.get(msg.params.get("id"))  # type: ignore[arg-type]
                if target is not None:
                    target.cancel()
        elif isinstance(msg, Response):
            pass  # servers do not send requests, so a response is stray; dropping it is the safe answer

    # -- lifecycle -----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        if self._stop is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def _write_cap_file(self) -> None:
        data = dict(self._caps_raw)
        data["socket"] = str(self.socket_path)
        data["pid"] = os.getpid()
        atomic_write_text(self.cap_path, json.dumps(data, indent=2))

    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._stop is None:
            self._stop = asyncio.Event()
        run_dir = self.settings.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        await self.on_start()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a stale socket from a crashed run
        old_umask = os.umask(0o117)  # the socket is born 0660, never briefly wider
        try:
            loop = asyncio.get_running_loop()
            max_frame = self.settings.max_frame
            server = await loop.create_unix_server(lambda: Connection(self._dispatch, self._connections, max_frame),
                                                   path=str(self.socket_path))
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o660)
        if self._owns_process:
            freeze_startup_heap()
        self._write_cap_file()
        self.log.info("listening", extra={"socket": str(self.socket_path)})
        self.ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(server)

    async def _shutdown(self, server: asyncio.AbstractServer) -> None:
        # The cap file goes first so the gateway stops routing here before the socket closes.
        with contextlib.suppress(FileNotFoundError):
            self.cap_path.unlink()
        server.close()
        pending = [t for c in self._connections for t in c.tasks.values()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.shutdown_grace)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=2)
        for conn in list(self._connections):
            conn.close()
        # Closing writes out what is buffered first; give the last answers a moment to reach their callers.
        deadline = self._loop.time() + 2 if self._loop is not None else 0
        while self._connections and self._loop is not None and self._loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.abort()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        await self.on_stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.log.info("stopped")

    def run(self) -> None:
        """Run until SIGTERM or SIGINT (blocking)."""

        self._owns_process = True

        async def main() -> None:
            loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            await self.serve()

        _run_loop(main())

    @classmethod
    def main(cls) -> None:
        """Entry point of `python -m llmbasedos.servers.<name>`."""
        settings = Settings.from_env()
        setup_logging(settings.log_level, settings.log_format)
        try:
            server = cls(settings)
        except CapsError as exc:
            logging.getLogger("llmbasedos").error("refusing to start: %s", exc)
            raise SystemExit(2) from None
        server.run()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CapsError(f"{path.name}: cannot be read as JSON: {exc}") from None


def _run_loop(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional; the stdlib loop works, only slower
        asyncio.run(coro)
    else:
        uvloop.run(coro)

