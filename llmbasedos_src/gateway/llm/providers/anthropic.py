"""Anthropic's Messages API: `POST {base_url}/messages` (JSON, or SSE with `stream: true`).

The client speaks one dialect (OpenAI-style messages and options); this module translates: system messages
go to `system`, `stop` becomes `stop_sequences`, function tools become Anthropic tools, stop reasons map back
to OpenAI's finish reasons. `seed` and `response_format` do not exist there and are refused.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson
from httpx_sse import EventSource, SSEError

from llmbasedos.gateway.llm.options import DEFAULT_MAX_TOKENS
from llmbasedos.gateway.llm.providers.base import ChatResult, Delta, Provider, StreamEnd, Usage, protocol_error
from llmbasedos.protocol.errors import InvalidParams

__all__ = ["AnthropicProvider", "ANTHROPIC_VERSION", "DEFAULT_MAX_TOKENS"]

ANTHROPIC_VERSION = "2023-06-01"
_UNSUPPORTED = ("seed", "response_format")
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def _error_message(body: Any) -> str | None:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
    return None


def _usage(raw: Any, prompt: int | None = None) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    inp = raw.get("input_tokens", prompt)
    out = raw.get("output_tokens", 0)
    if not isinstance(inp, int) or not isinstance(out, int):
        return None
    return Usage(inp, out)


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool["function"]
    out: dict[str, Any] = {"name": fn["name"], "input_schema": fn.get("parameters") or {"type": "object"}}
    if isinstance(fn.get("description"), str):
        out["description"] = fn["description"]
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name")}
    raise InvalidParams("option 'tool_choice' must be 'auto', 'required', 'none' or a function choice")


class AnthropicProvider(Provider):
    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION, "Accept": "application/json"}
        key = self.cfg.api_key()
        if key:
            headers["x-api-key"] = key
        return headers

    def _body(self, messages: list[dict[str, Any]], options: dict[str, Any], stream: bool) -> dict[str, Any]:
        for name in _UNSUPPORTED:
            if name in options:
                raise InvalidParams(f"option {name!r} is not supported by model alias {self.cfg.alias!r} "
                                    "(anthropic provider)")
        system = [m["content"] for m in messages if m["role"] == "system"]
        turns = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
        if any(m["role"] not in ("user", "assistant") for m in turns):
            raise InvalidParams("the anthropic provider takes only system, user and assistant messages")
        body: dict[str, Any] = {"model": self.cfg.model, "messages": turns,
                                "max_tokens": options.get("max_tokens", DEFAULT_MAX_TOKENS)}
        if system:
            body["system"] = "\n\n".join(system)
        for name in ("temperature", "top_p"):
            if name in options:
                body[name] = options[name]
        if "stop" in options:
            stop = options["stop"]
            body["stop_sequences"] = [stop] if isinstance(stop, str) else stop
        if "tools" in options:
            body["tools"] = [_tool(t) for t in options["tools"]]
        if "tool_choice" in options:
            body["tool_choice"] = _tool_choice(options["tool_choice"])
        if stream:
            body["stream"] = True
        return body

    async def chat(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> ChatResult:
        resp = await self._send("POST", "/messages", json_body=self._body(messages, options, False),
                                headers=self._headers(), extract_error=_error_message)
        try:
            raw = await resp.aread()
        except httpx.HTTPError as exc:
            raise self._stream_failed(exc) from exc
        finally:
            await resp.aclose()
        try:
            data = orjson.loads(raw)
            blocks = data["content"]
            text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
            tool_calls = [
                {"id": b.get("id"), "type": "function",
                 "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input") or {})}}
                for b in blocks if b.get("type") == "tool_use"
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise protocol_error(self.cfg.alias, "no content in the message") from None
        reason = data.get("stop_reason")
        return ChatResult(text, _FINISH.get(reason, reason), _usage(data.get("usage")), tool_calls or None)

    async def stream(self, messages: list[dict[str, Any]],
                     options: dict[str, Any]) -> AsyncGenerator[Delta | StreamEnd, None]:
        resp = await self._send("POST", "/messages", json_body=self._body(messages, options, True),
                                headers={**self._headers(), "Accept": "text/event-stream"},
                                extract_error=_error_message)
        prompt_tokens: int | None = None
        output_tokens = 0
        finish: str | None = None
        tools: dict[int, dict[str, Any]] = {}
        try:
            async for event in EventSource(resp).aiter_sse():
                if not event.data:
                    continue
                try:
                    data = orjson.loads(event.data)
                except ValueError:
                    raise protocol_error(self.cfg.alias, "an event is not JSON") from None
                kind = data.get("type") if isinstance(data, dict) else None
                if kind == "content_block_delta":
                    delta = data.get("delta") or {}
                    if delta.get("type") == "text_delta" and delta.get("text"):
                        yield Delta(delta["text"])
                    elif delta.get("type") == "input_json_delta" and data.get("index") in tools:
                        tools[data["index"]]["function"]["arguments"] += delta.get("partial_json", "")
                elif kind == "content_block_start":
                    block = data.get("content_block") or {}
                    if block.get("type") == "tool_use":
                        tools[data.get("index", 0)] = {"id": block.get("id"), "type": "function",
                                                       "function": {"name": block.get("name"), "arguments": ""}}
                elif kind == "message_start":
                    usage = (data.get("message") or {}).get("usage") or {}
                    if isinstance(usage.get("input_tokens"), int):
                        prompt_tokens = usage["input_tokens"]
                    if isinstance(usage.get("output_tokens"), int):
                        output_tokens = usage["output_tokens"]
                elif kind == "message_delta":
                    reason = (data.get("delta") or {}).get("stop_reason")
                    if reason:
                        finish = _FINISH.get(reason, reason)
                    usage = data.get("usage") or {}
                    if isinstance(usage.get("output_tokens"), int):
                        output_tokens = usage["output_tokens"]
                    if isinstance(usage.get("input_tokens"), int):
                        prompt_tokens = usage["input_tokens"]
                elif kind == "message_stop":
                    break
                elif kind == "error":
                    detail = _error_message(data)
                    raise protocol_error(self.cfg.alias, self._redact(detail)[:300] if detail else "stream error")
        except SSEError:
            raise protocol_error(self.cfg.alias, "not an event stream") from None
        except httpx.HTTPError as exc:
            raise self._stream_failed(exc) from exc
        finally:
            await resp.aclose()
        usage_out = Usage(prompt_tokens, output_tokens) if prompt_tokens is not None else None
        yield StreamEnd(finish, usage_out, [tools[i] for i in sorted(tools)] or None)
