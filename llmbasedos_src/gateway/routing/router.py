"""The router: from a method name to the code that answers it, with policy, metrics and audit around it.

It routes strings and dicts and never sees a socket: both front doors (and the standard-MCP door) call
`Router.call`. Methods are either local (implemented inside the gateway and registered with
`register_local`) or belong to a backend service discovered through its capability file.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from llmbasedos.gateway.policy.gatekeeper import ClientIdentity, Policy
from llmbasedos.gateway.routing.metrics import Metrics
from llmbasedos.gateway.routing.upstream import Upstream, UpstreamPool
from llmbasedos.protocol import errors
from llmbasedos.protocol.caps import Capability, CapsError, ServiceCaps
from llmbasedos.protocol.messages import RequestId
from llmbasedos.rpc.client import RPCClient

__all__ = ["Router", "RoutedCall", "AnswerFn", "GatewayCall", "LocalHandler", "NotifyFn", "outcome_of",
           "capability_to_dict"]

log = logging.getLogger("llmbasedos.gateway.routing.router")

NotifyFn = Callable[[str, dict[str, Any]], None]
"""Receives (method, params) of a notification for the caller; params["id"] is the caller's request id."""

LocalHandler = Callable[["GatewayCall", dict[str, Any]], Awaitable[Any]]

AnswerFn = Callable[["RoutedCall", Any, "errors.RPCError | None"], None]
"""Receives (call, result, error) once when a call started with `Router.start` ends; error is None on success."""

GATEWAY_SERVICE = "gateway"
_UNKNOWN_METHOD_LABEL = "(unknown)"

_OUTCOMES = {
    errors.FORBIDDEN: "forbidden",
    errors.UNAUTHORIZED: "unauthorized",
    errors.RATE_LIMITED: "rate_limited",
    errors.QUOTA_EXCEEDED: "quota_exceeded",
    errors.SERVICE_UNAVAILABLE: "unavailable",
    errors.TIMEOUT: "timeout",
    errors.CANCELLED: "cancelled",
    errors.METHOD_NOT_FOUND: "not_found",
    errors.INVALID_PARAMS: "invalid_params",
}


def outcome_of(exc: BaseException) -> str:
    """A short, bounded label for how a call ended (metrics and audit)."""
    if isinstance(exc, errors.RPCError):
        return _OUTCOMES.get(exc.code, "error")
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"


@dataclass(slots=True, eq=False)
class GatewayCall:
    """What a local handler knows of its call, and how it talks to the caller before it returns.

    The handler's task is cancelled when the caller disconnects or cancels the call; `disconnected` is also
    set when the connection goes away, for handlers that poll instead.
    """

    client: ClientIdentity
    request_id: RequestId | None
    method: str
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    _notify: NotifyFn | None = None

    def notify(self, method: str, params: dict[str, Any]) -> None:
        """Send a notification to the caller, with params["id"] set to the caller's request id.

        Call it from the event loop (a thread uses `loop.call_soon_threadsafe(call.notify, ...)`)."""
        if self._notify is None or self.disconnected.is_set():
            return
        self._notify(method, {**params, "id": self.request_id})


class _Local:
    __slots__ = ("cap", "handler", "public", "validator")

    def __init__(self, handler: LocalHandler, cap: Capability, public: bool) -> None:
        self.handler = handler
        self.cap = cap
        self.public = public
        self.validator = Draft202012Validator(cap.params_schema)


class _Service:
    __slots__ = ("caps", "source", "upstream")

    def __init__(self, caps: ServiceCaps, upstream: Upstream, source: str) -> None:
        self.caps = caps
        self.upstream = upstream
        self.source = source


class RoutedCall:
    """A call to a backend started by `Router.start`: no task, no coroutine. The backend's answer resolves it
    in the upstream's read callback (it stands in for the future there), and it then does what the end of
    `Router.call` does — metrics, audit — and hands the answer to its caller. It is the upstream's `Waiter`:
    it carries its deadline and relays its call's notifications.
    """

    __slots__ = ("_answer", "_backend", "_notify", "_rid", "_router", "_upstream", "client", "deadline",
                 "finished", "method", "request_id", "started")

    def __init__(self, router: Router, client: ClientIdentity, method: str, request_id: RequestId,
                 answer: AnswerFn, notify: NotifyFn | None, started: float) -> None:
        self._router = router
        self._answer = answer
        self._notify = notify
        self._upstream: Upstream | None = None
        self._backend: RPCClient | None = None
        self._rid = 0
        self.client = client
        self.method = method
        self.request_id = request_id
        self.started = started
        self.deadline = started + router.call_timeout  # time.perf_counter(), as `started`
        self.finished = False

    # -- resolved by the upstream's read loop, like a future

    def done(self) -> bool:
        return self.finished

    def set_result(self, value: Any) -> None:
        self._end("ok", value, None)

    def set_exception(self, exc: BaseException) -> None:
        error = errors.wire_error(exc)
        self._end(outcome_of(error), None, error)

    def relay(self, method: str, params: Any) -> None:
        """A notification the backend sent for this call: to the caller (see `_relay`)."""
        if self._notify is not None:
            _relay(self._notify, self.request_id, method, params)

    # -- ended by the caller or the clock

    def cancel(self) -> None:
        """The caller cancelled the call or went away: the backend is told to stop."""
        self._stop("cancelled", errors.Cancelled("Call cancelled"))

    def expire(self) -> None:
        timeout = self._router.call_timeout
        self._stop("timeout", errors.Timeout(f"{self.method} timed out after {timeout:g} s"))

    def _stop(self, outcome: str, error: errors.RPCError) -> None:
        if not self.finished:
            if self._backend is not None:
                self._backend.cancel(self._rid)  # the answer, if it still comes, is dropped
            self._end(outcome, None, error)

    def _end(self, outcome: str, result: Any, error: errors.RPCError | None) -> None:
        if self.finished:
            return
        self.finished = True
        if self._upstream is not None and self._backend is not None:
            self._upstream.ended(self._backend, self._rid)
        router = self._router
        elapsed = time.perf_counter() - self.started
        router.metrics.observe(self.method, outcome, elapsed)
        try:
            router.policy.record_call(self.client, self.method, outcome, elapsed * 1000.0)
        except Exception:
            log.exception("audit of a routed call failed")
        try:
            self._answer(self, result, error)
        except Exception:  # raised into the upstream's read callback, it would take the connection down
            log.exception("answering a routed call failed")


def _relay(notify: NotifyFn, request_id: RequestId | None, method: str, params: Any) -> None:
    """A notification a backend sent for a call (progress, chunks): to the caller, under the caller's id."""
    if isinstance(params, dict):
        notify(method, {**params, "id": request_id})


def capability_to_dict(cap: Capability) -> dict[str, Any]:
    out: dict[str, Any] = {
        "method": cap.method,
        "description": cap.description,
        "params_schema": cap.params_schema,
        "result_schema": cap.result_schema,
        "annotations": cap.annotations,
    }
    if cap.positional:
        out["positional"] = list(cap.positional)
    if cap.mcp_tool is not None:
        out["mcp_tool"] = cap.mcp_tool
    if cap.mcp_kind != "tool":
        out["mcp_kind"] = cap.mcp_kind
    return out


def _namespace(method: str) -> str:
    parts = method.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == "mcp" else GATEWAY_SERVICE


def _local_capability(method: str, capability: dict[str, Any]) -> Capability:
    if not isinstance(capability, dict):
        raise CapsError(f"local method {method}: capability must be a dict")
    if capability.get("method", method) != method:
        raise CapsError(f"local method {method}: capability names {capability.get('method')!r}")
    params_schema = capability.get("params_schema", {"type": "object"})
    result_schema = capability.get("result_schema")
    for where, schema in (("params_schema", params_schema), ("result_schema", result_schema)):
        if schema is None:
            continue
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise CapsError(f"local method {method}: {where} is not a valid JSON Schema: {exc.message}") from None
    positional = tuple(capability.get("positional", ()))
    return Capability(method, str(capability.get("description", "")), params_schema, result_schema, positional,
                      dict(capability.get("annotations", {})))


def _map_params(cap: Capability, params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if isinstance(params, list):
        if len(params) > len(cap.positional):
            raise errors.InvalidParams(
                f"{cap.method} takes at most {len(cap.positional)} positional params, got {len(params)}")
        return dict(zip(cap.positional, params, strict=False))
    if isinstance(params, dict):
        return params
    raise errors.InvalidParams("params must be an object or an array")


_SERVICE_DESCRIPTIONS = {
    GATEWAY_SERVICE: "The gateway itself: who you are and what you may call",
    "licence": "The appliance's licence and what remains of its limits",
    "llm": "Local and remote language models",
}


class Router:
    def __init__(self, policy: Policy, *, metrics: Metrics | None = None, pool: UpstreamPool | None = None,
                 call_timeout: float = 120.0, version: str = "0") -> None:
        self.policy = policy
        self.metrics = metrics or Metrics()
        self.pool = pool or UpstreamPool()
        self.call_timeout = call_timeout
        self.version = version
        self._local: dict[str, _Local] = {}
        self._services: dict[str, _Service] = {}
        # method -> where it goes; one dict lookup on the hot path.
        self._routes: dict[str, _Local | _Service] = {}
        self._listeners: list[Callable[[], None]] = []
        self._callers: dict[ClientIdentity, dict[str, Any]] = {}

    # -- registration --------------------------------------------------------------------------------

    def register_local(self, method: str, handler: LocalHandler, capability: dict[str, Any], *,
                       public: bool = False) -> None:
        """Serve `method` inside the gateway. `public` methods skip authorization and limits (introspection)."""
        if method in self._routes:
            raise CapsError(f"local method {method}: already registered")
        namespace = _namespace(method)
        if namespace in self._services:
            raise CapsError(f"local method {method}: service {namespace!r} is served by a backend")
        self._local[method] = entry = _Local(handler, _local_capability(method, capability), public)
        self._routes[method] = entry

    def reserved_services(self) -> set[str]:
        """Service names a backend may not take, because the gateway serves methods in them."""
        return {GATEWAY_SERVICE, *(_namespace(m) for m in self._local)}

    def add_service(self, caps: ServiceCaps, source: str) -> None:
        """Route a backend's methods (replacing its previous capabilities). Raises CapsError on conflict."""
        name = caps.service_name
        if name in self.reserved_services():
            raise CapsError(f"{source}: service name {name!r} is reserved by the gateway")
        for method in caps.methods():
            owner = self._routes.get(method)
            if isinstance(owner, _Local) or (isinstance(owner, _Service) and owner.caps.service_name != name):
                raise CapsError(f"{source}: method {method!r} already belongs to another service")
        assert caps.socket is not None
        previous = self._services.get(name)
        if previous is not None:
            for method in previous.caps.methods():
                self._routes.pop(method, None)
        service = _Service(caps, self.pool.ensure(name, caps.socket), source)
        self._services[name] = service
        for method in caps.methods():
            self._routes[method] = service
        self._changed()

    def remove_service(self, name: str) -> None:
        service = self._services.pop(name, None)
        if service is None:
            return
        for method in service.caps.methods():
            if self._routes.get(method) is service:
                del self._routes[method]
        self.pool.remove(name)
        self._changed()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever the set of routed methods changes."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        self.policy.set_upstream_services({n for n, s in self._services.items() if s.caps.upstream is not None})
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("route-change listener failed")

    # -- introspection -------------------------------------------------------------------------------

    def services(self) -> dict[str, ServiceCaps]:
        return {name: s.caps for name, s in self._services.items()}

    def service_of(self, method: str) -> str | None:
        route = self._routes.get(method)
        if isinstance(route, _Service):
            return route.caps.service_name
        return _namespace(method) if route is not None else None

    def methods(self) -> list[str]:
        return sorted(self._routes)

    def _visible(self, client: ClientIdentity, method: str) -> bool:
        route = self._routes.get(method)
        if isinstance(route, _Local) and route.public:
            return True
        return self.policy.is_allowed(client, method)

    def methods_for(self, client: ClientIdentity) -> list[str]:
        return [m for m in sorted(self._routes) if self._visible(client, m)]

    def capabilities_for(self, client: ClientIdentity) -> list[dict[str, Any]]:
        """Services and their capabilities (with schemas) as this client may see them."""
        out: list[dict[str, Any]] = []
        local_groups: dict[str, list[Capability]] = {}
        for method, entry in sorted(self._local.items()):
            if self._visible(client, method):
                local_groups.setdefault(_namespace(method), []).append(entry.cap)
        for name, caps in sorted(local_groups.items()):
            out.append({"service_name": name, "description": _SERVICE_DESCRIPTIONS.get(name, "Served by the gateway"),
                        "version": self.version, "capabilities": [capability_to_dict(c) for c in caps]})
        for name, service in sorted(self._services.items()):
            visible = [capability_to_dict(c) for c in service.caps.capabilities if self._visible(client, c.method)]
            if visible:
                listed: dict[str, Any] = {"service_name": name, "description": service.caps.description,
                                          "version": service.caps.version, "capabilities": visible}
                if service.caps.upstream is not None:
                    listed["upstream"] = service.caps.upstream
                out.append(listed)
        return out

    # -- calls ---------------------------------------------------------------------------------------

    def _caller_of(self, client: ClientIdentity, run: str | None = None) -> dict[str, Any]:
        """The `caller` member sent to backends; `run` is the execution making the call, when a run does."""
        caller = self._callers.get(client)
        if caller is None:
            if len(self._callers) > 10000:
                self._callers.clear()
            caller = self._callers[client] = {"client_id": client.client_id, "name": client.name,
                                              "tier": client.tier}
        return caller if run is None else {**caller, "run": run}

    def start(self, client: ClientIdentity, method: str, params: Any, *, request_id: RequestId,
              answer: AnswerFn, notify: NotifyFn | None = None, run: str | None = None) -> RoutedCall | None:
        """Start a call to a backend service without a task: what `call` does, with the answer delivered to
        `answer` from the upstream's read callback. Most calls a client makes are of this kind, and the task
        and coroutine layers of `call` were a good part of the gateway's cost per call.

        Returns None when the call is not of that kind or its upstream cannot take it at once (not yet
        connected, behind on reading, or answering calls made through `call`, which it must not overtake): the
        caller then uses `call`. Raises the RPCError of a refusal.
        The call may have ended (and answered) before this returns: see `RoutedCall.finished`.
        """
        route = self._routes.get(method)
        if type(route) is not _Service:
            return None
        upstream = route.upstream
        if not upstream.ready:
            upstream.hold()  # the call goes to a task: the calls after it must not overtake it
            return None
        started = time.perf_counter()
        try:
            self.policy.admit(client, method)
        except errors.RPCError as exc:
            self.metrics.observe(method, outcome_of(exc), time.perf_counter() - started)
            raise
        routed = RoutedCall(self, client, method, request_id, answer, notify, started)
        try:
            routed._backend, routed._rid = upstream.send(routed, method, params,
                                                              caller=self._caller_of(client, run))
        except errors.RPCError as exc:
            routed.set_exception(exc)
            return routed
        routed._upstream = upstream
        return routed

    async def call(self, client: ClientIdentity, method: str, params: Any = None, *,
                   notify: NotifyFn | None = None, request_id: RequestId | None = None,
                   disconnected: asyncio.Event | None = None, run: str | None = None) -> Any:
        """Admit, route and account for one call. Returns its result or raises RPCError.

        Cancelling the task that awaits this cancels the call, upstream included.
        """
        start = time.perf_counter()
        route = self._routes.get(method)
        label = method if route is not None else _UNKNOWN_METHOD_LABEL
        if route is None or not isinstance(route, _Local) or not route.public:
            try:
                self.policy.admit(client, method)
            except errors.RPCError as exc:
                self.metrics.observe(label, outcome_of(exc), time.perf_counter() - start)
                raise
        outcome = "ok"
        try:
            if route is None:
                raise errors.MethodNotFound(f"Method not found: {method}")
            if isinstance(route, _Service):
                listener = functools.partial(_relay, notify, request_id) if notify is not None else None
                return await route.upstream.call(method, params, timeout=self.call_timeout,
                                                 on_notification=listener, caller=self._caller_of(client, run))
            call = GatewayCall(client, request_id, method, disconnected or asyncio.Event(), notify)
            mapped = _map_params(route.cap, params)
            bad = best_match(route.validator.iter_errors(mapped))
            if bad is not None:
                where = "params" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in bad.absolute_path)
                raise errors.InvalidParams(f"{where}: {bad.message}")
            return await asyncio.wait_for(route.handler(call, mapped), self.call_timeout)
        except errors.RPCError as exc:
            outcome = outcome_of(exc)
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except TimeoutError:
            outcome = "timeout"
            raise errors.Timeout(f"{method} timed out after {self.call_timeout:g} s") from None
        except Exception:
            outcome = "error"
            log.exception("call to %s failed unexpectedly", method)
            raise errors.InternalError() from None
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.observe(label, outcome, elapsed)
            if route is not None:
                try:
                    self.policy.record_call(client, method, outcome, elapsed * 1000.0)
                except Exception:
                    log.exception("audit of a routed call failed")
