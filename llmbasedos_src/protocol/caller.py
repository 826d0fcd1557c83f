"""Who made a backend call, from the `caller` member the gateway forwards with every routed request.

The one rule for things a client starts and may come back to (agent executions, sync jobs): they belong to
the client that started them; a client sees and touches its own only, the owner sees all. A call without a
`caller` did not come through the gateway's client doors: only the owner can reach a backend's socket that
way (file permissions), so it acts as the owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Caller", "OWNER_NAME"]

OWNER_NAME = "owner"  # reserved by the gateway for the owner's token; no other client can be named so


@dataclass(frozen=True)
class Caller:
    client_id: str | None
    name: str | None
    is_owner: bool

    @classmethod
    def of(cls, caller: Any) -> Caller:
        """From `CallContext.caller` ({"client_id", "name", "tier"} as the gateway forwards it, or None)."""
        if not isinstance(caller, dict) or not isinstance(caller.get("client_id"), str):
            return cls(None, None, True)
        name = caller.get("name") if isinstance(caller.get("name"), str) else None
        return cls(caller["client_id"], name, name == OWNER_NAME)

    def owns(self, owner_id: str | None) -> bool:
        """Whether this caller may see a thing started by `owner_id` (None: started before owners were kept)."""
        return self.is_owner or (owner_id is not None and owner_id == self.client_id)

    @property
    def only(self) -> str | None:
        """The client id to filter a listing by, or None when this caller sees everything."""
        return None if self.is_owner else self.client_id
