"""Templating of step parameters with a sandboxed Jinja2 environment — never `eval`.

A string that is exactly one `{{ expression }}` evaluates to the expression's native value, so numbers stay
numbers and lists stay lists; any other string containing template syntax renders to a string. Dicts and lists
are rendered member by member. The sandbox refuses access to internals (`__class__`, `mro`, ...), templates
cannot import, include or extend anything, and each render is bounded in the size of what it produces and in
CPU time (see sandbox.py). The engine renders on a small pool of threads (`render_async`), so a heavy render
never stalls the agent's event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jinja2 import BaseLoader, StrictUndefined, TemplateNotFound, TemplateSyntaxError, nodes
from jinja2.environment import Environment
from jinja2.exceptions import TemplateError as JinjaTemplateError

from llmbasedos.servers.agent.config import AgentConfig
from llmbasedos.servers.agent.sandbox import Sandbox

__all__ = ["TemplateError", "Templater", "is_template"]

_WHOLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)
_RENDER_THREADS = 4
_PLAIN = (str, int, float, bool, type(None), list, dict)


class TemplateError(ValueError):
    """A template could not be compiled or evaluated; the message says why, without host details."""


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


class _NoLoader(BaseLoader):
    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Any]:
        raise TemplateNotFound(template)


class _Sandbox(Sandbox):
    def getattr(self, obj: Any, attribute: str) -> Any:
        # Keys first for mappings, so a step named `get` or `items` is `steps.get`, not the dict method.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def _is_reference(node: nodes.Node) -> bool:
    """`steps.read.content`, `inputs['x']`: hands an existing value on, producing nothing new."""
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getitem) and not isinstance(node.arg, nodes.Const):
            return False
        node = node.node
    return isinstance(node, nodes.Name)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateNotFound):
        return "templates may not import, include or extend other templates"
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return str(message)


class Templater:
    """Renders step parameters against a context mapping (inputs, steps, vars, item, ...)."""

    def __init__(self, *, max_size: int = AgentConfig.max_string,
                 max_seconds: float = AgentConfig.max_render_seconds) -> None:
        self.env = _Sandbox(max_size=max_size, max_seconds=max_seconds, undefined=StrictUndefined,
                            loader=_NoLoader(), autoescape=False, keep_trailing_newline=True)
        # Tests that selecting files by name needs (`selectattr('name', 'endswith', '.md', '.txt')`).
        self.env.tests["endswith"] = lambda v, *ends: isinstance(v, str) and v.endswith(tuple(ends))
        self.env.tests["startswith"] = lambda v, *starts: isinstance(v, str) and v.startswith(tuple(starts))
        self._cache: dict[str, Any] = {}
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def check(self, value: Any) -> None:
        """Compile every template inside `value`; raise TemplateError for the first that does not compile."""
        if isinstance(value, str):
            if is_template(value):
                self._compiled(value)
        elif isinstance(value, Mapping):
            for v in value.values():
                self.check(v)
        elif isinstance(value, list):
            for v in value:
                self.check(v)

    def _compiled(self, text: str) -> Any:
        compiled = self._cache.get(text)
        if compiled is None:
            whole = _WHOLE_EXPR.match(text)
            try:
                if whole is not None and "{%" not in text:
                    expr = whole.group("expr")
                    body = self.env.parse("{{" + expr + "}}").body
                    reference = (len(body) == 1 and isinstance(body[0], nodes.Output) and len(body[0].nodes) == 1
                                 and _is_reference(body[0].nodes[0]))
                    compiled = ("ref" if reference else "expr",
                                self.env.compile_expression(expr, undefined_to_none=False))
                else:
                    compiled = ("text", self.env.from_string(text))
            except JinjaTemplateError as exc:
                raise TemplateError(f"template {_excerpt(text)}: {_describe(exc)}") from None
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[text] = compiled
        return compiled

    async def render_async(self, value: Any, context: Mapping[str, Any]) -> Any:
        """`render` on the render threads: the event loop keeps serving while a template works."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=_RENDER_THREADS, thread_name_prefix="agent-template")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.render, value, context)

    def render(self, value: Any, context: Mapping[str, Any]) -> Any:
        """`value` with every template evaluated; non-template values are returned as they are.

        The whole of `value` is one render: its CPU time bound covers every template inside it."""
        return self.env.timed(lambda: self._render(value, context))

    def _render(self, value: Any, context: Mapping[str, Any]) -> Any:
        if isinstance(value, str):
            if not is_template(value):
                return value
            kind, compiled = self._compiled(value)
            try:
                out = compiled.render(**context) if kind == "text" else compiled(**context)
                if kind == "expr":
                    out = self.env.bounded(out, "the value")
            except (JinjaTemplateError, ArithmeticError, TypeError, ValueError, KeyError, IndexError,
                    AttributeError, RecursionError, MemoryError) as exc:
                raise TemplateError(f"template {_excerpt(value)}: {_describe(exc)}") from None
            if isinstance(out, StrictUndefined):
                raise TemplateError(f"template {_excerpt(value)}: {out._undefined_message}")
            if isinstance(out, tuple):
                out = list(out)
            elif not isinstance(out, _PLAIN):
                # Functions, ranges, generators...: nothing a later step or the store could use safely.
                raise TemplateError(f"template {_excerpt(value)}: evaluates to a {type(out).__name__}, not data")
            return out
        if isinstance(value, Mapping):
            return {k: self._render(v, context) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render(v, context) for v in value]
        return value

    def truthy(self, value: Any, context: Mapping[str, Any]) -> bool:
        return bool(self.render(value, context))


def _excerpt(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "…")
