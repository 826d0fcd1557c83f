"""Completion of commands, methods (from mcp.hello) and remote paths (from mcp.fs.list)."""

from __future__ import annotations

import posixpath
import time
from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING, Any

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from llmbasedos.clients.shell.commands import COMMANDS
from llmbasedos.protocol.errors import RPCError

if TYPE_CHECKING:
    from llmbasedos.clients.shell.context import ShellContext

__all__ = ["ShellCompleter"]

_CACHE_TTL = 3.0


class ShellCompleter(Completer):
    def __init__(self, shell: ShellContext) -> None:
        self.shell = shell
        self._dir_cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        # Synchronous path: words only (paths need the network, see get_completions_async).
        words = document.text_before_cursor.split()
        if len(words) <= 1 and not document.text_before_cursor.endswith(" "):
            yield from self._first_word(words[0] if words else "")

    async def get_completions_async(self, document: Document, complete_event: CompleteEvent
                                    ) -> AsyncGenerator[Completion, None]:
        text = document.text_before_cursor
        words = text.split()
        if len(words) <= 1 and not text.endswith(" "):
            for c in self._first_word(words[0] if words else ""):
                yield c
            return
        cmd = COMMANDS.get(words[0])
        if cmd is None or not cmd.takes_path:
            return
        partial = "" if text.endswith(" ") else words[-1]
        if partial.startswith("-"):
            return
        for c in await self._paths(partial):
            yield c

    def _first_word(self, prefix: str) -> Iterable[Completion]:
        for name in sorted(set(COMMANDS) | set(self.shell.methods)):
            if name.startswith(prefix):
                yield Completion(name, start_position=-len(prefix))

    async def _paths(self, partial: str) -> list[Completion]:
        head, tail = posixpath.split(partial)
        directory = self.shell.abspath(head or ".")
        entries = await self._list(directory)
        out = []
        for e in entries:
            name = str(e.get("name", ""))
            if name.startswith(tail):
                suffix = "/" if e.get("type") == "directory" else ""
                out.append(Completion(posixpath.join(head, name) + suffix, start_position=-len(partial),
                                      display=name + suffix))
        return out

    async def _list(self, directory: str) -> list[dict[str, Any]]:
        now = time.monotonic()
        hit = self._dir_cache.get(directory)
        if hit and now - hit[0] < _CACHE_TTL:
            return hit[1]
        if not self.shell.client.online:
            return []
        try:
            entries = await self.shell.client.call("mcp.fs.list", {"path": directory})
        except RPCError:
            entries = []
        self._dir_cache[directory] = (now, entries)
        return entries  # type: ignore[no-any-return]
