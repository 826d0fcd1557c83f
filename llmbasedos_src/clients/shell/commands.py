"""luca-shell's commands. Each is an async function of (shell, args) registered with its help text."""

from __future__ import annotations

import asyncio
import os
import posixpath
import shlex
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from llmbasedos.clients.shell.args import parse_value
from llmbasedos.protocol import errors

if TYPE_CHECKING:
    from llmbasedos.clients.shell.context import ShellContext

__all__ = ["COMMANDS", "Command", "UsageError"]

Handler = Callable[["ShellContext", list[str]], Awaitable[None]]


class UsageError(Exception):
    """The command was typed wrong; the message says how to type it."""


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    handler: Handler
    takes_path: bool = False


COMMANDS: dict[str, Command] = {}


def command(name: str, usage: str, summary: str, *, aliases: tuple[str, ...] = (), takes_path: bool = False
            ) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for n in (name, *aliases):
            COMMANDS[n] = Command(n, usage, summary, fn, takes_path)
        return fn

    return deco


def _flags(args: list[str], known: set[str]) -> tuple[set[str], list[str]]:
    flags: set[str] = set()
    rest: list[str] = []
    for a in args:
        if a.startswith("-") and len(a) > 1 and not rest:
            for f in ([a] if a.startswith("--") else [f"-{c}" for c in a[1:]]):
                if f not in known:
                    raise UsageError(f"unknown option {f}")
                flags.add(f)
        else:
            rest.append(a)
    return flags, rest


def _need(args: list[str], n: int, usage: str) -> None:
    if len(args) != n:
        raise UsageError(f"usage: {usage}")


# -- session ---------------------------------------------------------------------------------------------


@command("help", "help [command]", "Show the commands, or how to use one", aliases=("?",))
async def cmd_help(sh: ShellContext, args: list[str]) -> None:
    if args:
        cmd = COMMANDS.get(args[0])
        if cmd is None:
            raise UsageError(f"no command {args[0]!r}; type help for the list")
        sh.out.text(f"[bold]{cmd.usage}[/]\n  {cmd.summary}")
        return
    seen: set[str] = set()
    rows = []
    for cmd in COMMANDS.values():
        if cmd.handler in seen:
            continue
        seen.add(cmd.handler)  # type: ignore[arg-type]
        rows.append({"command": cmd.usage, "what it does": cmd.summary})
    sh.out.table(rows, ["command", "what it does"])
    sh.out.text("Any method can be called directly: [bold]mcp.fs.read path=/notes.txt[/] or "
                "[bold]mcp.fs.read {\"path\": \"/notes.txt\"}[/]. Ctrl-C cancels a running call; Ctrl-D quits.")


@command("connect", "connect [url]", "Connect (or reconnect) to the gateway")
async def cmd_connect(sh: ShellContext, args: list[str]) -> None:
    if args:
        await sh.client.close()
        sh.client.url = args[0]
    await sh.client.connect()
    await sh.refresh_methods()
    sh.out.text(f"connected to {sh.client.url}")


@command("status", "status", "Show the gateway, this client's methods and licence")
async def cmd_status(sh: ShellContext, args: list[str]) -> None:
    hello = await sh.client.call("mcp.hello")
    lic = await sh.client.call("mcp.licence.check")
    if sh.out.json_mode:
        sh.out.json({"hello": hello, "licence": lic})
        return
    methods = hello.get("methods", []) if isinstance(hello, dict) else hello
    sh.out.text(f"gateway [bold]{sh.client.url}[/]  tier [bold]{lic.get('tier')}[/]  "
                f"{len(methods)} methods available")


@command("licence", "licence", "Show the licence tier, its limits and what remains", aliases=("license",))
async def cmd_licence(sh: ShellContext, args: list[str]) -> None:
    sh.out.json(await sh.client.call("mcp.licence.check"))


# -- files -----------------------------------------------------------------------------------------------


@command("pwd", "pwd", "Print the current remote directory")
async def cmd_pwd(sh: ShellContext, args: list[str]) -> None:
    sh.out.text(sh.cwd) if not sh.out.json_mode else sh.out.json({"cwd": sh.cwd})


@command("cd", "cd [dir]", "Change the current remote directory", takes_path=True)
async def cmd_cd(sh: ShellContext, args: list[str]) -> None:
    target = sh.abspath(args[0] if args else "/")
    info = await sh.client.call("mcp.fs.stat", {"path": target})
    if info.get("type") != "directory":
        raise UsageError(f"not a directory: {target}")
    sh.cwd = target


@command("ls", "ls [-l] [path]", "List a remote directory", takes_path=True)
async def cmd_ls(sh: ShellContext, args: list[str]) -> None:
    flags, rest = _flags(args, {"-l"})
    target = sh.abspath(rest[0] if rest else ".")
    entries = await sh.client.call("mcp.fs.list", {"path": target})
    sh.out.listing(entries, long="-l" in flags)


@command("cat", "cat path", "Show a remote file, highlighted by its type", takes_path=True)
async def cmd_cat(sh: ShellContext, args: list[str]) -> None:
    _need(args, 1, "cat path")
    path = sh.abspath(args[0])
    res = await sh.client.call("mcp.fs.read", {"path": path, "encoding": "text"})
    sh.out.file(path, res.get("content", ""))


@command("write", "write path text...", "Write text to a remote file (atomically)", takes_path=True)
async def cmd_write(sh: ShellContext, args: list[str]) -> None:
    if len(args) < 2:
        raise UsageError("usage: write path text...")
    path = sh.abspath(args[0])
    res = await sh.client.call("mcp.fs.write", {"path": path, "content": " ".join(args[1:]) + "\n"})
    sh.out.text(f"wrote {res.get('bytes_written', '?')} bytes to {path}") if not sh.out.json_mode else sh.out.json(res)


@command("edit", "edit path", "Edit a remote file in $EDITOR; it is written back atomically", takes_path=True)
async def cmd_edit(sh: ShellContext, args: list[str]) -> None:
    _need(args, 1, "edit path")
    path = sh.abspath(args[0])
    try:
        original = (await sh.client.call("mcp.fs.read", {"path": path, "encoding": "text"}))["content"]
    except errors.NotFound:
        original = ""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    suffix = posixpath.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix="luca-", suffix=suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(original)
        code = await asyncio.to_thread(subprocess.call, [*shlex.split(editor), tmp])
        if code != 0:
            raise UsageError(f"editor exited with status {code}; nothing written")
        with open(tmp, encoding="utf-8") as fh:
            edited = fh.read()
    finally:
        os.unlink(tmp)
    if edited == original:
        sh.out.text("unchanged")
        return
    await sh.client.call("mcp.fs.write", {"path": path, "content": edited})
    sh.out.text(f"saved {path}")


@command("rm", "rm [-r] [-y] path", "Delete a remote file (or a directory with -r), after confirmation",
         takes_path=True)
async def cmd_rm(sh: ShellContext, args: list[str]) -> None:
    flags, rest = _flags(args, {"-r", "-y", "-f"})
    _need(rest, 1, "rm [-r] [-y] path")
    path = sh.abspath(rest[0])
    what = f"{path} and everything in it" if "-r" in flags else path
    if not ({"-y", "-f"} & flags) and not await sh.confirm(f"delete {what}?"):
        sh.out.text("not deleted")
        return
    await sh.client.call("mcp.fs.delete", {"path": path, "recursive": "-r" in flags})
    sh.out.text(f"deleted {path}")


@command("mkdir", "mkdir path", "Make a remote directory (and its parents)", takes_path=True)
async def cmd_mkdir(sh: ShellContext, args: list[str]) -> None:
    _need(args, 1, "mkdir path")
    await sh.client.call("mcp.fs.mkdir", {"path": sh.abspath(args[0]), "parents": True})


@command("mv", "mv src dst", "Move or rename a remote file or directory", takes_path=True)
async def cmd_mv(sh: ShellContext, args: list[str]) -> None:
    _need(args, 2, "mv src dst")
    await sh.client.call("mcp.fs.move", {"source": sh.abspath(args[0]), "destination": sh.abspath(args[1])})


@command("cp", "cp src dst", "Copy a remote file or directory", takes_path=True)
async def cmd_cp(sh: ShellContext, args: list[str]) -> None:
    _need(args, 2, "cp src dst")
    await sh.client.call("mcp.fs.copy", {"source": sh.abspath(args[0]), "destination": sh.abspath(args[1])})


@command("search", 'search "query" [top_k]', "Semantic search over the indexed files", aliases=("find",))
async def cmd_search(sh: ShellContext, args: list[str]) -> None:
    if not args:
        raise UsageError('usage: search "query" [top_k]')
    params: dict[str, Any] = {"query": args[0], "scope": sh.cwd}
    if len(args) > 1:
        params["top_k"] = int(args[1])
    res = await sh.client.call("mcp.fs.search", params)
    rows = res.get("results", res) if isinstance(res, dict) else res
    for r in rows:
        r["lines"] = f"{r.get('start_line')}-{r.get('end_line')}"
        r["score"] = round(float(r.get("score", 0)), 3)
        r["preview"] = str(r.get("preview", "")).replace("\n", " ")[:80]
    sh.out.table(rows, ["score", "path", "lines", "preview"])


@command("index", "index [path]", "Index files for semantic search, with a progress bar", takes_path=True)
async def cmd_index(sh: ShellContext, args: list[str]) -> None:
    target = sh.abspath(args[0] if args else ".")
    with Progress(TextColumn("indexing"), BarColumn(), TaskProgressColumn(), TextColumn("{task.description}"),
                  console=sh.out.console, transient=False, disable=sh.out.json_mode) as progress:
        task = progress.add_task("", total=None)

        def on_note(method: str, params: Any) -> None:
            if method == "mcp.progress" and isinstance(params, dict):
                progress.update(task, completed=params.get("progress"), total=params.get("total"),
                                description=str(params.get("message", ""))[:40])

        res = await sh.client.call("mcp.fs.embed", {"path": target, "recursive": True}, on_notification=on_note)
    sh.out.json(res)


# -- other services --------------------------------------------------------------------------------------


def _kv(args: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in args:
        key, sep, value = a.partition("=")
        if not sep:
            raise UsageError(f"expected key=value, got {a!r}")
        out[key] = parse_value(value)
    return out


@command("sync", "sync remotes|jobs|run SRC DST [mode=copy dry_run=true]|status ID|stop ID", "rclone sync jobs")
async def cmd_sync(sh: ShellContext, args: list[str]) -> None:
    if not args:
        raise UsageError("usage: sync remotes|jobs|run SRC DST [key=value...]|status ID|stop ID")
    sub, rest = args[0], args[1:]
    if sub == "remotes":
        sh.out.table(await sh.client.call("mcp.sync.listRemotes"), ["name", "type"])
    elif sub == "jobs":
        sh.out.table(await sh.client.call("mcp.sync.listJobs"), ["job_id", "state", "mode", "source", "destination"])
    elif sub == "run" and len(rest) >= 2:
        params = {"source": rest[0], "destination": rest[1], **_kv(rest[2:])}
        sh.out.json(await sh.client.call("mcp.sync.runJob", params))
    elif sub in ("status", "stop") and len(rest) == 1:
        method = "mcp.sync.getJobStatus" if sub == "status" else "mcp.sync.stopJob"
        sh.out.json(await sh.client.call(method, {"job_id": rest[0]}))
    else:
        raise UsageError("usage: sync remotes|jobs|run SRC DST [key=value...]|status ID|stop ID")


@command("mail", "mail accounts|folders ACCOUNT|ls ACCOUNT [FOLDER]|show ACCOUNT UID [FOLDER]", "Read mail")
async def cmd_mail(sh: ShellContext, args: list[str]) -> None:
    sub, rest = (args[0], args[1:]) if args else ("", [])
    params: dict[str, Any]
    if sub == "accounts":
        sh.out.table(await sh.client.call("mcp.mail.listAccounts"), ["id", "user", "host"])
    elif sub == "folders" and len(rest) == 1:
        sh.out.json(await sh.client.call("mcp.mail.listFolders", {"account": rest[0]}))
    elif sub == "ls" and rest:
        params = {"account": rest[0], "folder": rest[1] if len(rest) > 1 else "INBOX"}
        res = await sh.client.call("mcp.mail.listMessages", params)
        rows = res.get("messages", res) if isinstance(res, dict) else res
        sh.out.table(rows, ["uid", "date", "from", "subject"])
    elif sub == "show" and len(rest) >= 2:
        params = {"account": rest[0], "uid": int(rest[1]), "folder": rest[2] if len(rest) > 2 else "INBOX"}
        sh.out.json(await sh.client.call("mcp.mail.getMessage", params))
    else:
        raise UsageError("usage: mail accounts|folders ACCOUNT|ls ACCOUNT [FOLDER]|show ACCOUNT UID [FOLDER]")


@command("workflows", "workflows", "List the agent workflows")
async def cmd_workflows(sh: ShellContext, args: list[str]) -> None:
    res = await sh.client.call("mcp.agent.listWorkflows")
    sh.out.table(res.get("workflows", res) if isinstance(res, dict) else res, ["id", "name", "description"])


_FINAL = {"succeeded", "failed", "stopped", "interrupted", "cancelled", "completed"}


@command("run", "run WORKFLOW [key=value...]", "Run a workflow and follow its status live")
async def cmd_run(sh: ShellContext, args: list[str]) -> None:
    if not args:
        raise UsageError("usage: run WORKFLOW [key=value...]")
    started = await sh.client.call("mcp.agent.runWorkflow", {"workflow_id": args[0], "inputs": _kv(args[1:])})
    exec_id = started["execution_id"]
    last_step = None
    try:
        while True:
            status = await sh.client.call("mcp.agent.getWorkflowStatus", {"execution_id": exec_id})
            if status.get("current_step") != last_step and status.get("current_step"):
                last_step = status["current_step"]
                sh.out.text(f"[dim]step[/] {last_step}")
            if status.get("state") in _FINAL:
                break
            await asyncio.sleep(0.3)
    except asyncio.CancelledError:
        await sh.client.call("mcp.agent.stopWorkflow", {"execution_id": exec_id})
        raise
    sh.out.json(status)
    if status.get("state") not in ("succeeded", "completed"):
        raise errors.RPCError(f"workflow {status.get('state')}: {status.get('error', '')}")


async def _chat(sh: ShellContext, messages: list[dict[str, str]], max_tokens: int | None = None) -> str:
    parts: list[str] = []

    def on_chunk(method: str, params: Any) -> None:
        if method == "mcp.llm.chunk" and isinstance(params, dict):
            delta = str(params.get("delta", ""))
            parts.append(delta)
            sh.out.stream(delta)

    params: dict[str, Any] = {"messages": messages, "stream": True}
    if max_tokens is not None:
        params["options"] = {"max_tokens": max_tokens}
    res = await sh.client.call("mcp.llm.chat", params, on_notification=on_chunk)
    content = str(res.get("message", {}).get("content", "".join(parts)))
    if sh.out.json_mode:
        sh.out.json(res)
    elif not parts:
        sh.out.stream(content)
    sh.out.stream("\n")
    return content


def _max_tokens(args: list[str]) -> tuple[int | None, list[str]]:
    if len(args) >= 2 and args[0] in ("-n", "--max-tokens"):
        try:
            return int(args[1]), args[2:]
        except ValueError:
            raise UsageError(f"{args[0]} takes a number of tokens") from None
    return None, args


@command("llm", 'llm [-n MAX_TOKENS] "prompt"', "Ask the default model; the answer streams as it is written")
async def cmd_llm(sh: ShellContext, args: list[str]) -> None:
    max_tokens, rest = _max_tokens(args)
    if not rest:
        raise UsageError('usage: llm [-n MAX_TOKENS] "prompt"')
    await _chat(sh, [{"role": "user", "content": " ".join(rest)}], max_tokens)


@command("chat", "chat [-n MAX_TOKENS]", "A conversation with the default model (empty line or /exit to leave)")
async def cmd_chat(sh: ShellContext, args: list[str]) -> None:
    max_tokens, _ = _max_tokens(args)
    history: list[dict[str, str]] = []
    sh.out.text("[dim]chat mode: an empty line or /exit leaves[/]")
    while True:
        line = await sh.read_line("chat> ")
        if line is None or not line.strip() or line.strip() == "/exit":
            return
        history.append({"role": "user", "content": line})
        answer = await _chat(sh, history, max_tokens)
        history.append({"role": "assistant", "content": answer})
