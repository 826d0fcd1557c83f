"""Names on our side for what an upstream MCP server names on its side. Pure, no I/O.

An upstream tool `get-current-time` of the server `time` becomes the method `mcp.time.get-current-time`, which
the gateway serves on /mcp as the tool `time_get-current-time`. MCP allows tool names of up to 128 characters
from `[A-Za-z0-9_./-]`, and servers send others too; a method's action allows `[A-Za-z0-9_-]` after a letter
(never a dot: the dotted actions `prompts.list`, `resources.read`... are the upstream's MCP requests, which no
tool can take over), and at most 48 characters so that `<server>_<action>` fits the 64 characters a host
accepts. Anything else is mapped deterministically: odd characters become `_`, a name that does not start with
a letter gets a `t_` in front, and a long or changed name ends with 8 hex characters of the original's hash,
so two different upstream names never map to the same action by accident.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["MAX_ACTION", "action_for", "method_for", "INTERNAL_ACTIONS"]

MAX_ACTION = 48
_OK = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,47}$")
_BAD = re.compile(r"[^A-Za-z0-9_-]")
# The MCP requests forwarded to an upstream for its prompts and resources, by the action that carries them.
INTERNAL_ACTIONS = {
    "prompts/list": "prompts.list",
    "prompts/get": "prompts.get",
    "resources/list": "resources.list",
    "resources/templates/list": "resources.templates",
    "resources/read": "resources.read",
}


def action_for(name: str) -> str:
    """The action under which an upstream's tool (or prompt) of this name is served."""
    if _OK.match(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    base = _BAD.sub("_", name) or "t"
    if not base[0].isalpha():
        base = "t_" + base
    return f"{base[:MAX_ACTION - 9]}_{digest}"


def method_for(server: str, name: str) -> str:
    return f"mcp.{server}.{action_for(name)}"
