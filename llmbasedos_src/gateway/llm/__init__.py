"""LLM access inside the gateway: the model registry, the providers and the `mcp.llm.*` methods.

`install(router, policy, settings)` loads the registry (raising RegistryError with a clear message when the
file is invalid) and registers the methods as local routes; the returned service must be closed with
`await service.aclose()` when the gateway stops.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from llmbasedos.gateway.llm.registry import ModelConfig, ModelRegistry, RegistryError
from llmbasedos.gateway.llm.service import CHUNK_METHOD, LLMService
from llmbasedos.gateway.policy.gatekeeper import Policy
from llmbasedos.local_llm import installed as local_llm_installed
from llmbasedos.protocol.caps import parse_caps
from llmbasedos.settings import Settings

__all__ = [
    "install", "capabilities", "LLMService", "ModelRegistry", "ModelConfig", "RegistryError", "CHUNK_METHOD",
    "local_llm_installed",
]

_CAPS_FILE = Path(__file__).with_name("caps.json")


class _Router(Protocol):
    def register_local(self, method: str, handler: Any, capability: dict[str, Any]) -> None: ...


def capabilities() -> list[dict[str, Any]]:
    """The capability dicts of the LLM methods (checked like any caps file)."""
    data = json.loads(_CAPS_FILE.read_text(encoding="utf-8"))
    parse_caps(data, "gateway/llm/caps.json")
    caps: list[dict[str, Any]] = data["capabilities"]
    return caps


def install(router: _Router, policy: Policy, settings: Settings,
            registry: ModelRegistry | None = None) -> LLMService:
    service = LLMService(registry or ModelRegistry.load(settings), policy)
    handlers = {"mcp.llm.chat": service.chat, "mcp.llm.embed": service.embed, "mcp.llm.models": service.models}
    for cap in capabilities():
        router.register_local(cap["method"], handlers[cap["method"]], cap)
    return service
