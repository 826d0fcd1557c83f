"""Any OpenAI-compatible endpoint: OpenAI, the llama.cpp server, Ollama, vLLM, LM Studio.

`POST {base_url}/chat/completions` (JSON, or SSE with `stream: true`) and `POST {base_url}/embeddings`.
Streaming asks for `stream_options.include_usage` so the provider's own token count reaches the quota.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson
from httpx_sse import EventSource, SSEError

from llmbasedos.gateway.llm.providers.base import (
    ChatResult,
    Delta,
    EmbedResult,
    Provider,
    StreamEnd,
    Usage,
    protocol_error,
)
from llmbasedos.protocol.errors import FeatureUnavailable, RPCError

__all__ = ["OpenAICompatProvider"]


def _error_message(body: Any) -> str | None:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        for key in ("message", "detail"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return None


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if not isinstance(prompt, int) or isinstance(prompt, bool):
        return None
    if not isinstance(completion, int) or isinstance(completion, bool):
        completion = 0
    return Usage(prompt, completion)


class _ToolCallAccumulator:
    """Tool calls arrive in pieces by index (name first, arguments as string fragments)."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, parts: Any) -> None:
        if not isinstance(parts, list):
            return
        for part in parts:
            if not isinstance(part, dict):
                continue
            index = part.get("index", 0)
            call = self.calls.setdefault(index, {"id": None, "type": "function",
                                                 "function": {"name": "", "arguments": ""}})
            if part.get("id"):
                call["id"] = part["id"]
            fn = part.get("function") or {}
            if isinstance(fn.get("name"), str):
                call["function"]["name"] += fn["name"]
            if isinstance(fn.get("arguments"), str):
                call["function"]["arguments"] += fn["arguments"]

    def result(self) -> list[dict[str, Any]] | None:
        return [self.calls[i] for i in sorted(self.calls)] or None


class OpenAICompatProvider(Provider):
    def _headers(self) -> dict[str, str]:
        key = self.cfg.api_key()
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _body(self, messages: list[dict[str, Any]], options: dict[str, Any], stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {**options, "model": self.cfg.model, "messages": messages, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def chat(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> ChatResult:
        resp = await self._send("POST", "/chat/completions", json_body=self._body(messages, options, False),
                                headers=self._headers(), extract_error=_error_message)
        try:
            raw = await resp.aread()
        except httpx.HTTPError as exc:
            raise self._stream_failed(exc) from exc
        finally:
            await resp.aclose()
        try:
            data = orjson.loads(raw)
            choice = data["choices"][0]
            message = choice.get("message") or {}
            content = message.get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise protocol_error(self.cfg.alias, "no choices in the completion") from None
        if not isinstance(content, str):
            raise protocol_error(self.cfg.alias, "content is not text")
        tool_calls = message.get("tool_calls") if isinstance(message.get("tool_calls"), list) else None
        return ChatResult(content, choice.get("finish_reason"), _usage(data.get("usage")), tool_calls or None)

    async def stream(self, messages: list[dict[str, Any]],
                     options: dict[str, Any]) -> AsyncGenerator[Delta | StreamEnd, None]:
        resp = await self._send("POST", "/chat/completions", json_body=self._body(messages, options, True),
                                headers={**self._headers(), "Accept": "text/event-stream"},
                                extract_error=_error_message)
        finish: str | None = None
        usage: Usage | None = None
        tools = _ToolCallAccumulator()
        try:
            async for event in EventSource(resp).aiter_sse():
                if event.data == "[DONE]":
                    break
                if not event.data:
                    continue
                try:
                    chunk = orjson.loads(event.data)
                except ValueError:
                    raise protocol_error(self.cfg.alias, "an event is not JSON") from None
                if not isinstance(chunk, dict):
                    continue
                if "error" in chunk:
                    detail = _error_message(chunk)
                    raise protocol_error(self.cfg.alias, self._redact(detail)[:300] if detail else "stream error")
                usage = _usage(chunk.get("usage")) or usage
                for choice in chunk.get("choices") or ():
                    if not isinstance(choice, dict):
                        continue
                    delta = choice.get("delta") or {}
                    text = delta.get("content")
                    if isinstance(text, str) and text:
                        yield Delta(text)
                    tools.add(delta.get("tool_calls"))
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        except SSEError:
            raise protocol_error(self.cfg.alias, "not an event stream") from None
        except httpx.HTTPError as exc:
            raise self._stream_failed(exc) from exc
        finally:
            await resp.aclose()
        yield StreamEnd(finish, usage, tools.result())

    async def embed(self, inputs: list[str]) -> EmbedResult:
        if not self.cfg.embeddings:
            await super().embed(inputs)
        try:
            resp = await self._send("POST", "/embeddings",
                                    json_body={"model": self.cfg.model, "input": inputs},
                                    headers=self._headers(), extract_error=_error_message)
        except RPCError as exc:
            status = exc.data.get("status") if isinstance(exc.data, dict) else None
            # llama.cpp's server answers 500 "... must be created with embedding=True" when started without.
            if status in (404, 405, 501) or (status == 500 and "embedding" in exc.message.lower()):
                raise FeatureUnavailable(
                    f"Model alias {self.cfg.alias!r}: the provider does not serve embeddings") from None
            raise
        try:
            raw = await resp.aread()
        except httpx.HTTPError as exc:
            raise self._stream_failed(exc) from exc
        finally:
            await resp.aclose()
        try:
            data = orjson.loads(raw)
            items = sorted(data["data"], key=lambda d: d.get("index", 0))
            vectors = [[float(x) for x in item["embedding"]] for item in items]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise protocol_error(self.cfg.alias, "no embeddings in the answer") from None
        if len(vectors) != len(inputs):
            raise protocol_error(self.cfg.alias, "one embedding per input was expected")
        raw_usage = data.get("usage") if isinstance(data, dict) else None
        usage = None
        if isinstance(raw_usage, dict) and isinstance(raw_usage.get("prompt_tokens"), int):
            usage = Usage(raw_usage["prompt_tokens"], 0)
        return EmbedResult(vectors, usage)
