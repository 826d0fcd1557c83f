"""Cloud LLM APIs that cannot be reached from a test, as a real HTTP server on loopback.

One uvicorn server (port 0, in a thread) speaks OpenAI's `/v1/chat/completions` + `/v1/embeddings` and
Anthropic's `/v1/messages`, JSON and SSE. What it does depends on the model name the gateway sends, which the
test's llm_models.yaml sets per alias:

    echo          answers "echo: <last user message>", word by word when streaming, with usage
    echo-nousage  the same, but never reports usage
    endless       streams "tick " until the client goes away (then records a disconnect)
    ratelimit-N   answers 429 (Retry-After from the `retry_after` setting) to the first N requests
    busy          always 503
    tools         asks for a tool call
    slow          never answers a non-streaming request; records a disconnect when the client goes away
    held          (OpenAI) a model that writes exactly max_tokens words (64 when none is sent) with usage, but
                  holds every answer until the test calls `release()` (a stream sends its first word first);
                  a client that leaves before is recorded as a disconnect; `held` counts the waiting answers
Every request's headers and JSON body are recorded for the test to inspect.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["FakeProviders", "Recorded"]


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class _State:
    api_key: str
    retry_after: str = "0"
    requests: list[Recorded] = field(default_factory=list)
    disconnects: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    released: threading.Event = field(default_factory=threading.Event)
    held: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]


def _reply_text(body: dict[str, Any]) -> str:
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return "echo: " + (users[-1] if users else "")


def _count(text: str) -> int:
    return max(1, len(text.split()))


class FakeProviders:
    def __init__(self, api_key: str) -> None:
        self.state = _State(api_key=api_key)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- test side ---------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[Recorded]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def disconnects(self) -> int:
        with self.state.lock:
            return self.state.disconnects

    @property
    def held(self) -> int:
        with self.state.lock:
            return self.state.held

    def release(self) -> None:
        self.state.released.set()

    def set_retry_after(self, value: str) -> None:
        with self.state.lock:
            self.state.retry_after = value

    def reset(self) -> None:
        with self.state.lock:
            self.state.requests.clear()
            self.state.counters.clear()
            self.state.disconnects = 0
            self.state.released = threading.Event()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    def start(self) -> FakeProviders:
        app = Starlette(routes=[
            Route("/v1/chat/completions", self._openai_chat, methods=["POST"]),
            Route("/v1/embeddings", self._openai_embed, methods=["POST"]),
            Route("/v1/messages", self._anthropic, methods=["POST"]),
        ])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, name="fake-providers", daemon=True)
        self._thread.start()
        if not self.wait_for(lambda: server.started):
            raise RuntimeError("the fake provider server did not start")
        self.port = server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- server side -------------------------------------------------------------------------------------

    async def _record(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        with self.state.lock:
            self.state.requests.append(Recorded(request.url.path, dict(request.headers), body))
        return body

    def _gate(self, model: str) -> Response | None:
        """The scripted failures, shared by both wire formats."""
        if model == "busy":
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if model.startswith("ratelimit-"):
            limit = int(model.split("-", 1)[1])
            with self.state.lock:
                seen = self.state.counters.get(model, 0)
                self.state.counters[model] = seen + 1
                retry_after = self.state.retry_after
            if seen < limit:
                return JSONResponse({"error": {"message": "slow down"}}, status_code=429,
                                    headers={"Retry-After": retry_after})
        return None

    async def _endless(self, frame: Callable[[int], str]) -> AsyncIterator[str]:
        i = 0
        try:
            while True:
                yield frame(i)
                i += 1
                await asyncio.sleep(0.01)
        finally:
            with self.state.lock:
                self.state.disconnects += 1

    async def _hold(self, request: Request | None) -> bool:
        """Wait for `release()`; False when the client went away first (recorded as a disconnect)."""
        released = self.state.released
        with self.state.lock:
            self.state.held += 1
        completed = False
        try:
            while not released.is_set():
                if request is not None and await request.is_disconnected():
                    return False
                await asyncio.sleep(0.01)
            completed = True
            return True
        finally:
            with self.state.lock:
                self.state.held -= 1
                if not completed:
                    self.state.disconnects += 1

    async def _openai_chat(self, request: Request) -> Response:
        body = await self._record(request)
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {self.state.api_key}":
            # Like the real API: the rejected key is quoted back in the message.
            return JSONResponse({"error": {"message": f"Incorrect API key provided: {auth[7:]}"}}, status_code=401)
        model = str(body.get("model"))
        failed = self._gate(model)
        if failed is not None:
            return failed
        text = _reply_text(body)
        prompt = sum(_count(m.get("content") or "") for m in body.get("messages", []))
        usage = {"prompt_tokens": prompt, "completion_tokens": _count(text),
                 "total_tokens": prompt + _count(text)}
        if model == "tools":
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}]}
            return JSONResponse({"id": "c1", "object": "chat.completion", "model": model, "usage": usage,
                                 "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]})
        if model == "held":
            n = body.get("max_tokens") if isinstance(body.get("max_tokens"), int) else 64
            text = " ".join(["word"] * n)
            usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
            if not body.get("stream") and not await self._hold(request):
                return JSONResponse({"error": {"message": "gone"}}, status_code=499)
        if model == "slow" and not body.get("stream"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not await request.is_disconnected():
                await asyncio.sleep(0.01)
            with self.state.lock:
                self.state.disconnects += 1
            return JSONResponse({"error": {"message": "too late"}}, status_code=500)
        if not body.get("stream"):
            return JSONResponse({"id": "c1", "object": "chat.completion", "model": model, "usage": usage,
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                              "finish_reason": "stop"}]})

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return "data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "model": model,
                                          "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

        if model == "endless":
            return StreamingResponse(self._endless(lambda i: chunk({"content": "tick "})),
                                     media_type="text/event-stream")

        async def events() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            for i, word in enumerate(_words(text)):
                yield chunk({"content": word})
                if model == "held" and i == 0:
                    await self._hold(None)  # a client that leaves cancels this generator: a disconnect
            yield chunk({}, "stop")
            include = (body.get("stream_options") or {}).get("include_usage")
            if include and model != "echo-nousage":
                yield "data: " + json.dumps({"id": "c1", "choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _openai_embed(self, request: Request) -> Response:
        body = await self._record(request)
        if request.headers.get("authorization") != f"Bearer {self.state.api_key}":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), float(i), 0.5]}
                for i, t in enumerate(inputs)]
        return JSONResponse({"object": "list", "data": data, "model": body.get("model"),
                             "usage": {"prompt_tokens": sum(_count(t) for t in inputs), "total_tokens": 0}})

    async def _anthropic(self, request: Request) -> Response:
        body = await self._record(request)
        if request.headers.get("x-api-key") != self.state.api_key:
            return JSONResponse({"type": "error", "error": {"type": "authentication_error",
                                                            "message": "invalid x-api-key"}}, status_code=401)
        if not request.headers.get("anthropic-version"):
            return JSONResponse({"type": "error", "error": {"type": "invalid_request_error",
                                                            "message": "anthropic-version header is required"}},
                                status_code=400)
        if not isinstance(body.get("max_tokens"), int):
            return JSONResponse({"type": "error", "error": {"type": "invalid_request_error",
                                                            "message": "max_tokens: Field required"}},
                                status_code=400)
        if any(m.get("role") == "system" for m in body.get("messages", [])):
            return JSONResponse({"type": "error", "error": {"type": "invalid_request_error",
                                                            "message": "system role is not a message role"}},
                                status_code=400)
        model = str(body.get("model"))
        failed = self._gate(model)
        if failed is not None:
            return failed
        text = _reply_text(body)
        prompt = sum(_count(m.get("content") or "") for m in body.get("messages", []))
        if body.get("system"):
            prompt += _count(body["system"])
        if not body.get("stream"):
            return JSONResponse({"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                                 "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                                 "usage": {"input_tokens": prompt, "output_tokens": _count(text)}})

        def event(kind: str, data: dict[str, Any]) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

        if model == "endless":
            return StreamingResponse(self._endless(lambda i: event(
                "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "tick "}})),
                media_type="text/event-stream")

        async def events() -> AsyncIterator[str]:
            yield event("message_start", {"message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                      "content": [], "model": model,
                                                      "usage": {"input_tokens": prompt, "output_tokens": 1}}})
            yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            yield event("ping", {})
            for word in _words(text):
                yield event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word}})
            yield event("content_block_stop", {"index": 0})
            yield event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                          "usage": {"output_tokens": _count(text)}})
            yield event("message_stop", {})

        return StreamingResponse(events(), media_type="text/event-stream")
