"""agent.yaml and its environment overrides: the limits, read in one place, refused when they make no sense."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmbasedos.servers.agent.config import AgentConfig, ConfigError
from llmbasedos.settings import Settings


def _load(tmp_path: Path, text: str) -> AgentConfig:
    (tmp_path / "agent.yaml").write_text(text, encoding="utf-8")
    return AgentConfig.load(Settings(state_dir=tmp_path, run_dir=tmp_path, data_dir=tmp_path, log_dir=tmp_path,
                                     config_dir=tmp_path, virtual_root=tmp_path))


def test_limits_have_defaults_and_come_from_the_file_or_the_environment(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    default = _load(tmp_path, "")
    assert (default.max_runs, default.max_runs_per_client, default.max_depth, default.max_children) == (16, 4, 5, 16)
    assert (default.max_string, default.max_render_seconds) == (4 << 20, 2.0)
    cfg = _load(tmp_path, "max_runs: 8\nmax_runs_per_client: 2\nmax_render_seconds: 0.5\n")
    assert (cfg.max_runs, cfg.max_runs_per_client, cfg.max_render_seconds) == (8, 2, 0.5)
    monkeypatch.setenv("LLMBDO_AGENT_MAX_RUNS", "3")
    monkeypatch.setenv("LLMBDO_AGENT_MAX_RENDER_SECONDS", "1.5")
    cfg = _load(tmp_path, "max_runs: 8\n")
    assert (cfg.max_runs, cfg.max_render_seconds) == (3, 1.5)


@pytest.mark.parametrize(("text", "env", "message"), [
    ("max_runs: 0\n", {}, "agent.yaml: max_runs must be a positive integer"),
    ("max_children: many\n", {}, "agent.yaml: max_children must be a positive integer"),
    ("max_depth: 2.5\n", {}, "agent.yaml: max_depth must be a positive integer"),
    ("max_string: true\n", {}, "agent.yaml: max_string must be a positive integer"),
    ("max_render_seconds: -1\n", {}, "agent.yaml: max_render_seconds must be a positive number"),
    ("", {"LLMBDO_AGENT_MAX_RUNS_PER_CLIENT": "four"}, "LLMBDO_AGENT_MAX_RUNS_PER_CLIENT: 'four' is not a number"),
    ("", {"LLMBDO_AGENT_MAX_DEPTH": "-2"}, "LLMBDO_AGENT_MAX_DEPTH must be a positive integer"),
])
def test_bad_limits_are_refused_naming_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                                  env: dict[str, str], message: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert str(info.value) == message
