"""luca-shell: the interactive MCP client for people.

    luca-shell                       interactive, with completion, history and live output
    luca-shell -c "ls /" -c "cat /a" run commands and exit; the exit status says whether all succeeded
    echo "ls /" | luca-shell          commands from stdin
    luca-shell --json -c "ls /"       machine output: one JSON document per result
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import posixpath
import signal
import sys
from pathlib import Path

from platformdirs import user_data_dir
from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory
from rich.console import Console

from llmbasedos.clients.shell.args import is_raw_method, parse_raw_params, split_line
from llmbasedos.clients.shell.client import GatewayClient, Offline
from llmbasedos.clients.shell.commands import COMMANDS, UsageError
from llmbasedos.clients.shell.completion import ShellCompleter
from llmbasedos.clients.shell.render import Output
from llmbasedos.protocol.errors import RPCError
from llmbasedos.settings import default_state_dir

__all__ = ["Shell", "main", "default_url", "default_token"]


def default_url(state_dir: Path) -> str:
    """The gateway URL `llmbasedos up` recorded for this state dir, else the standard port."""
    if os.environ.get("LLMBDO_URL"):
        return os.environ["LLMBDO_URL"]
    # The gateway writes where it listens into the run dir (it may have picked a free port).
    with contextlib.suppress(OSError, ValueError, AttributeError):
        url = json.loads((state_dir / "run" / "gateway.json").read_text(encoding="utf-8")).get("url")
        if isinstance(url, str) and url.startswith("http"):
            return "ws" + url[4:].rstrip("/") + "/ws"
    return "ws://127.0.0.1:8000/ws"


def default_token(state_dir: Path) -> str | None:
    if os.environ.get("LLMBDO_TOKEN"):
        return os.environ["LLMBDO_TOKEN"]
    with contextlib.suppress(OSError):
        return (state_dir / "data" / "owner.token").read_text(encoding="utf-8").strip() or None
    return None


class Shell:
    def __init__(self, client: GatewayClient, out: Output, *, session: PromptSession[str] | None = None) -> None:
        self.client = client
        self.out = out
        self.session = session
        self.cwd = "/"
        self.methods: list[str] = []
        self._stdin_lines: list[str] | None = None

    # -- helpers used by commands ------------------------------------------------------------------------

    def abspath(self, path: str) -> str:
        joined = posixpath.normpath(posixpath.join(self.cwd, path))
        return "/" + joined.lstrip("/")

    async def read_line(self, prompt: str) -> str | None:
        if self.session is None:
            return None
        try:
            return await self.session.prompt_async(prompt)
        except (EOFError, KeyboardInterrupt):
            return None

    async def confirm(self, question: str) -> bool:
        answer = await self.read_line(f"{question} [y/N] ")
        return (answer or "").strip().lower() in {"y", "yes"}

    async def refresh_methods(self) -> None:
        hello = await self.client.call("mcp.hello")
        methods = hello.get("methods", []) if isinstance(hello, dict) else hello
        self.methods = sorted(m if isinstance(m, str) else m.get("method", "") for m in methods)

    # -- running lines -----------------------------------------------------------------------------------

    async def execute(self, line: str) -> bool:
        """Run one line; True when it succeeded. Errors are shown, never raised."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        try:
            word, _, rest = line.partition(" ")
            if word in COMMANDS:
                await COMMANDS[word].handler(self, split_line(rest))
            elif is_raw_method(word):
                self.out.json(await self.client.call(word, parse_raw_params(rest)))
            else:
                raise UsageError(f"unknown command {word!r}; type help for the list")
            return True
        except Offline as exc:
            self.out.error(Offline(f"[offline] {exc.message}"))
        except (RPCError, UsageError) as exc:
            self.out.error(exc)
        except ValueError as exc:
            self.out.error(UsageError(str(exc)))
        return False

    async def run_cancellable(self, line: str) -> bool:
        """Run a line so that Ctrl-C cancels the call, not the shell."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(self.execute(line))
        installed = False
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, task.cancel)
            installed = True
        try:
            return await task
        except asyncio.CancelledError:
            self.out.text("\n[yellow]cancelled[/]")
            return False
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGINT)

    def prompt_message(self) -> str:
        state = "" if self.client.online else "[offline] "
        return f"{state}luca:{self.cwd}> "

    async def _keep_connected(self) -> None:
        delay = 0.5
        while True:
            if not self.client.online:
                try:
                    await self.client.connect()
                    await self.refresh_methods()
                    delay = 0.5
                except (Offline, RPCError):
                    delay = min(delay * 2, 5.0)
            await asyncio.sleep(delay if not self.client.online else 1.0)

    async def repl(self) -> int:
        assert self.session is not None
        with contextlib.suppress(Offline, RPCError):
            await self.client.connect()
            await self.refresh_methods()
        if not self.client.online:
            self.out.text(f"[yellow][offline][/] {self.client.last_error}; retrying in the background")
        keeper = asyncio.get_running_loop().create_task(self._keep_connected())
        self.out.text("luca-shell — type [bold]help[/] for commands, Ctrl-D to quit")
        try:
            while True:
                try:
                    line = await self.session.prompt_async(self.prompt_message)
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    return 0
                if line.strip() in {"exit", "quit"}:
                    return 0
                await self.run_cancellable(line)
        finally:
            keeper.cancel()
            await self.client.close()

    async def run_lines(self, lines: list[str]) -> int:
        ok = True
        for line in lines:
            ok = await self.execute(line) and ok
        await self.client.close()
        return 0 if ok else 1


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="luca-shell", description="The interactive client of llmbasedos.")
    p.add_argument("--url", help="gateway WebSocket URL (default: what `llmbasedos up` recorded, or port 8000)")
    p.add_argument("--token", help="client token (default: $LLMBDO_TOKEN, else the owner token of the state dir)")
    p.add_argument("--state-dir", type=Path, help="state dir of the appliance (default: $LLMBDO_STATE_DIR)")
    p.add_argument("-c", dest="commands", action="append", help="run this command and exit (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p.parse_args(argv)


def history_path() -> Path:
    env = os.environ.get("LUCA_HISTORY")
    path = Path(env) if env else Path(user_data_dir("llmbasedos", appauthor=False)) / "luca-shell.history"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


async def _amain(ns: argparse.Namespace) -> int:
    state_dir = ns.state_dir or default_state_dir()
    client = GatewayClient(ns.url or default_url(state_dir), ns.token or default_token(state_dir))
    out = Output(Console(), json_mode=ns.json)
    if ns.commands:
        return await Shell(client, out).run_lines(ns.commands)
    if not sys.stdin.isatty():
        return await Shell(client, out).run_lines(sys.stdin.read().splitlines())
    session: PromptSession[str] = PromptSession(history=FileHistory(str(history_path())), refresh_interval=1.0)
    shell = Shell(client, out, session=session)
    session.completer = ShellCompleter(shell)
    session.complete_in_thread = False
    return await shell.repl()


def main(argv: list[str] | None = None) -> None:
    ns = _parse_args(argv)
    try:
        code = asyncio.run(_amain(ns))
    except KeyboardInterrupt:
        code = 130
    raise SystemExit(code)

