"""LLM providers: one class per wire format, chosen by the alias's `provider` key."""

from __future__ import annotations

import httpx

from llmbasedos.gateway.llm.providers.anthropic import AnthropicProvider
from llmbasedos.gateway.llm.providers.base import (
    ChatResult,
    Delta,
    EmbedResult,
    Provider,
    ProviderRejected,
    ProviderUnreachable,
    StreamEnd,
    Usage,
)
from llmbasedos.gateway.llm.providers.openai_compat import OpenAICompatProvider
from llmbasedos.gateway.llm.registry import ModelConfig

__all__ = [
    "AnthropicProvider", "OpenAICompatProvider", "Provider", "ProviderUnreachable", "ProviderRejected", "ChatResult",
    "Delta", "StreamEnd", "EmbedResult", "Usage", "make_provider",
]


def make_provider(cfg: ModelConfig, transport: httpx.AsyncBaseTransport | None = None) -> Provider:
    if cfg.provider == "anthropic":
        return AnthropicProvider(cfg, transport)
    return OpenAICompatProvider(cfg, transport)
