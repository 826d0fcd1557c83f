"""What a door needs of the running gateway, and nothing more: `runtime.Gateway` is one.

A door is given this narrow interface rather than the whole Gateway, so that the doors do not depend on the
module that assembles them (runtime.py imports the doors; the doors never import it back).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from llmbasedos.gateway.config import GatewayConfig
from llmbasedos.gateway.doors.session import SendFn, Session
from llmbasedos.gateway.policy.gatekeeper import ClientIdentity, Policy
from llmbasedos.gateway.routing.router import Router
from llmbasedos.settings import Settings

__all__ = ["DoorHost"]


class DoorHost(Protocol):
    settings: Settings
    config: GatewayConfig
    policy: Policy
    router: Router

    def open_session(self, client: ClientIdentity, send: SendFn, *, transport: str, remote: str) -> Session:
        """A session for one connection of `client`; close it with `close_session`."""

    def close_session(self, session: Session) -> None: ...

    def on_rights_changed(self, listener: Callable[[], None]) -> None:
        """Call `listener` on the event loop after any client's rights may have changed."""
