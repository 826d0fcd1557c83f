"""LLM steps through the gateway to the real llama.cpp server (bundled small model), and the shipped
summarise_folder example run end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.gateway.harness import wait_until
from tests.servers.agent_harness import AgentStack
from tests.support.dovecot import dovecot_available, dovecot_server, sample_messages
from tests.support.llama import LlamaServer, llama  # noqa: F401  (llama is a fixture)

REPO_WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"

ASK = """
id: ask
input_schema:
  type: object
  properties: {question: {type: string}}
  required: [question]
steps:
  - id: answer
    llm:
      prompt: "{{ inputs.question }}"
      options: {max_tokens: 8, temperature: 0}
  - id: chat
    llm:
      messages:
        - {role: system, content: You answer briefly.}
        - {role: user, content: "Repeat: {{ steps.answer | trim | truncate(40) }}"}
      options: {max_tokens: 4}
outputs:
  answer: "{{ steps.answer }}"
  chat: "{{ steps.chat }}"
"""

TOO_MANY = """
id: too_many
steps:
  - id: answer
    llm: {prompt: hi, options: {max_tokens: 500}}
"""

TIERS = """
FREE:
  allowed_capabilities: ['*']
  rate_limit_requests: 100000
  requests_per_day: null
  llm_access: true
  allowed_llm_models: ['*']
  max_tokens_per_request: 64
  max_tokens_per_day: null
"""


@pytest.fixture(scope="module")
def stack(llama: LlamaServer) -> Iterator[AgentStack]:  # noqa: F811
    models = ("default: local\nmodels:\n  local:\n    provider: openai\n"
              f"    base_url: {llama.base_url}\n    model: gemma-3-270m\n    embeddings: false\n")
    shipped = {p.name: p.read_text(encoding="utf-8") for p in REPO_WORKFLOWS.glob("*.yaml")}
    s = AgentStack({**shipped, "ask.yaml": ASK, "too_many.yaml": TOO_MANY}, tiers=TIERS, llm_models=models)
    try:
        yield s
    finally:
        s.close()


async def test_llm_steps_chat_through_the_gateway(stack: AgentStack) -> None:
    async with stack.client() as c:
        status = await stack.run(c, "ask", {"question": "Name a colour."})
    assert status["state"] == "succeeded", (status["error"], status["log"])
    assert isinstance(status["outputs"]["answer"], str) and status["outputs"]["answer"].strip()
    assert isinstance(status["outputs"]["chat"], str)
    assert [e["kind"] for e in status["log"]] == ["llm", "llm"]
    assert "Name a colour" not in str(status["log"])  # prompts never reach the log


async def test_llm_limits_of_the_caller_apply(stack: AgentStack) -> None:
    async with stack.client() as c:
        status = await stack.run(c, "too_many")
    assert status["state"] == "failed"
    assert "max_tokens 500 exceeds the limit of 64" in status["error"]


async def test_shipped_summarise_folder_example(stack: AgentStack) -> None:
    notes = stack.root / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("The cat sat on the mat all afternoon.\n", encoding="utf-8")
    (notes / "b.md").write_text("# Plan\nBuy milk, then fix the bike.\n", encoding="utf-8")
    (notes / "image.png").write_bytes(b"\x89PNG\r\n")
    async with stack.client() as c:
        status = await stack.run(c, "summarise_folder", {"folder": "/notes", "max_tokens": 12}, )
    assert status["state"] == "succeeded", (status["error"], status["log"])
    assert status["outputs"] == {"note": "/notes/SUMMARY.md", "files": ["a.txt", "b.md"]}
    note = (notes / "SUMMARY.md").read_text(encoding="utf-8")
    assert note.startswith("# Summary of /notes\n")
    assert "- **a.txt**: " in note and "- **b.md**: " in note and "image.png" not in note


@pytest.mark.skipif(not dovecot_available(), reason="dovecot is not installed")
async def test_shipped_triage_inbox_example(stack: AgentStack) -> None:
    with dovecot_server({"erin": "erin-Pw-51"}) as dv:
        messages = list(sample_messages().values())[:2]
        for message in messages:
            dv.append("erin", message)
        accounts = {"accounts": {"erin": dv.account("erin", password_env="T_ERIN_PW")}}
        (stack.env.config_dir / "mail_accounts.yaml").write_text(yaml.safe_dump(accounts), encoding="utf-8")
        mail = stack._start("mail", T_ERIN_PW="erin-Pw-51")
        try:
            async with stack.client() as c:
                await wait_until(lambda: _routed(c, "mcp.mail.listAccounts"), what="the mail service routed")
                status = await stack.run(c, "triage_inbox", {"account": "erin", "limit": 5})
        finally:
            mail.stop()
    assert status["state"] == "succeeded", (status["error"], status["log"])
    triage = status["outputs"]["triage"]
    assert len(triage) == 2
    assert {t["subject"] for t in triage} == {str(m["Subject"]) for m in messages}
    assert all(isinstance(t["uid"], int) and isinstance(t["label"], str) and t["label"] for t in triage)


async def _routed(c: object, method: str) -> bool:
    try:
        await c.call(method)  # type: ignore[attr-defined]
    except Exception:
        return False
    return True
