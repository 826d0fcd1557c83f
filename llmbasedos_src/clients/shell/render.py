"""How luca-shell shows things: tables for listings, highlighted files, pretty JSON, one-line errors."""

from __future__ import annotations

import json
import posixpath
from typing import Any

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from llmbasedos.protocol.errors import RPCError

__all__ = ["Output"]

_LEXERS = {
    ".py": "python", ".md": "markdown", ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
    ".sh": "bash", ".js": "javascript", ".ts": "typescript", ".html": "html", ".css": "css", ".ini": "ini",
    ".c": "c", ".h": "c", ".rs": "rust", ".go": "go", ".sql": "sql", ".xml": "xml", ".ics": "text",
}


class Output:
    def __init__(self, console: Console, *, json_mode: bool = False) -> None:
        self.console = console
        self.json_mode = json_mode

    def json(self, value: Any) -> None:
        if self.json_mode:
            # Machine output: one compact JSON document per result, nothing else on stdout.
            self.console.out(json.dumps(value, ensure_ascii=False), highlight=False)
        else:
            self.console.print_json(data=value)

    def text(self, message: str) -> None:
        if not self.json_mode:
            self.console.print(message, highlight=False)

    def error(self, exc: BaseException) -> None:
        if isinstance(exc, RPCError):
            line = f"error {exc.code}: {exc.message}"
            if isinstance(exc.data, dict) and "retry_after" in exc.data:
                line += f" (retry after {exc.data['retry_after']} s)"
        else:
            line = f"error: {exc}"
        if self.json_mode:
            code = exc.code if isinstance(exc, RPCError) else None
            msg = exc.message if isinstance(exc, RPCError) else str(exc)
            self.console.out(json.dumps({"error": {"code": code, "message": msg}}), highlight=False)
        else:
            self.console.print(f"[bold red]{_escape(line)}[/]", soft_wrap=True)

    def listing(self, entries: list[dict[str, Any]], long: bool) -> None:
        if self.json_mode:
            self.json(entries)
            return
        if not long:
            names = [_styled_name(e) for e in entries]
            self.console.print("  ".join(names) if names else "[dim](empty)[/]")
            return
        table = Table(show_header=True, header_style="bold", box=None)
        for col in ("type", "size", "modified", "name"):
            table.add_column(col, justify="right" if col == "size" else "left")
        for e in entries:
            table.add_row(str(e.get("type", "")), _size(e.get("size")), str(e.get("modified", ""))[:19],
                          _styled_name(e))
        self.console.print(table)

    def table(self, rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
        if self.json_mode:
            self.json(rows)
            return
        table = Table(*columns, title=title, header_style="bold", box=None)
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in columns))
        self.console.print(table)

    def file(self, path: str, content: str) -> None:
        if self.json_mode:
            self.json({"path": path, "content": content})
            return
        lexer = _LEXERS.get(posixpath.splitext(path)[1].lower())
        if lexer:
            self.console.print(Syntax(content, lexer, theme="ansi_dark", word_wrap=True))
        else:
            self.console.out(content, highlight=False)

    def stream(self, delta: str) -> None:
        if not self.json_mode:
            self.console.out(delta, end="", highlight=False)
            self.console.file.flush()


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def _styled_name(entry: dict[str, Any]) -> str:
    name = _escape(str(entry.get("name", "")))
    kind = entry.get("type")
    if kind == "directory":
        return f"[bold blue]{name}/[/]"
    if kind == "symlink":
        return f"[cyan]{name}@[/]"
    return name


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return ""
    size = float(value)
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return _escape(json.dumps(value, ensure_ascii=False))
    return _escape(str(value))
