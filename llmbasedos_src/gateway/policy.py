"""Client identity and policy: licence tier, client tokens, allowlists, rate limits, quotas and audit.

PROVISIONAL SURFACE: the full implementation replaces this file shortly; names and signatures stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..protocol.errors import Unauthorized
from ..settings import Settings

__all__ = ["ClientIdentity", "Policy"]


@dataclass(frozen=True)
class ClientIdentity:
    client_id: str
    name: str
    tier: str
    allow: tuple[str, ...]
    is_owner: bool


_OWNER = ClientIdentity(client_id="owner", name="owner", tier="ELITE", allow=("*",), is_owner=True)


class Policy:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    def load(cls, settings: Settings) -> Policy:
        return cls(settings)

    def authenticate(self, token: str | None, *, transport: str, remote: str) -> ClientIdentity:
        if not token:
            raise Unauthorized("A token is required")
        return _OWNER

    def local_identity(self) -> ClientIdentity:
        return _OWNER

    def is_allowed(self, client: ClientIdentity, method: str) -> bool:
        return True

    def admit(self, client: ClientIdentity, method: str) -> None:
        return None

    def record_call(self, client: ClientIdentity, method: str, outcome: str, duration_ms: float) -> None:
        return None

    def licence_status(self, client: ClientIdentity) -> dict[str, Any]:
        return {"tier": "ELITE", "valid": True, "reason": None, "expires": None, "limits": {}, "remaining": {}}

    def usage(self) -> dict[str, Any]:
        return {}

    def check_origin(self, origin: str | None) -> bool:
        return True

    def llm_allowed(self, client: ClientIdentity, alias: str, max_tokens: int | None) -> None:
        return None

    def record_llm_tokens(self, client: ClientIdentity, tokens: int) -> None:
        return None

    def close(self) -> None:
        return None
