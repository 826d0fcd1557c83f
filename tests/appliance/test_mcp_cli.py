"""`llmbasedos mcp ...` run as the installed console script: add, list, remove, test and import, with hostile input,
and `list` against the real upstream program."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import start_server
from tests.support.third_party import odd_server

SECRET = "ghp_cliSecret_5d0c7e"
HEADER_SECRET = "hdr-secret-77aa"


def console_script() -> str:
    found = shutil.which("llmbasedos", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("the llmbasedos console script is not installed")
    return found


def run(state: Path, *args: str, code: int | None = 0, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLMBDO_")}
    # --state-dir right after the subcommand: after `add NAME` everything after `--` is the server's command
    proc = subprocess.run([console_script(), "mcp", args[0], "--state-dir", str(state), *args[1:]],
                          capture_output=True, text=True, env={**clean, **(env or {})}, timeout=90, cwd=cwd)
    if code is not None:
        assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


@pytest.fixture
def state() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lbmcp", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def listing(state: Path) -> dict[str, Any]:
    return {row["name"]: row for row in json.loads(run(state, "list", "--json").stdout)["servers"]}


def printed_entry(out: str) -> Any:
    """The host entry `import` prints: the JSON block from a line "{" to a line "}"."""
    lines = out.splitlines()
    start = lines.index("{")
    return json.loads("\n".join(lines[start:lines.index("}", start) + 1]))


def everything_written(state: Path) -> str:
    return "".join(p.read_text() for p in (state / "config").glob("*.yaml"))


def test_add_list_remove(state: Path) -> None:
    out = run(state, "add", "github", "--env", f"GITHUB_TOKEN={SECRET}", "--env", "HOME_DIR=${env:HOME}", "--",
              "docker", "run", "-i", "--rm", "github-mcp-server")
    assert "Registered github" in out.stdout and "GITHUB_TOKEN in secrets/github.GITHUB_TOKEN" in out.stdout
    assert SECRET not in out.stdout + out.stderr
    run(state, "add", "web", "--url", "https://example.org/mcp", "--header", f"Authorization: Bearer {HEADER_SECRET}")
    secret_file = state / "config" / "secrets" / "github.GITHUB_TOKEN"
    assert secret_file.read_text() == SECRET and stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    registry = state / "config" / "mcp_servers.yaml"
    assert stat.S_IMODE(registry.stat().st_mode) == 0o600
    assert SECRET not in everything_written(state) and HEADER_SECRET not in everything_written(state)
    assert "HOME_DIR: {env: HOME}" in registry.read_text()

    text = run(state, "list").stdout
    assert "github" in text and "not running" in text and "docker run -i --rm" in text
    assert "https://example.org/mcp" in text
    raw = run(state, "list", "--json").stdout
    assert SECRET not in text + raw and HEADER_SECRET not in text + raw
    rows = listing(state)
    assert rows["github"]["state"] == "not running" and rows["github"]["tools"] is None
    assert rows["web"]["entry"]["headers"] == {"Authorization": "{file: " + str(state / "config" / "secrets" /
                                                                               "web.Authorization") + "}"}

    again = run(state, "add", "github", "--", "other", code=2)
    assert "github is registered already" in again.stderr and "--replace" in again.stderr
    run(state, "add", "github", "--replace", "--", "docker", "run", "v2")
    assert not secret_file.exists()  # the new entry has no GITHUB_TOKEN: its file went
    assert listing(state)["github"]["entry"]["args"] == ["run", "v2"]

    removed = run(state, "remove", "web")
    assert "web.Authorization" in removed.stdout and not (state / "config" / "secrets" / "web.Authorization").exists()
    assert set(listing(state)) == {"github"}
    assert "no server 'web'" in run(state, "remove", "web", code=2).stderr


@pytest.mark.parametrize(("args", "message"), [
    (["../x", "--", "ls"], "a name is 1 to 32 of a-z"),
    (["fs", "--", "ls"], "'fs' is the name of one of the appliance's own services"),
    (["Big", "--", "ls"], "a name is 1 to 32"),
    (["web", "--url", "https://example.org/mcp", "--header", f"Authorization Bearer {SECRET}"],
     "--header #1 has no ':'"),
    (["web", "--url", "https://example.org/mcp", "--header", f": {SECRET}"], "--header #1 has no valid name"),
    (["mem", "--env", SECRET, "--", "node"], "--env #1 has no '='"),
    (["mem", "--env", "A=1", "--env", "A=2", "--", "node"], "--env A is given twice"),
    (["web", "--url", "https://example.org/mcp", "--", "node"], "not both"),
    (["web", "--url", "https://example.org/mcp", "--env", "A=1"], "an HTTP server takes --header"),
    (["mem", "--header", "A: 1", "--", "node"], "a stdio server takes --env"),
    (["web", "--url", "ftp://example.org/"], "servers.web.url: must be an http"),
    (["mem", "--verbose", "node"], "unknown option '--verbose' (the server's own options go after --"),
    (["mem"], "give the server's command after --"),
    (["mem", "--cwd", "/nonexistent/dir", "--", "node"], "--cwd /nonexistent/dir is not a directory"),
])
def test_bad_input_is_refused_with_its_reason(state: Path, args: list[str], message: str) -> None:
    proc = run(state, "add", *args, code=2)
    assert message in proc.stderr and SECRET not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert not (state / "config" / "mcp_servers.yaml").exists() and not (state / "config" / "secrets").exists()


def test_a_refused_entry_is_listed_with_its_reason(state: Path) -> None:
    (state / "config").mkdir(parents=True)
    (state / "config" / "mcp_servers.yaml").write_text(
        "servers:\n  good: {command: node, enabled: false}\n  bad: {command: node, url: 'http://x/mcp'}\n")
    rows = listing(state)
    assert rows["good"]["state"] == "disabled" and rows["bad"]["state"] == "refused"
    assert "either 'command'" in rows["bad"]["refused"]
    assert "refused: mcp_servers.yaml: servers.bad" in run(state, "list").stdout
    (state / "config" / "mcp_servers.yaml").write_text("servers: [1]\n")
    assert "servers: must be a mapping" in run(state, "list", code=2).stderr


CLAUDE = {"mcpServers": {
    "memory": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"],
               "env": {"MEMORY_FILE_PATH": "/home/ann/memory.jsonl"}},
    "GitHub": {"command": "docker", "args": ["run", "-i", "github-mcp-server"],
               "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": SECRET}},
    "old": {"url": "http://127.0.0.1:3001/sse"},
}}

VSCODE = """{
  // a workspace's servers
  "inputs": [{"type": "promptString", "id": "gh", "description": "GitHub token", "password": true}],
  "servers": {
    "github": {"type": "http", "url": "https://api.githubcopilot.com/mcp/",
               "headers": {"Authorization": "Bearer ${input:gh}"}},
    "time": {"type": "stdio", "command": "uvx", "args": ["mcp-server-time"], "envFile": "${workspaceFolder}/.env"},
  }
}"""


def test_import_claude_desktop(state: Path) -> None:
    host = state / "host" / "claude_desktop_config.json"
    host.parent.mkdir()
    host.write_text(json.dumps(CLAUDE, indent=2))
    before = host.read_bytes()
    out = run(state, "import", str(host), code=1)  # one server could not be taken: exit 1
    assert "Claude Desktop configuration" in out.stdout
    assert "registered  memory" in out.stdout and "registered  github" in out.stdout
    assert "'GitHub' is registered as github" in out.stdout
    assert "not taken   old:" in out.stdout and "SSE" in out.stdout
    assert SECRET not in out.stdout + out.stderr + everything_written(state)
    assert (state / "config" / "secrets" / "github.GITHUB_PERSONAL_ACCESS_TOKEN").read_text() == SECRET
    assert host.read_bytes() == before and "was not changed" in out.stdout
    entry = printed_entry(out.stdout)
    bridge = entry["mcpServers"]["llmbasedos"]
    assert Path(bridge["command"]).is_absolute() and Path(bridge["command"]).name == "llmbasedos"
    assert bridge["args"] == ["mcp-stdio", "--state-dir", str(state.resolve())]

    again = run(state, "import", str(host), code=1)  # nothing lost, nothing doubled
    assert "memory is registered already (--replace replaces it)" in again.stdout
    run(state, "import", str(host), "--replace", code=1)
    assert set(listing(state)) == {"memory", "github"}

    # The host file with its servers replaced by the printed entry imports to nothing: llmbasedos is skipped.
    host.write_text(json.dumps(entry))
    assert "skipped     llmbasedos: this is llmbasedos itself" in run(state, "import", str(host)).stdout


def test_import_vscode_and_cursor(state: Path) -> None:
    workspace = state / "proj"
    (workspace / ".vscode").mkdir(parents=True)
    (workspace / ".env").write_text(f"TZ=Europe/Paris\nTIME_KEY={SECRET}\n")
    (workspace / ".vscode" / "mcp.json").write_text(VSCODE)
    out = run(state, "import", str(workspace / ".vscode" / "mcp.json")).stdout
    assert "VS Code configuration" in out and "registered  time" in out
    assert "disabled    github" in out and "${input:gh} (GitHub token)" in out and "enabled: true" in out
    rows = listing(state)
    assert rows["github"]["state"] == "disabled" and rows["time"]["enabled"]
    assert (state / "config" / "secrets" / "time.TIME_KEY").read_text() == SECRET
    assert SECRET not in everything_written(state)
    entry = printed_entry(out)
    assert entry["servers"]["llmbasedos"]["type"] == "stdio"

    cursor = state / "home" / ".cursor" / "mcp.json"
    cursor.parent.mkdir(parents=True)
    cursor.write_text(json.dumps({"mcpServers": {
        "remote": {"url": "https://mcp.example.org/mcp", "headers": {"X-Api-Key": HEADER_SECRET}},
        "tokened": {"url": "https://mcp.example.org/v2/mcp", "headers": {"Authorization": "${env:REMOTE_TOKEN}"}},
        "self": {"url": "http://localhost:8000/mcp"}}}))
    out = run(state, "import", str(cursor)).stdout
    assert "Cursor configuration" in out and "skipped     self" in out
    assert "tokened (http; secrets: Authorization from $REMOTE_TOKEN)" in out
    assert HEADER_SECRET not in out + everything_written(state)
    assert printed_entry(out)["mcpServers"]["llmbasedos"]["args"][0] == "mcp-stdio"


def test_import_refuses_what_is_not_a_host_file(state: Path) -> None:
    bad = state / "x.json"
    bad.write_text("{not json")
    assert "not valid JSON" in run(state, "import", str(bad), code=2).stderr
    bad.write_text('{"other": {}}')
    assert "neither \"mcpServers\"" in run(state, "import", str(bad), code=2).stderr
    assert "cannot read" in run(state, "import", str(state / "missing.json"), code=2).stderr


def test_mcp_test_against_a_real_server(state: Path) -> None:
    odd = odd_server("normal", extra_tools=["get.time"])
    run(state, "add", "odd", "--", odd.command, *odd.args)
    out = run(state, "test", "odd").stdout
    assert "odd: connected to odd" in out and "11 tools" in out
    assert "  odd_echo  Return the text unchanged." in out
    assert "(get.time)" in out  # an odd upstream name is shown with the /mcp name it is served under
    broken = odd_server("exit")
    run(state, "add", "broken", "--", broken.command, *broken.args)
    failed = run(state, "test", "broken", code=1)
    assert "mcp test broken:" in failed.stderr and "Traceback" not in failed.stderr
    assert "exiting at once" in failed.stderr  # what the server said on stderr
    assert "no server 'nope'" in run(state, "test", "nope", code=2).stderr
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run(state, "add", "web", "--url", f"http://127.0.0.1:{port}/mcp", "--header", f"Authorization: Bearer {SECRET}")
    failed = run(state, "test", "web", code=1)
    assert "mcp test web: " in failed.stderr and SECRET not in failed.stderr and "Traceback" not in failed.stderr


def test_list_shows_the_running_program(state: Path) -> None:
    odd = odd_server("normal", extra_tools=["get.time"])
    run(state, "add", "odd", "--", odd.command, *odd.args)
    handle = start_server("upstream", {"LLMBDO_CONFIG_DIR": str(state / "config"), "LLMBDO_RUN_DIR": str(state / "run"),
                                       "LLMBDO_LOG_DIR": str(state / "logs")})
    try:
        row = wait_for_state(state, "odd", "ready")
        assert row["tools"] == 11 and row["tool_names"]["echo"] == "odd_echo"
        assert row["tool_names"]["get.time"].startswith("odd_get_time_")
        text = run(state, "list").stdout
        assert "ready" in text and "odd_echo" in text and "(get.time)" in text
        run(state, "add", "later", "--", odd.command, *odd.args)
        assert listing(state)["later"]["state"] in ("pending", "starting", "ready")
        wait_for_state(state, "later", "ready")
        run(state, "remove", "later")
        assert "later" not in listing(state)
    finally:
        handle.stop()
    assert listing(state)["odd"]["state"] == "not running"


def wait_for_state(state: Path, name: str, wanted: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = listing(state).get(name, {})
        if row.get("state") == wanted:
            return row
        assert time.monotonic() < deadline, f"{name} never reached {wanted}: {row}"
        time.sleep(0.2)
