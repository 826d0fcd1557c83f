"""Licence tiers: built-in defaults, merging with licence_tiers.yaml, and errors that point at the fault."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from llmbasedos.gateway.policy.tiers import DEFAULT_TIERS, TiersError, load_tiers, match_any, valid_pattern

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def tmp() -> Path:
    return Path(tempfile.mkdtemp(dir="/tmp"))


def write(tmp: Path, text: str) -> Path:
    path = tmp / "licence_tiers.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp: Path) -> None:
    table = load_tiers(tmp / "absent.yaml")
    free, pro, elite = table.get("FREE"), table.get("pro"), table.get("Elite")
    assert free.allows("mcp.fs.read") and free.allows("mcp.hello") and free.allows("mcp.licence.check")
    assert free.allows("mcp.fs.write") and free.allows("mcp.mail.list") and free.allows("mcp.agent.run")
    assert not free.allows("mcp.mail.send") and not free.allows("mcp.unknown.thing")
    assert free.allows_model("local") and not free.allows_model("gpt-4o")
    assert pro.allows("mcp.mail.send") and pro.allows_model("gpt-4o") and pro.allows("mcp.agent.run")
    assert elite.allows("mcp.agent.run") and elite.rate_limit_requests is None
    assert "free" in table and "GOLD" not in table


def test_the_shipped_file_is_exactly_the_defaults() -> None:
    table = load_tiers(REPO / "licence_tiers.yaml")
    assert dict(table.raw) == DEFAULT_TIERS


def test_a_tier_in_the_file_is_merged_field_by_field(tmp: Path) -> None:
    table = load_tiers(write(tmp, "PRO:\n  rate_limit_requests: 10\n  rate_limit_window_seconds: 2.5\n"))
    pro = table.get("PRO")
    assert (pro.rate_limit_requests, pro.rate_limit_window_seconds) == (10, 2.5)
    assert pro.allowed_capabilities == ("*",) and pro.max_tokens_per_request == 8192  # kept from the built-in PRO
    assert table.get("FREE").rate_limit_requests == DEFAULT_TIERS["FREE"]["rate_limit_requests"]


def test_a_new_tier_starts_from_free(tmp: Path) -> None:
    table = load_tiers(write(tmp, "team:\n  allowed_capabilities: ['mcp.fs.*']\n"))
    team = table.get("TEAM")
    assert team.allows("mcp.fs.write") and not team.allows("mcp.mail.list")
    assert team.max_tokens_per_day == DEFAULT_TIERS["FREE"]["max_tokens_per_day"]


def test_empty_file_means_defaults(tmp: Path) -> None:
    assert dict(load_tiers(write(tmp, "# nothing\n")).raw) == DEFAULT_TIERS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FREE:\n  llm_access: true\nPRO:\n  rate_limit_requests: many\n",
         ["line 4", "tier PRO", "field rate_limit_requests", "'many'"]),
        ("ELITE:\n  rate_limit_requests: 0\n", ["line 2", "tier ELITE", "field rate_limit_requests", "minimum"]),
        ("PRO:\n  llm_access: true\n  max_tokenz: 5\n", ["line 3", "tier PRO", "unknown field 'max_tokenz'"]),
        ("FREE:\n  allowed_capabilities:\n    - mcp.fs.read\n    - 'mcp fs write'\n",
         ["line 4", "tier FREE", "field allowed_capabilities", "mcp fs write"]),
        ("FREE:\n  rate_limit_window_seconds: -1\n", ["line 2", "field rate_limit_window_seconds"]),
        ("PRO:\n  requests_per_day: [1]\n", ["line 2", "tier PRO", "field requests_per_day"]),
        ("'bad tier':\n  llm_access: true\n", ["line 1", "invalid tier name 'bad tier'"]),
        ("PRO:\n  llm_access: true\npro:\n  llm_access: false\n", ["line 3", "defined twice"]),
        ("PRO: [1, 2]\n", ["line 1", "tier PRO", "not of type 'object'"]),
        ("- PRO\n", ["not of type 'object'"]),
        ("PRO:\n  llm_access: [\n", ["line 3"]),
    ],
)
def test_errors_name_file_line_tier_and_field(tmp: Path, text: str, expected: list[str]) -> None:
    path = write(tmp, text)
    with pytest.raises(TiersError) as info:
        load_tiers(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for part in expected:
        assert part in message, message


def test_unreadable_file(tmp: Path) -> None:
    path = tmp / "licence_tiers.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(TiersError, match="cannot read"):
        load_tiers(path)


def test_patterns() -> None:
    assert match_any(["mcp.fs.*"], "mcp.fs.read") and not match_any(["mcp.fs.*"], "mcp.fsx.read")
    assert match_any(["*"], "anything") and match_any(["mcp.hello"], "mcp.hello")
    assert not match_any(["mcp.hello"], "mcp.hello2") and not match_any([], "mcp.hello")
    assert valid_pattern("mcp.fs.*") and valid_pattern("*") and valid_pattern("mcp.listCapabilities")
    assert not valid_pattern("mcp.*.read") and not valid_pattern("") and not valid_pattern("mcp fs")


def test_upstream_servers_answer_to_mcp_upstream_patterns(tmp: Path) -> None:
    table = load_tiers(write(tmp, "TEAM:\n  allowed_capabilities: [mcp.upstream.*]\n"
                                  "  denied_capabilities: [mcp.upstream.github.delete_repo]\n"))
    free, team = table.get("FREE"), table.get("TEAM")
    # A person's own MCP servers are part of the FREE appliance, whatever their names.
    assert free.allows("mcp.memory.read_graph", upstream=True)
    assert team.allows("mcp.github.list_issues", upstream=True)
    assert not team.allows("mcp.github.delete_repo", upstream=True)
    # The other name exists only for upstream methods: no native method is reached through it.
    assert not team.allows("mcp.fs.read", upstream=False)
    assert not free.allows("mcp.memory.read_graph", upstream=False)
    assert team.allows("mcp.upstream.servers")  # the upstream program's own method, by its own name
