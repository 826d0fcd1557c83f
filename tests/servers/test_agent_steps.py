"""The outward step kinds refuse what the configuration does not allow, before anything is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmbasedos.servers.agent.config import AgentConfig
from llmbasedos.servers.agent.steps import StepFailed, http_request, post_webhook, run_docker


def _config(**kwargs: object) -> AgentConfig:
    return AgentConfig(workflows_dir=Path("w"), gateway_socket=Path("g.sock"), **kwargs)  # type: ignore[arg-type]


async def test_docker_is_refused_when_disabled_or_not_allowlisted() -> None:
    with pytest.raises(StepFailed, match="docker steps are disabled"):
        await run_docker(_config(), {"image": "alpine:3.20", "command": ["true"]})
    enabled = _config(docker_enabled=True, docker_images=frozenset({"alpine:3.20"}))
    with pytest.raises(StepFailed, match="'evil:latest' is not on the agent's docker image allowlist"):
        await run_docker(enabled, {"image": "evil:latest", "command": ["true"]})
    with pytest.raises(StepFailed, match="environment name"):
        await run_docker(enabled, {"image": "alpine:3.20", "environment": {"BAD NAME": "x"}})


@pytest.mark.parametrize(("url", "message"), [
    ("http://example.com/", "'example.com' is not on the agent's HTTP allowlist"),
    ("http://127.0.0.1:9/", "'127.0.0.1' is not on the agent's HTTP allowlist"),
    ("ftp://127.0.0.1:8/", "http:// or https://"),
    ("http://user:pw@127.0.0.1:8/", "credentials in the url"),
    ("http://[::1", "not valid"),
])
async def test_http_refuses_urls_off_the_allowlist(url: str, message: str) -> None:
    config = _config(http_allow=frozenset({"127.0.0.1:8"}))
    with pytest.raises(StepFailed) as info:
        await http_request(config, {"url": url}, 5)
    assert message in str(info.value)


async def test_webhook_is_refused_when_disabled() -> None:
    config = _config(http_allow=frozenset({"127.0.0.1:8"}))
    with pytest.raises(StepFailed, match="n8n_webhook steps are disabled"):
        await post_webhook(config, {"webhook_url": "http://127.0.0.1:8/hook"}, 5)
