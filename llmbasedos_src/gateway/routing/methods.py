"""Methods the gateway answers itself: `mcp.hello`, `mcp.listCapabilities`, `mcp.licence.check`."""

from __future__ import annotations

from typing import Any

from llmbasedos.gateway.routing.router import GatewayCall, Router

__all__ = ["install_builtin_methods"]

_HELLO = {
    "method": "mcp.hello",
    "description": "Greet the gateway: its version, who you are, and the methods you may call",
    "params_schema": {"type": "object"},
    "result_schema": {"type": "object", "required": ["gateway", "version", "methods"]},
    "annotations": {"readOnlyHint": True, "idempotentHint": True},
}
_LIST = {
    "method": "mcp.listCapabilities",
    "description": "Services and their capabilities, with schemas, as far as your rights go",
    "params_schema": {"type": "object", "properties": {"service": {"type": "string"}},
                      "additionalProperties": False},
    "positional": ["service"],
    "result_schema": {"type": "array"},
    "annotations": {"readOnlyHint": True, "idempotentHint": True},
}
_LICENCE = {
    "method": "mcp.licence.check",
    "description": "The licence: tier, validity, expiry, limits and what remains of them",
    "params_schema": {"type": "object", "additionalProperties": False},
    "result_schema": {"type": "object"},
    "annotations": {"readOnlyHint": True},
}


def install_builtin_methods(router: Router) -> None:
    async def hello(call: GatewayCall, params: dict[str, Any]) -> Any:
        client = call.client
        return {
            "gateway": "llmbasedos",
            "version": router.version,
            "protocol": "llmbasedos-jsonrpc/1",
            "client": {"client_id": client.client_id, "name": client.name, "tier": client.tier,
                       "owner": client.is_owner},
            "methods": router.methods_for(client),
        }

    async def list_capabilities(call: GatewayCall, params: dict[str, Any]) -> Any:
        services = router.capabilities_for(call.client)
        wanted = params.get("service")
        if wanted is not None:
            services = [s for s in services if s["service_name"] == wanted]
        return services

    async def licence_check(call: GatewayCall, params: dict[str, Any]) -> Any:
        return router.policy.licence_status(call.client)

    router.register_local("mcp.hello", hello, _HELLO, public=True)
    router.register_local("mcp.listCapabilities", list_capabilities, _LIST, public=True)
    router.register_local("mcp.licence.check", licence_check, _LICENCE, public=True)
