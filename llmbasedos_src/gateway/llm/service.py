"""The LLM methods served inside the gateway: `mcp.llm.chat`, `mcp.llm.embed`, `mcp.llm.models`.

Order of a chat call: check the request, ask the Policy (LLM access, alias, max tokens), reserve the call's
most with the daily quota, call the alias's provider (then its fallbacks while the provider cannot be reached
and nothing has been streamed), and settle the reservation to what the call cost (metering.py says how,
including for a caller who disconnects mid-stream). Prompts and completions never reach a log line.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from llmbasedos.gateway.llm.estimates import estimate_tokens, prompt_bound
from llmbasedos.gateway.llm.metering import Charge, metered
from llmbasedos.gateway.llm.options import DEFAULT_MAX_TOKENS, check_options
from llmbasedos.gateway.llm.providers import Delta, Provider, ProviderUnreachable, StreamEnd, Usage, make_provider
from llmbasedos.gateway.llm.registry import ModelConfig, ModelRegistry
from llmbasedos.gateway.policy.gatekeeper import ClientIdentity, Policy
from llmbasedos.gateway.policy.tiers import match_any
from llmbasedos.protocol.errors import FeatureUnavailable, InvalidParams, RPCError, ServiceUnavailable

__all__ = ["LLMService", "CHUNK_METHOD", "LLMCall"]

log = logging.getLogger("llmbasedos.gateway.llm")

CHUNK_METHOD = "mcp.llm.chunk"
_ROLES = frozenset({"system", "user", "assistant", "tool"})
_MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_call_id", "tool_calls"})
_MAX_EMBED_INPUTS = 256


class LLMCall(Protocol):
    """What the service needs of a call: who makes it, and a way to send notifications back."""

    @property
    def client(self) -> ClientIdentity: ...

    def notify(self, method: str, params: dict[str, Any]) -> None: ...


def _check_messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise InvalidParams("params.messages must be a non-empty list of {role, content}")
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise InvalidParams(f"params.messages[{i}] must be an object")
        role = msg.get("role")
        if role not in _ROLES:
            raise InvalidParams(f"params.messages[{i}].role must be one of {', '.join(sorted(_ROLES))}")
        content = msg.get("content")
        if not isinstance(content, str) and not (content is None and msg.get("tool_calls")):
            raise InvalidParams(f"params.messages[{i}].content must be a string")
        extra = set(msg) - _MESSAGE_KEYS
        if extra:
            raise InvalidParams(f"params.messages[{i}]: unknown key {sorted(extra)[0]!r}")
        out.append(dict(msg))
    return out


class LLMService:
    def __init__(self, registry: ModelRegistry, policy: Policy,
                 provider_factory: Callable[[ModelConfig], Provider] = make_provider) -> None:
        self.registry = registry
        self.policy = policy
        self._factory = provider_factory
        self._providers: dict[str, Provider] = {}

    async def aclose(self) -> None:
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            await provider.aclose()

    def provider(self, alias: str) -> Provider:
        provider = self._providers.get(alias)
        if provider is None:
            provider = self._providers[alias] = self._factory(self.registry.get(alias))
        return provider

    # -- policy ---------------------------------------------------------------------------------------

    def _limits(self, client: ClientIdentity) -> dict[str, Any]:
        limits = self.policy.licence_status(client).get("limits")
        return limits if isinstance(limits, dict) else {}

    def _admit(self, client: ClientIdentity, cfg: ModelConfig, options: dict[str, Any]) -> dict[str, Any]:
        """Ask the Policy; returns the options to send.

        A max_tokens the client asked for is checked as asked. Otherwise the alias default (or nothing) is
        brought within the tier's per-request cap: the client did not ask for more, so it is not refused. A
        client with a daily quota always sends one (DEFAULT_MAX_TOKENS at least): it is what the call reserves.
        """
        merged = {**cfg.options, **options}
        if "max_tokens" not in options:
            limits = self._limits(client)
            cap = limits.get("max_tokens_per_request")
            if isinstance(cap, int) and cap > 0:
                merged["max_tokens"] = min(merged.get("max_tokens") or cap, cap)
            elif merged.get("max_tokens") is None and limits.get("max_tokens_per_day") is not None:
                merged["max_tokens"] = DEFAULT_MAX_TOKENS
        self.policy.llm_allowed(client, cfg.alias, merged.get("max_tokens"))
        return merged

    def _chain(self, client: ClientIdentity, alias: str | None,
               options: dict[str, Any]) -> Iterator[tuple[ModelConfig, dict[str, Any]]]:
        """The alias, then its fallbacks; each admitted by the Policy only when its turn comes."""
        first = self.registry.get(alias)
        yield first, self._admit(client, first, options)
        for name in first.fallbacks:
            cfg = self.registry.get(name)
            try:
                admitted = self._admit(client, cfg, options)
            except RPCError:
                continue  # a fallback this client may not use is simply not tried
            yield cfg, admitted

    def _metered(self, client: ClientIdentity, messages: list[dict[str, Any]],
                 opts: dict[str, Any]) -> contextlib.AbstractContextManager[Charge]:
        max_tokens = opts.get("max_tokens")
        return metered(self.policy, client, prompt_bound(messages, opts),
                       max_tokens if isinstance(max_tokens, int) else None, estimate_tokens(_prompt_text(messages)))

    # -- methods ----------------------------------------------------------------------------------------

    async def chat(self, call: LLMCall, params: dict[str, Any]) -> dict[str, Any]:
        messages = _check_messages(params.get("messages"))
        alias = params.get("model")
        if alias is not None and not isinstance(alias, str):
            raise InvalidParams("params.model must be a model alias (a string)")
        options = check_options(params.get("options"))
        stream = params.get("stream", False)
        if not isinstance(stream, bool):
            raise InvalidParams("params.stream must be true or false")
        # The first alias is admitted now, so a refusal is the caller's error and not "unreachable".
        chain = self._chain(call.client, alias, options)
        first = next(chain)
        chain = itertools.chain([first], chain)
        if stream:
            return await self._chat_stream(call, messages, chain)
        last: RPCError | None = None
        tried: list[str] = []
        for cfg, opts in chain:
            tried.append(cfg.alias)
            try:
                with self._metered(call.client, messages, opts) as charge:
                    result = await self.provider(cfg.alias).chat(messages, opts)
                    usage = result.usage or Usage(estimate_tokens(_prompt_text(messages)),
                                                  estimate_tokens(result.content))
                    charge.used = usage.total_tokens
            except ProviderUnreachable as exc:
                last = exc
                log.warning("llm provider unreachable", extra={"alias": cfg.alias})
                continue
            return _final(cfg.alias, result.content, result.finish_reason, usage, result.tool_calls)
        raise _unreachable(tried, last)

    async def _chat_stream(self, call: LLMCall, messages: list[dict[str, Any]],
                           chain: Iterator[tuple[ModelConfig, dict[str, Any]]]) -> dict[str, Any]:
        last: RPCError | None = None
        tried: list[str] = []
        for cfg, opts in chain:
            tried.append(cfg.alias)
            parts: list[str] = []
            end: StreamEnd | None = None
            started = False
            try:
                with self._metered(call.client, messages, opts) as charge:
                    async with contextlib.aclosing(self.provider(cfg.alias).stream(messages, opts)) as events:
                        async for event in events:
                            started = True
                            if isinstance(event, Delta):
                                parts.append(event.text)
                                charge.seen += 1
                                call.notify(CHUNK_METHOD, {"delta": event.text})
                            else:
                                end = event
                    assert end is not None  # every provider's stream ends with a StreamEnd or raises
                    usage = end.usage or Usage(estimate_tokens(_prompt_text(messages)), len(parts))
                    charge.used = usage.total_tokens
            except ProviderUnreachable as exc:
                if started:
                    raise
                last = exc
                log.warning("llm provider unreachable", extra={"alias": cfg.alias})
                continue
            return _final(cfg.alias, "".join(parts), end.finish_reason, usage, end.tool_calls)
        raise _unreachable(tried, last)

    async def embed(self, call: LLMCall, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
            raise InvalidParams("params.input must be a string or a non-empty list of strings")
        if len(inputs) > _MAX_EMBED_INPUTS:
            raise InvalidParams(f"params.input takes at most {_MAX_EMBED_INPUTS} texts")
        alias = params.get("model")
        if alias is not None and not isinstance(alias, str):
            raise InvalidParams("params.model must be a model alias (a string)")
        cfg = self.registry.get(alias)
        if not cfg.embeddings:
            raise FeatureUnavailable(f"Model alias {cfg.alias!r} does not provide embeddings")
        self.policy.llm_allowed(call.client, cfg.alias, None)
        with metered(self.policy, call.client, prompt_bound(inputs), 0,
                     sum(estimate_tokens(t) for t in inputs)) as charge:
            result = await self.provider(cfg.alias).embed(inputs)
            usage = result.usage or Usage(sum(estimate_tokens(t) for t in inputs), 0)
            charge.used = usage.total_tokens
        return {"model": cfg.alias, "vectors": result.vectors,
                "dimensions": len(result.vectors[0]) if result.vectors else 0, "usage": usage.as_dict()}

    async def models(self, call: LLMCall, params: dict[str, Any]) -> dict[str, Any]:
        # Read from the client's limits rather than asking llm_allowed per alias: listing is not an attempt
        # and must not fill the audit log with denials.
        limits = self._limits(call.client)
        patterns = limits.get("allowed_llm_models", ["*"]) if limits.get("llm_access", True) else []
        visible = [cfg.public() for alias, cfg in self.registry.models.items() if match_any(patterns, alias)]
        default = self.registry.default
        if default is not None and all(m["alias"] != default for m in visible):
            default = None
        return {"default": default, "models": visible, "configured": bool(self.registry.models)}

    def status(self) -> dict[str, Any]:
        """For /status: aliases and whether their key is present; never a key, a key source or a URL."""
        return {
            "source": self.registry.source,
            "default": self.registry.default,
            "models": {alias: {**cfg.public(), "key_configured": cfg.key_configured()}
                       for alias, cfg in self.registry.models.items()},
        }


def _prompt_text(messages: list[dict[str, Any]]) -> str:
    return "".join(m["content"] for m in messages if isinstance(m.get("content"), str))


def _final(alias: str, content: str, finish: str | None, usage: Usage,
           tool_calls: list[dict[str, Any]] | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"model": alias, "message": message, "finish_reason": finish, "usage": usage.as_dict()}


def _unreachable(tried: list[str], last: RPCError | None) -> RPCError:
    if len(tried) == 1 and last is not None:
        return last
    return ServiceUnavailable(f"No provider could be reached for model alias {tried[0]!r} "
                              f"(tried {', '.join(repr(t) for t in tried)})", {"tried": tried})
