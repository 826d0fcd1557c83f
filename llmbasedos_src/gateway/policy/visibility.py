"""Who may see what on the status surfaces (`/status`, `/ui`, `/ui/data`, `/metrics`): the one rule.

The owner, and a client explicitly allowed `admin.read`, see everything: every service, connection, client's
usage and audit entry. Any other client sees only itself: its own connections, its own usage, its own audit
entries, and the services and methods its rights reach. `admin.read` must be named (or `admin.*`): a client
created with the default allowlist `*` may call every capability of its tier, but reads only its own records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmbasedos.gateway.policy.gatekeeper import ClientIdentity
from llmbasedos.gateway.policy.tiers import match_any

__all__ = ["ADMIN_READ", "reads_everything", "own_entries"]

ADMIN_READ = "admin.read"


def reads_everything(client: ClientIdentity) -> bool:
    return client.is_owner or match_any((p for p in client.allow if p != "*"), ADMIN_READ)


def own_entries(client: ClientIdentity,
                keep: Callable[[dict[str, Any]], bool] | None = None) -> Callable[[dict[str, Any]], bool] | None:
    """The audit filter for `client`: `keep` alone for a reader of everything, else also "about this client".

    Entries without a client (the gateway starting, a licence change, refusals of unknown tokens) are not about
    any one client, so only readers of everything see them.
    """
    if reads_everything(client):
        return keep
    client_id = client.client_id

    def own(entry: dict[str, Any]) -> bool:
        return entry.get("client") == client_id and (keep is None or keep(entry))

    return own
