"""The one rule for "is this host this machine's loopback?": `localhost` and the names under it (RFC 6761
keeps them on loopback), `localhost.localdomain`, and any loopback address (127.0.0.0/8, ::1). Used for the
gateway's bind, the Host and Origin checks of its doors, the proxy choice of LLM providers and the mail
server's refusal of plain-text logins off this machine.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["is_loopback", "is_loopback_url"]


def is_loopback(host: str | None) -> bool:
    """`host` as a URL or a header gives it: a name or an address, IPv6 with or without brackets."""
    if not host:
        return False
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name in ("localhost", "localhost.localdomain") or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    try:
        return is_loopback(urlsplit(url).hostname)
    except ValueError:
        return False
