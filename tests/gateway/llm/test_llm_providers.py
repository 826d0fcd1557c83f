"""The LLM methods against OpenAI and Anthropic wire formats, served by a real loopback HTTP server.

Calls go through the gateway's real Router (schema checks, policy hooks) into the LLM service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbasedos.gateway.llm import CHUNK_METHOD, LLMService, ModelRegistry, install
from llmbasedos.gateway.llm.estimates import prompt_bound
from llmbasedos.gateway.llm.options import DEFAULT_MAX_TOKENS
from llmbasedos.gateway.policy.gatekeeper import DB_NAME, ClientIdentity, Policy
from llmbasedos.gateway.policy.tokens import TokenStore
from llmbasedos.gateway.routing.router import Router
from llmbasedos.protocol import errors
from llmbasedos.settings import Settings
from tests.support.fake_providers import FakeProviders

KEY = "sk-test-9f8e7d6c5b4a39281706"
WRONG_KEY = "sk-wrong-0a1b2c3d4e5f60718293"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    server = FakeProviders(KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def conf_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="llmt", dir="/tmp"))
    for name, value in (("key", KEY), ("wrong.key", WRONG_KEY)):
        (d / name).write_text(value + "\n")
        (d / name).chmod(0o600)
    (d / "lic.key").write_text("ELITE:tests:2099-12-31\n")
    # A daily quota without a per-request cap: its calls still need a bound to reserve.
    (d / "licence_tiers.yaml").write_text("METERED:\n  allowed_llm_models: ['*']\n  max_tokens_per_request: null\n"
                                          "  max_tokens_per_day: 1000000\n")
    yield d


def _yaml(fake: FakeProviders, conf: Path) -> str:
    base = fake.base_url
    down = f"http://127.0.0.1:{_closed_port()}/v1"

    def oa(alias: str, model: str, extra: str = "") -> str:
        return (f"  {alias}:\n    provider: openai\n    base_url: {base}\n    model: {model}\n"
                f"    api_key_file: {conf / 'key'}\n    timeout: 10\n{extra}")

    def an(alias: str, model: str, extra: str = "") -> str:
        return (f"  {alias}:\n    provider: anthropic\n    base_url: {base}\n    model: {model}\n"
                f"    api_key_file: key\n    timeout: 10\n{extra}")

    return "default: oa\nmodels:\n" + "".join([
        oa("oa", "echo"),
        oa("oa-nousage", "echo-nousage"),
        oa("oa-endless", "endless"),
        oa("oa-tools", "tools"),
        oa("oa-slow", "slow"),
        oa("oa-busy", "busy", "    max_retries: 1\n"),
        oa("oa-busy-fb", "busy", "    max_retries: 0\n    fallbacks: [an]\n"),
        oa("oa-429", "ratelimit-2"),
        oa("oa-429-long", "ratelimit-9", "    timeout: 5\n"),
        oa("oa-defaults", "echo", "    options: {temperature: 0.1, max_tokens: 7}\n"),
        oa("oa-big", "echo", "    options: {max_tokens: 100000}\n"),
        f"  oa-wrongkey:\n    provider: openai\n    base_url: {base}\n    model: echo\n"
        f"    api_key_file: {conf / 'wrong.key'}\n",
        f"  down:\n    provider: openai\n    base_url: {down}\n    model: echo\n    max_retries: 1\n",
        f"  down-fb:\n    provider: openai\n    base_url: {down}\n    model: echo\n    max_retries: 0\n"
        "    fallbacks: [down, oa]\n",
        an("an", "echo"),
        an("an-endless", "endless"),
    ])


class Collector:
    def __init__(self) -> None:
        self.notes: list[tuple[str, dict[str, Any]]] = []
        self.first = asyncio.Event()

    def __call__(self, method: str, params: dict[str, Any]) -> None:
        self.notes.append((method, params))
        self.first.set()

    def deltas(self) -> list[str]:
        return [p["delta"] for m, p in self.notes if m == CHUNK_METHOD]


@pytest.fixture(scope="module")
def settings(conf_dir: Path) -> Settings:
    state = Path(tempfile.mkdtemp(prefix="llms", dir="/tmp"))
    return Settings(state_dir=state, run_dir=state / "run", data_dir=state / "data", log_dir=state / "logs",
                    config_dir=conf_dir, virtual_root=state / "files")


@pytest.fixture(scope="module")
def policy(settings: Settings) -> Iterator[Policy]:
    pol = Policy.load(settings)
    yield pol
    pol.close()


@pytest.fixture(scope="module")
def pro_client(policy: Policy, settings: Settings) -> ClientIdentity:
    store = TokenStore(settings.data_dir / DB_NAME)
    try:
        _, token = store.create("pro-client", "PRO")
    finally:
        store.close()
    return policy.authenticate(token, transport="ws", remote="127.0.0.1")


@pytest.fixture(scope="module")
def metered_client(policy: Policy, settings: Settings) -> ClientIdentity:
    store = TokenStore(settings.data_dir / DB_NAME)
    try:
        _, token = store.create("metered-client", "METERED")
    finally:
        store.close()
    return policy.authenticate(token, transport="ws", remote="127.0.0.1")


@pytest.fixture
async def gw(fake: FakeProviders, conf_dir: Path, policy: Policy) -> AsyncIterator[tuple[Router, LLMService, Policy]]:
    fake.reset()
    router = Router(policy)
    registry = ModelRegistry.parse(_yaml(fake, conf_dir), "llm_models.yaml", base_dir=conf_dir)
    service = install(router, policy, Settings.from_env(), registry)
    yield router, service, policy
    await service.aclose()


async def _call(router: Router, method: str, params: Any, notify: Collector | None = None) -> Any:
    client = router.policy.local_identity()
    return await router.call(client, method, params, notify=notify, request_id=7)


HELLO = [{"role": "user", "content": "hello there"}]


async def test_openai_chat_returns_message_finish_reason_and_provider_usage(gw, fake) -> None:
    router, _, _ = gw
    result = await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "oa"})
    assert result["message"] == {"role": "assistant", "content": "echo: hello there"}
    assert result["finish_reason"] == "stop"
    assert result["model"] == "oa"
    # The fake counts words: 2 in the prompt, 3 in the answer.
    assert result["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    sent = fake.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "echo"
    assert sent.headers["authorization"] == f"Bearer {KEY}"


async def test_default_alias_is_used_when_none_is_named(gw) -> None:
    router, _, _ = gw
    result = await _call(router, "mcp.llm.chat", {"messages": HELLO})
    assert result["model"] == "oa"


async def test_openai_stream_sends_chunks_with_request_id_then_whole_message(gw, fake) -> None:
    router, _, _ = gw
    notes = Collector()
    result = await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "oa", "stream": True}, notes)
    assert notes.deltas() == ["echo: ", "hello ", "there"]
    assert all(p["id"] == 7 for _, p in notes.notes)
    assert result["message"]["content"] == "echo: hello there"
    assert result["usage"]["total_tokens"] == 5
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_stream_without_provider_usage_counts_chunks(gw) -> None:
    router, _, _ = gw
    notes = Collector()
    result = await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "oa-nousage", "stream": True}, notes)
    assert result["usage"]["completion_tokens"] == len(notes.deltas()) == 3
    assert result["usage"]["prompt_tokens"] > 0


async def test_positional_params_are_mapped(gw) -> None:
    router, _, _ = gw
    result = await _call(router, "mcp.llm.chat", [HELLO, "oa", {"max_tokens": 5}, False])
    assert result["message"]["content"] == "echo: hello there"


async def test_known_options_pass_through_and_alias_defaults_apply(gw, fake) -> None:
    router, _, _ = gw
    opts = {"temperature": 0.5, "top_p": 0.9, "stop": ["\n"], "seed": 3}
    await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "oa-defaults", "options": opts})
    body = fake.requests[-1].body
    assert body["model"] == "echo"
    assert body["temperature"] == 0.5  # the client's value wins over the alias default
    assert body["max_tokens"] == 7  # the alias default fills what the client left out
    assert body["top_p"] == 0.9 and body["stop"] == ["\n"] and body["seed"] == 3


@pytest.mark.parametrize("params", [
    {"messages": HELLO, "model": "oa", "options": {"model": "gpt-evil"}},
    {"messages": HELLO, "model": "oa", "options": {"base_url": "http://evil.example/v1"}},
    {"messages": HELLO, "model": "oa", "options": {"api_key": "x"}},
    {"messages": HELLO, "model": "oa", "base_url": "http://evil.example/v1"},
    {"messages": HELLO, "model": "oa", "options": {"temperature": "hot"}},
    {"messages": [{"role": "wizard", "content": "hi"}], "model": "oa"},
    {"messages": [], "model": "oa"},
])
async def test_the_client_cannot_override_model_url_or_key(gw, fake, params) -> None:
    router, _, _ = gw
    with pytest.raises(errors.InvalidParams):
        await _call(router, "mcp.llm.chat", params)
    assert fake.requests == []


async def test_tier_cap_bounds_defaults_but_refuses_an_explicit_excess(gw, fake, pro_client) -> None:
    router, _, policy = gw
    cap = policy.licence_status(pro_client)["limits"]["max_tokens_per_request"]
    assert isinstance(cap, int)
    await router.call(pro_client, "mcp.llm.chat", {"messages": HELLO, "model": "oa-big"})
    assert fake.requests[-1].body["max_tokens"] == cap  # the alias default, brought within the tier
    await router.call(pro_client, "mcp.llm.chat", {"messages": HELLO, "model": "oa"})
    assert fake.requests[-1].body["max_tokens"] == cap  # nothing asked: the tier's cap is sent
    with pytest.raises(errors.Forbidden, match="max_tokens"):
        await router.call(pro_client, "mcp.llm.chat",
                          {"messages": HELLO, "model": "oa", "options": {"max_tokens": cap + 1}})
    assert len(fake.requests) == 2


async def test_unknown_alias_is_not_found(gw) -> None:
    router, _, _ = gw
    with pytest.raises(errors.NotFound, match="nope"):
        await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "nope"})


async def test_tool_calls_come_back_in_the_message(gw, fake) -> None:
    router, _, _ = gw
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    result = await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "oa-tools", "options": {"tools": tools}})
    assert result["finish_reason"] == "tool_calls"
    assert result["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    assert fake.requests[-1].body["tools"] == tools


async def test_anthropic_chat_translates_system_and_usage(gw, fake) -> None:
    router, _, _ = gw
    messages = [{"role": "system", "content": "be brief"}, *HELLO]
    result = await _call(router, "mcp.llm.chat", {"messages": messages, "model": "an",
                                                  "options": {"stop": "\n", "temperature": 0.2}})
    assert result["message"]["content"] == "echo: hello there"
    assert result["finish_reason"] == "stop"
    assert result["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY and sent.headers["anthropic-version"]
    assert sent.body["system"] == "be brief"
    assert sent.body["stop_sequences"] == ["\n"]
    assert sent.body["max_tokens"] > 0 and sent.body["model"] == "echo"


async def test_anthropic_stream_over_sse(gw) -> None:
    router, _, _ = gw
    notes = Collector()
    result = await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "an", "stream": True}, notes)
    assert notes.deltas() == ["echo: ", "hello ", "there"]
    assert result["message"]["content"] == "echo: hello there"
    assert result["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert result["finish_reason"] == "stop"


async def test_anthropic_refuses_options_it_does_not_have(gw, fake) -> None:
    router, _, _ = gw
    with pytest.raises(errors.InvalidParams, match="seed"):
        await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "an", "options": {"seed": 1}})
    assert fake.requests == []


async def test_rate_limited_provider_is_retried(gw, fake) -> None:
    router, _, _ = gw
    fake.set_retry_after("0")
    result = await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "oa-429"})
    assert result["message"]["content"] == "echo: hello there"
    assert len(fake.requests) == 3  # two 429s, then the answer


async def test_retry_hint_is_clamped_and_never_waited_past_the_deadline(gw, fake) -> None:
    router, _, _ = gw
    fake.set_retry_after("3600")
    try:
        with pytest.raises(errors.UpstreamError) as info:
            await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "oa-429-long"})
    finally:
        fake.set_retry_after("0")
    assert info.value.data["retry_after"] == 60
    assert info.value.data["status"] == 429
    assert len(fake.requests) == 1


async def test_unavailable_provider_is_retried_then_reported(gw, fake) -> None:
    router, _, _ = gw
    with pytest.raises(errors.ServiceUnavailable, match="oa-busy"):
        await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "oa-busy"})
    assert len(fake.requests) == 2  # max_retries: 1


async def test_unavailable_provider_falls_back_to_next_alias(gw) -> None:
    router, _, _ = gw
    result = await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "oa-busy-fb"})
    assert result["model"] == "an"


async def test_unreachable_provider_is_a_clear_error_without_its_address(gw) -> None:
    router, _, _ = gw
    with pytest.raises(errors.ServiceUnavailable) as info:
        await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "down"})
    assert "'down'" in info.value.message and "cannot be reached" in info.value.message
    assert "127.0.0.1" not in str(info.value.to_error())


async def test_unreachable_provider_falls_back_streaming_too(gw) -> None:
    router, _, _ = gw
    notes = Collector()
    result = await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "down-fb", "stream": True}, notes)
    assert result["model"] == "oa"
    assert "".join(notes.deltas()) == "echo: hello there"


async def test_rejected_key_never_reaches_errors_or_logs(gw, caplog, conf_dir) -> None:
    router, service, _ = gw
    caplog.set_level(logging.DEBUG)
    with pytest.raises(errors.UpstreamError) as info:
        await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "oa-wrongkey"})
    assert "credentials" in info.value.message
    wire = str(info.value.to_error())
    assert WRONG_KEY not in wire and KEY not in wire
    await _call(router, "mcp.llm.chat", {"messages": [{"role": "user", "content": "secret-prompt-42"}],
                                         "model": "oa", "stream": True}, Collector())
    assert WRONG_KEY not in caplog.text and KEY not in caplog.text
    assert "secret-prompt-42" not in caplog.text
    status = str(service.status())
    assert KEY not in status and "api_key" not in status and str(conf_dir) not in status


def _used(policy: Policy) -> int:
    return int(policy.licence_status(policy.local_identity())["remaining"]["llm_tokens_used_today"])


async def test_usage_is_recorded_with_the_policy(gw) -> None:
    router, _, policy = gw
    before = _used(policy)
    result = await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "an", "stream": True}, Collector())
    assert _used(policy) == before + result["usage"]["total_tokens"]


async def test_disconnect_mid_stream_cancels_the_upstream_request_and_counts_usage(gw, fake) -> None:
    router, _, policy = gw
    for alias in ("oa-endless", "an-endless"):
        fake.reset()
        before = _used(policy)
        notes = Collector()
        task = asyncio.create_task(_call(router, "mcp.llm.chat",
                                         {"messages": HELLO, "model": alias, "stream": True}, notes))
        await asyncio.wait_for(notes.first.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fake.wait_for(lambda: fake.disconnects == 1), alias
        # No usage ever came from the provider: the chunks received plus an estimate of the prompt.
        assert _used(policy) >= before + len(notes.deltas()) + 1, alias


async def test_disconnect_during_a_plain_chat_cancels_it_and_counts_the_prompt(gw, fake) -> None:
    router, _, policy = gw
    before = _used(policy)
    task = asyncio.create_task(_call(router, "mcp.llm.chat", {"messages": HELLO, "model": "oa-slow"}))
    assert await asyncio.to_thread(fake.wait_for, lambda: len(fake.requests) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(fake.wait_for, lambda: fake.disconnects == 1)
    assert _used(policy) > before


async def test_embed_returns_one_vector_per_input(gw, fake) -> None:
    router, _, _ = gw
    result = await _call(router, "mcp.llm.embed", {"input": ["ab", "abcd"], "model": "oa"})
    assert result["vectors"] == [[2.0, 0.0, 0.5], [4.0, 1.0, 0.5]]
    assert result["dimensions"] == 3 and result["model"] == "oa"
    assert fake.requests[-1].body == {"model": "echo", "input": ["ab", "abcd"]}
    single = await _call(router, "mcp.llm.embed", {"input": "abc"})
    assert len(single["vectors"]) == 1


async def test_embed_on_a_provider_without_embeddings_is_feature_unavailable(gw, fake) -> None:
    router, _, _ = gw
    with pytest.raises(errors.FeatureUnavailable, match="'an'"):
        await _call(router, "mcp.llm.embed", {"input": "x", "model": "an"})
    assert fake.requests == []


async def test_models_lists_aliases_without_urls_or_keys(gw) -> None:
    router, _, _ = gw
    result = await _call(router, "mcp.llm.models", {})
    assert result["default"] == "oa" and result["configured"] is True
    aliases = {m["alias"]: m for m in result["models"]}
    assert aliases["an"] == {"alias": "an", "provider": "anthropic", "model": "echo", "embeddings": False}
    assert "base_url" not in str(result) and "api_key" not in str(result) and "127.0.0.1" not in str(result)


async def test_key_file_opened_to_others_after_load_is_refused(gw, conf_dir) -> None:
    router, _, _ = gw
    key = conf_dir / "key"
    key.chmod(0o644)
    try:
        with pytest.raises(errors.FeatureUnavailable, match="0600"):
            await _call(router, "mcp.llm.chat", {"messages": HELLO, "model": "oa"})
    finally:
        key.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_api_key_from_environment_variable_names_the_variable_when_missing() -> None:
    reg = ModelRegistry.parse("models:\n  x:\n    provider: openai\n    base_url: http://127.0.0.1:1/v1\n"
                              "    model: m\n    api_key_env: LLMBDO_TEST_SURELY_UNSET_KEY\n")
    assert os.environ.get("LLMBDO_TEST_SURELY_UNSET_KEY") is None
    with pytest.raises(errors.FeatureUnavailable, match="LLMBDO_TEST_SURELY_UNSET_KEY"):
        reg.get("x").api_key()


def _left(policy: Policy, client: ClientIdentity) -> tuple[int, int]:
    remaining = policy.licence_status(client)["remaining"]
    return int(remaining["llm_tokens_today"]), int(remaining["llm_tokens_used_today"])


async def test_a_client_with_a_daily_quota_always_sends_the_max_tokens_it_reserves(gw, fake, metered_client) -> None:
    router, _, policy = gw
    left, used = _left(policy, metered_client)
    result = await router.call(metered_client, "mcp.llm.chat", {"messages": HELLO, "model": "oa"})
    assert fake.requests[-1].body["max_tokens"] == DEFAULT_MAX_TOKENS  # neither client, alias nor tier set one
    total = result["usage"]["total_tokens"]
    assert _left(policy, metered_client) == (left - total, used + total)  # settled to the real use


@pytest.mark.parametrize("alias", ["oa-wrongkey", "down", "oa-busy"])
async def test_a_call_the_provider_never_took_costs_nothing_and_holds_nothing(gw, metered_client, alias) -> None:
    router, _, policy = gw
    before = _left(policy, metered_client)
    with pytest.raises((errors.UpstreamError, errors.ServiceUnavailable)):
        await router.call(metered_client, "mcp.llm.chat", {"messages": HELLO, "model": alias, "stream": True})
    assert _left(policy, metered_client) == before


async def test_a_caller_who_leaves_an_anthropic_stream_pays_its_reservation(gw, fake, metered_client) -> None:
    router, _, policy = gw
    _, used = _left(policy, metered_client)
    notes = Collector()
    options = {"max_tokens": 40}
    task = asyncio.create_task(router.call(metered_client, "mcp.llm.chat", {
        "messages": HELLO, "model": "an-endless", "stream": True, "options": options}, notify=notes, request_id=3))
    await asyncio.wait_for(notes.first.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(fake.wait_for, lambda: fake.disconnects == 1)
    assert _left(policy, metered_client)[1] == used + prompt_bound(HELLO, options) + 40
