"""`Gateway`: the running pieces — policy, router, upstream pool, discovery, local door, sessions — and
their start and stop order. The ASGI app (app.py) and the doors hold a reference to one of these."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

from llmbasedos import __version__ as _package_version
from llmbasedos.gateway.config import GatewayConfig
from llmbasedos.gateway.doors.session import SendFn, Session
from llmbasedos.gateway.doors.unix import UnixDoor
from llmbasedos.gateway.policy.gatekeeper import ClientIdentity, Policy
from llmbasedos.gateway.routing.discovery import Discovery
from llmbasedos.gateway.routing.methods import install_builtin_methods
from llmbasedos.gateway.routing.metrics import Metrics
from llmbasedos.gateway.routing.router import Router
from llmbasedos.gateway.routing.upstream import UpstreamPool
from llmbasedos.gateway.status import build_status
from llmbasedos.settings import Settings

__all__ = ["Gateway", "VERSION"]

log = logging.getLogger("llmbasedos.gateway")

VERSION = _package_version


class Gateway:
    def __init__(self, settings: Settings, config: GatewayConfig, policy: Policy) -> None:
        self.settings = settings
        self.config = config
        self.policy = policy
        self.metrics = Metrics()
        self.pool = UpstreamPool(max_frame=settings.max_frame)
        self.router = Router(policy, metrics=self.metrics, pool=self.pool, call_timeout=config.call_timeout,
                             version=VERSION)
        self.sessions: set[Session] = set()
        self.discovery = Discovery(settings.run_dir, self.router)
        self.unix_door = UnixDoor(self, config.gateway_socket(settings), max_frame=settings.max_frame)
        self.metrics.bind(self.pool.snapshot, self._client_counts)
        self._extensions: list[Any] = []
        self._rights_listeners: list[Callable[[], None]] = []
        self._on_clients_changed: Callable[[], None] | None = None
        install_builtin_methods(self.router)

    def _client_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {"ws": 0, "unix": 0}
        for s in self.sessions:
            counts[s.transport] = counts.get(s.transport, 0) + 1
        return counts

    def on_rights_changed(self, listener: Callable[[], None]) -> None:
        """Call `listener` on the event loop after the policy's clients changed (the /mcp door's sessions)."""
        self._rights_listeners.append(listener)

    def _rights_changed(self) -> None:
        # Open connections of a revoked or expired client are closed now, not at their next call.
        for session in list(self.sessions):
            session.revalidate()
        for listener in list(self._rights_listeners):
            try:
                listener()
            except Exception:
                log.exception("a listener of rights changes failed")

    async def start(self) -> None:
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()

        def changed() -> None:  # called from the policy's thread
            with contextlib.suppress(RuntimeError):  # the loop is closing: nothing is left to close
                loop.call_soon_threadsafe(self._rights_changed)

        self._on_clients_changed = changed
        self.policy.clients.on_change(changed)
        await self._install_extension("llmbasedos.gateway.llm")
        await self.discovery.start()
        await self.unix_door.start()
        log.info("gateway %s ready", VERSION)

    async def _install_extension(self, module_name: str) -> None:
        """Let an optional module register its local methods: `install(router, policy, settings)`."""
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            log.warning("%s is not available: %s", module_name, exc)
            return
        install = getattr(module, "install", None)
        if install is None:
            return
        try:
            result = install(self.router, self.policy, self.settings)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            # A bad model registry must not take file access, mail and the rest down with it.
            log.error("%s is disabled: %s", module_name, exc)
            return
        if result is not None:
            self._extensions.append(result)

    async def stop(self) -> None:
        if self._on_clients_changed is not None:
            self.policy.clients.remove_listener(self._on_clients_changed)
        await self.discovery.stop()
        await self.unix_door.close()
        for session in list(self.sessions):
            session.close()
        for ext in self._extensions:
            closer = getattr(ext, "aclose", None) or getattr(ext, "close", None)
            if closer is None:
                continue
            try:
                result = closer()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("an extension failed to close")
        await self.pool.close()
        with contextlib.suppress(Exception):
            self.policy.close()

    def open_session(self, client: ClientIdentity, send: SendFn, *, transport: str, remote: str) -> Session:
        session = Session(self.router, client, send, transport=transport, remote=remote)
        self.sessions.add(session)
        return session

    def close_session(self, session: Session) -> None:
        session.close()
        self.sessions.discard(session)

    def status(self, client: ClientIdentity) -> dict[str, Any]:
        """The /status document as `client` may see it."""
        return build_status(self, client)
