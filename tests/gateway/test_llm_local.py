"""LLM methods end to end: a real gateway process, its /ws door, and the real llama.cpp server with the
bundled Gemma 3 270M model (started by our llm-local program)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from llmbasedos.protocol import errors
from tests.gateway.harness import Env, GatewayProcess, WsClient, wait_until
from tests.support.llama import LlamaServer, llama, start_llama  # noqa: F401  (llama is a fixture)

TIERS = """
FREE:
  allowed_capabilities: ['*']
  rate_limit_requests: 100000
  requests_per_day: null
  llm_access: true
  allowed_llm_models: ['*']
  max_tokens_per_request: null
  max_tokens_per_day: null
PRO:
  allowed_capabilities: ['*']
  rate_limit_requests: 100000
  requests_per_day: null
  llm_access: true
  allowed_llm_models: ['local']
  max_tokens_per_request: 16
  max_tokens_per_day: 60
"""

HI = [{"role": "user", "content": "Say hello."}]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def private_llama(llama: LlamaServer) -> Iterator[LlamaServer]:  # noqa: F811
    server = start_llama()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(llama: LlamaServer, private_llama: LlamaServer) -> Iterator[GatewayProcess]:  # noqa: F811
    env = Env()
    env.set_tiers(TIERS)
    (env.config_dir / "llm_models.yaml").write_text(
        "default: local\n"
        "models:\n"
        f"  local:\n    provider: openai\n    base_url: {llama.base_url}\n    model: gemma-3-270m\n"
        "    embeddings: false\n"
        f"  local-embed:\n    provider: openai\n    base_url: {llama.base_url}\n    model: gemma-3-270m\n"
        f"  private:\n    provider: openai\n    base_url: {private_llama.base_url}\n    model: gemma-3-270m\n"
        "    max_retries: 1\n"
        f"  dead:\n    provider: openai\n    base_url: http://127.0.0.1:{_closed_port()}/v1\n    model: x\n"
        "    max_retries: 0\n    fallbacks: [local]\n",
        encoding="utf-8")
    try:
        yield env.start_gateway()
    finally:
        env.close()


async def _used(c: WsClient) -> int:
    status = await c.call("mcp.licence.check")
    return int(status["remaining"]["llm_tokens_used_today"])


async def _stream(c: WsClient, params: dict[str, Any], rid: int) -> tuple[list[str], dict[str, Any]]:
    answer = await c.request("mcp.llm.chat", {**params, "stream": True}, rid=rid)
    deltas = [n["params"]["delta"] for n in c.notifications
              if n["method"] == "mcp.llm.chunk" and n["params"]["id"] == rid]
    if "error" in answer:
        raise errors.from_error_object(answer["error"])
    return deltas, answer["result"]


async def test_chat_through_ws_returns_message_and_counts_usage(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        before = await _used(c)
        result = await c.call("mcp.llm.chat", {"messages": HI, "options": {"max_tokens": 8, "temperature": 0}})
        assert result["model"] == "local"
        assert result["message"]["role"] == "assistant"
        assert result["message"]["content"].strip()
        assert result["finish_reason"] in ("stop", "length")
        usage = result["usage"]
        assert 0 < usage["completion_tokens"] <= 8 and usage["prompt_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert await wait_until(lambda: _eq(_used(c), before + usage["total_tokens"]), what="usage recorded")


async def _eq(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def test_streaming_chat_sends_chunks_then_the_whole_message(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        before = await _used(c)
        deltas, result = await _stream(c, {"messages": HI, "options": {"max_tokens": 12, "temperature": 0}}, 41)
        assert len(deltas) >= 2
        assert result["message"]["content"] == "".join(deltas)
        usage = result["usage"]
        assert usage["completion_tokens"] >= len(deltas) - 1 and usage["completion_tokens"] <= 12
        assert await wait_until(lambda: _eq(_used(c), before + usage["total_tokens"]), what="usage recorded")


async def test_quota_per_request_alias_and_day(gw: GatewayProcess) -> None:
    token = gw.create_token("quota-client", tier="PRO")
    async with WsClient.connect(gw.ws_url, token) as c:
        with pytest.raises(errors.Forbidden, match="max_tokens"):
            await c.call("mcp.llm.chat", {"messages": HI, "options": {"max_tokens": 100}})
        with pytest.raises(errors.Forbidden, match="private"):
            await c.call("mcp.llm.chat", {"messages": HI, "model": "private", "options": {"max_tokens": 4}})
        listed = await c.call("mcp.llm.models")
        assert [m["alias"] for m in listed["models"]] == ["local"]
        # No max_tokens given: the tier's per-request cap applies, so each call uses at most 16 + prompt.
        calls = 0
        with pytest.raises(errors.QuotaExceeded) as info:
            while calls < 20:
                await c.call("mcp.llm.chat", {"messages": HI})
                calls += 1
        assert 1 <= calls < 20
        assert info.value.data["limit"] == 60
        assert await _used(c) >= 60


async def test_disconnect_mid_stream_counts_usage_and_cancels_upstream(gw: GatewayProcess,
                                                                       llama: LlamaServer) -> None:  # noqa: F811
    token = gw.create_token("leaver")
    cancelled_before = llama.output().count("Disconnected from client")
    async with WsClient.connect(gw.ws_url, token) as c:
        await c.send({"jsonrpc": "2.0", "id": 5, "method": "mcp.llm.chat",
                      "params": {"messages": [{"role": "user", "content": "Write a very long story about a cat."}],
                                 "options": {"max_tokens": 1500}, "stream": True}})
        await wait_until(lambda: any(n["method"] == "mcp.llm.chunk" for n in c.notifications), 60,
                         what="first chunk")
    # The client is gone: the gateway must drop the upstream stream, and still count what was produced.
    await asyncio.to_thread(
        lambda: wait_until_sync(lambda: llama.output().count("Disconnected from client") > cancelled_before))
    async with WsClient.connect(gw.ws_url, token) as c:
        assert await wait_until(lambda: _positive(_used(c)), what="tokens of the abandoned stream counted")


async def _positive(value: Any) -> bool:
    return bool(await value > 0)


def wait_until_sync(predicate: Any, timeout: float = 60.0) -> None:
    from tests.support.procs import wait_for

    wait_for(predicate, timeout, what="llama.cpp to see the disconnect")


async def test_unreachable_alias_falls_back(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        result = await c.call("mcp.llm.chat", {"messages": HI, "model": "dead", "options": {"max_tokens": 4}})
        assert result["model"] == "local"
        assert result["message"]["content"]


async def test_provider_down_then_restarted(gw: GatewayProcess, private_llama: LlamaServer) -> None:
    params = {"messages": HI, "model": "private", "options": {"max_tokens": 4}}
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        assert (await c.call("mcp.llm.chat", params))["model"] == "private"
        private_llama.stop()
        with pytest.raises(errors.ServiceUnavailable, match="'private'") as info:
            await c.call("mcp.llm.chat", params)
        assert str(private_llama.port) not in info.value.message
        await asyncio.to_thread(private_llama.start)
        assert (await c.call("mcp.llm.chat", params))["message"]["content"]


async def test_unknown_alias_and_embeddings_are_clear_errors(gw: GatewayProcess) -> None:
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        answer = await c.request("mcp.llm.chat", {"messages": HI, "model": "nope"})
        assert answer["error"]["code"] == errors.NOT_FOUND and "nope" in answer["error"]["message"]
        answer = await c.request("mcp.llm.embed", {"input": "hello"})
        assert answer["error"]["code"] == errors.FEATURE_UNAVAILABLE
        # Configured for embeddings, but the server was started without them: said as clearly.
        answer = await c.request("mcp.llm.embed", {"input": "hello", "model": "local-embed"})
        assert answer["error"]["code"] == errors.FEATURE_UNAVAILABLE
        assert "local-embed" in answer["error"]["message"]


async def test_builtin_local_alias_without_a_registry_file(llama: LlamaServer) -> None:  # noqa: F811
    env = Env()
    env.set_tiers(TIERS)
    try:
        gw = env.start_gateway(LLMBDO_LLM_LOCAL_PORT=str(llama.port))
        async with WsClient.connect(gw.ws_url, gw.token) as c:
            models = await c.call("mcp.llm.models")
            assert models["default"] == "local"
            assert [m["alias"] for m in models["models"]] == ["local"]
            result = await c.call("mcp.llm.chat", {"messages": HI, "options": {"max_tokens": 4}})
            assert result["model"] == "local" and result["message"]["content"]
    finally:
        env.close()


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_chat_is_the_llm_chat_tool_on_the_standard_mcp_door(gw: GatewayProcess, mode: str) -> None:
    from mcp import Client

    async with Client(f"{gw.url}/mcp?token={gw.token}", mode=mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert {"llm_chat", "llm_models", "llm_embed"} <= set(tools)
        result = await client.call_tool("llm_chat", {"messages": HI, "options": {"max_tokens": 4}})
        assert result.is_error is False
        assert result.structured_content["model"] == "local"
        assert result.structured_content["usage"]["completion_tokens"] > 0
        bad = await client.call_tool("llm_chat", {"messages": HI, "model": "nope"})
        assert bad.is_error is True
