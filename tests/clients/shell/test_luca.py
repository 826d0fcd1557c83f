"""luca-shell against a real gateway and fs server: -c mode, stdin, the REPL through prompt_toolkit's pipe
input, completion, Ctrl-C and reconnection."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from llmbasedos.clients.shell.client import GatewayClient
from llmbasedos.clients.shell.completion import ShellCompleter
from llmbasedos.clients.shell.luca import Shell
from llmbasedos.clients.shell.render import Output
from tests.clients.shell.conftest import Appliance
from tests.gateway.harness import wait_until

LUCA = [sys.executable, "-m", "llmbasedos.clients.shell"]


def run_luca(app: Appliance, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("LLMBDO_TOKEN", None)
    return subprocess.run([*LUCA, "--url", app.ws_url, "--token", app.token, *args], input=stdin,
                          capture_output=True, text=True, timeout=60, env=env)


def make_shell(app: Appliance, *, session: PromptSession[str] | None = None,
               json_mode: bool = False) -> tuple[Shell, io.StringIO]:
    buf = io.StringIO()
    out = Output(Console(file=buf, width=120, force_terminal=False, color_system=None), json_mode=json_mode)
    return Shell(GatewayClient(app.ws_url, app.token), out, session=session), buf


def test_c_mode_runs_commands_and_reports_success(appliance: Appliance) -> None:
    res = run_luca(appliance, "-c", "write /new.txt hello from luca", "-c", "cat /new.txt", "-c", "ls /")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "hello from luca" in res.stdout
    assert "docs/" in res.stdout and "hello.py" in res.stdout
    assert (appliance.root / "new.txt").read_text() == "hello from luca\n"


def test_c_mode_exit_status_reflects_failure(appliance: Appliance) -> None:
    res = run_luca(appliance, "-c", "cat /missing.txt")
    assert res.returncode == 1
    assert "error -32010" in res.stdout and "/missing.txt" in res.stdout
    bad = run_luca(appliance, "-c", "frobnicate")
    assert bad.returncode == 1 and "unknown command 'frobnicate'" in bad.stdout


def test_json_output_is_machine_readable(appliance: Appliance) -> None:
    res = run_luca(appliance, "--json", "-c", "ls /docs", "-c", "mcp.fs.stat path=/hello.py")
    assert res.returncode == 0, res.stderr
    docs, stat = (json.loads(line) for line in res.stdout.splitlines())
    assert [e["name"] for e in docs] == ["notes.md"]
    assert stat["size"] == len("print('hello')\n")


def test_commands_from_stdin(appliance: Appliance) -> None:
    res = run_luca(appliance, stdin="mkdir /a/b\nwrite /a/b/c.txt x\nmv /a/b/c.txt /a/d.txt\nls /a\n")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (appliance.root / "a" / "d.txt").exists() and not (appliance.root / "a" / "b" / "c.txt").exists()


def test_wrong_token_is_a_clear_error(appliance: Appliance) -> None:
    res = subprocess.run([*LUCA, "--url", appliance.ws_url, "--token", "lbd_wrong", "-c", "ls /"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "refused the token (401)" in res.stdout


async def test_repl_through_pipe_input(appliance: Appliance) -> None:
    with create_pipe_input() as pipe:
        session: PromptSession[str] = PromptSession(input=pipe, output=DummyOutput())
        shell, buf = make_shell(appliance, session=session)
        for line in ("cd /docs", "pwd", "cat notes.md", "mcp.fs.read {\"path\": \"/hello.py\"}", "cd /nowhere",
                     "rm notes.md", "n", "rm -y /hello.py"):
            pipe.send_text(line + "\n")
        pipe.send_text("exit\n")
        code = await shell.repl()
    text = buf.getvalue()
    assert code == 0
    assert "/docs\n" in text and "buy milk" in text and "print('hello')" in text
    assert "error -32010" in text  # cd into a missing directory
    assert "not deleted" in text and (appliance.root / "docs" / "notes.md").exists()
    assert not (appliance.root / "hello.py").exists()
    assert shell.cwd == "/docs"


async def test_completion_of_commands_methods_and_paths(appliance: Appliance) -> None:
    shell, _ = make_shell(appliance)
    await shell.client.connect()
    await shell.refresh_methods()
    completer = ShellCompleter(shell)

    async def complete(text: str) -> list[str]:
        return [c.text async for c in completer.get_completions_async(Document(text), CompleteEvent())]

    assert "cat" in await complete("ca")
    assert "mcp.fs.read" in await complete("mcp.fs.re")
    assert await complete("cat /do") == ["/docs/"]
    assert await complete("cat /docs/n") == ["/docs/notes.md"]
    assert await complete("frobnicate /d") == []
    await shell.client.close()


async def test_ctrl_c_cancels_the_call_not_the_shell(appliance: Appliance) -> None:
    shell, buf = make_shell(appliance)
    await shell.client.connect()
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, os.kill, os.getpid(), signal.SIGINT)
    ok = await shell.run_cancellable("mcp.echo.sleep seconds=30")
    assert ok is False and "cancelled" in buf.getvalue()
    assert await shell.execute("pwd")  # the shell and its connection are still usable
    await shell.client.close()


async def test_offline_then_reconnect_after_gateway_restart(appliance: Appliance) -> None:
    shell, buf = make_shell(appliance)
    assert await shell.execute("ls /")
    port = appliance.gateway.port
    appliance.gateway.stop()
    await wait_until(lambda: not shell.client.online, what="the shell to notice")
    assert shell.prompt_message().startswith("[offline]")
    assert not await shell.execute("ls /")
    assert "[offline]" in buf.getvalue()
    appliance.gateway.env["LLMBDO_GATEWAY_PORT"] = str(port)
    appliance.gateway.start()
    keeper = asyncio.get_running_loop().create_task(shell._keep_connected())
    try:
        await wait_until(lambda: shell.client.online, timeout=30, what="the reconnect")
        assert not shell.prompt_message().startswith("[offline]")
        assert await shell.execute("cat /docs/notes.md")
    finally:
        keeper.cancel()
        await shell.client.close()


def test_history_goes_to_the_users_data_dir(tmp_path: Path) -> None:
    from llmbasedos.clients.shell.luca import history_path

    env_before = os.environ.get("LUCA_HISTORY")
    os.environ["LUCA_HISTORY"] = str(tmp_path / "h" / "hist")
    try:
        assert history_path() == tmp_path / "h" / "hist" and (tmp_path / "h").is_dir()
    finally:
        if env_before is None:
            del os.environ["LUCA_HISTORY"]
        else:
            os.environ["LUCA_HISTORY"] = env_before


def test_edit_opens_editor_on_a_copy_and_writes_back(appliance: Appliance) -> None:
    env = {**os.environ, "EDITOR": "sed -i s/milk/bread/"}
    res = subprocess.run([*LUCA, "--url", appliance.ws_url, "--token", appliance.token,
                          "-c", "edit /docs/notes.md", "-c", "edit /docs/notes.md"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "saved /docs/notes.md" in res.stdout and "unchanged" in res.stdout
    assert (appliance.root / "docs" / "notes.md").read_text() == "# Notes\nbuy bread\n"
    failing = subprocess.run([*LUCA, "--url", appliance.ws_url, "--token", appliance.token, "-c", "edit /x.txt"],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "EDITOR": "false"})
    assert failing.returncode == 1 and "nothing written" in failing.stdout
    assert not (appliance.root / "x.txt").exists()
