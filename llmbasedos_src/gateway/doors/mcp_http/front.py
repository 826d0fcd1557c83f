"""The checks every `/mcp` request passes first: its Host on a loopback bind, and its token.

A token's client is cached for a couple of seconds, and for no longer than the policy's clients stay the
same: a revocation, expiry or change of any client forgets every cached token at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from starlette.types import Scope

from llmbasedos.gateway.doors.auth import bearer_token
from llmbasedos.loopback import is_loopback

if TYPE_CHECKING:
    from llmbasedos.gateway.policy.gatekeeper import ClientIdentity, Policy

__all__ = ["FrontChecks"]

_AUTH_TTL = 2.0  # seconds an authenticated token is trusted before the policy is asked again


class FrontChecks:
    def __init__(self, policy: Policy, *, loopback_only: bool) -> None:
        self.policy = policy
        self.loopback_only = loopback_only  # the gateway is bound to loopback: only loopback Host names pass
        self._hosts: dict[str, bool] = {}
        self._auth: dict[str, tuple[float, int, ClientIdentity]] = {}

    def forget(self) -> None:
        """Forget every cached token (a client's rights changed)."""
        self._auth.clear()

    def host_ok(self, headers: dict[str, str]) -> bool:
        if not self.loopback_only:
            return True
        host = headers.get("host")
        if host is None:
            return True
        known = self._hosts.get(host)
        if known is None:
            try:
                known = is_loopback(urlsplit("//" + host).hostname)
            except ValueError:
                known = False
            if len(self._hosts) < 64:  # a few names in practice; a flood of odd ones is not remembered
                self._hosts[host] = known
        return known

    def client(self, scope: Scope, headers: dict[str, str]) -> ClientIdentity:
        token = bearer_token(headers)
        if token is None and scope.get("query_string"):
            token = dict(parse_qsl(scope["query_string"].decode("latin-1"))).get("token")
        now = time.monotonic()
        generation = self.policy.clients.generation
        if token:
            cached = self._auth.get(token)
            if cached is not None and now - cached[0] < _AUTH_TTL and cached[1] == generation:
                return cached[2]
        client = self.policy.authenticate(token, transport="mcp", remote=scope["client"][0] if scope.get("client")
                                          else "")
        if token:
            if len(self._auth) > 10_000:
                self._auth.clear()
            self._auth[token] = (now, generation, client)
        return client
