"""The 2026-07-28 request envelope (`params._meta` with the protocol version and client capabilities, and the
routing headers that repeat it): a fast check of the well-formed case before the SDK's full classifier, and
the progress token a request carries.
"""

from __future__ import annotations

from typing import Any

from mcp.shared.inbound import CLIENT_CAPABILITIES_META_KEY, NAME_BEARING_METHODS, PROTOCOL_VERSION_META_KEY

from llmbasedos.gateway.doors.mcp_http.service import MODERN_VERSIONS

__all__ = ["envelope_accepted", "has_envelope", "progress_token"]


def progress_token(params: dict[str, Any]) -> Any:
    meta = params.get("_meta")
    return meta.get("progressToken") if isinstance(meta, dict) else None


def envelope_accepted(method: str, params: dict[str, Any], headers: dict[str, str]) -> bool:
    """True when the SDK's `classify_inbound_request` would surely accept this request: the well-formed case,
    checked without its generic mapping checks. False means "ask the SDK", which then names the fault."""
    meta = params.get("_meta")
    if type(meta) is not dict or CLIENT_CAPABILITIES_META_KEY not in meta:
        return False
    version = meta.get(PROTOCOL_VERSION_META_KEY)
    if type(version) is not str or version not in MODERN_VERSIONS or headers.get("mcp-protocol-version") != version \
            or headers.get("mcp-method") != method:
        return False
    name_key = NAME_BEARING_METHODS.get(method)
    if name_key is None:
        return True
    value = params.get(name_key)
    if value is None:
        return True
    name = headers.get("mcp-name")
    # A base64-sentinel header needs decoding first: leave that to the SDK.
    return name is not None and name == value and not name.startswith("=?")


def has_envelope(message: dict[str, Any]) -> bool:
    params = message.get("params")
    return isinstance(params, dict) and isinstance(params.get("_meta"), dict) and \
        "io.modelcontextprotocol/protocolVersion" in params["_meta"]
