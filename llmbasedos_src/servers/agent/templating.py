"""Templating of step parameters with a sandboxed Jinja2 environment — never `eval`.

A string that is exactly one `{{ expression }}` evaluates to the expression's native value, so numbers stay
numbers and lists stay lists; any other string containing template syntax renders to a string. Dicts and lists
are rendered member by member. The sandbox refuses access to internals (`__class__`, `mro`, ...), templates
cannot import, include or extend anything, and huge repetitions (`'a' * 10**10`) are refused.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from typing import Any

from jinja2 import BaseLoader, StrictUndefined, TemplateNotFound, TemplateSyntaxError
from jinja2.environment import Environment
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["TemplateError", "Templater", "is_template"]

_WHOLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)
_MAX_SEQUENCE = 1_000_000  # the largest string or list a `*` or `**` may produce
_MAX_OUTPUT = 4 << 20
_PLAIN = (str, int, float, bool, type(None), list, dict)


class TemplateError(ValueError):
    """A template could not be compiled or evaluated; the message says why, without host details."""


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


class _NoLoader(BaseLoader):
    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Any]:
        raise TemplateNotFound(template)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Keys first for mappings, so a step named `get` or `items` is `steps.get`, not the dict method.
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > 64:
                raise SecurityError("exponent too large")
            return operator.pow(left, right)
        if isinstance(left, (str, list, tuple)) and isinstance(right, int):
            size = len(left) * right
        elif isinstance(right, (str, list, tuple)) and isinstance(left, int):
            size = len(right) * left
        else:
            size = 0
        if size > _MAX_SEQUENCE:
            raise SecurityError("the result of '*' would be too large")
        return operator.mul(left, right)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateNotFound):
        return "templates may not import, include or extend other templates"
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return str(message)


class Templater:
    """Renders step parameters against a context mapping (inputs, steps, vars, item, ...)."""

    def __init__(self) -> None:
        self.env = _Sandbox(undefined=StrictUndefined, loader=_NoLoader(), autoescape=False,
                            keep_trailing_newline=True)
        # Tests that selecting files by name needs (`selectattr('name', 'endswith', '.md', '.txt')`).
        self.env.tests["endswith"] = lambda v, *ends: isinstance(v, str) and v.endswith(tuple(ends))
        self.env.tests["startswith"] = lambda v, *starts: isinstance(v, str) and v.startswith(tuple(starts))
        self._cache: dict[str, Any] = {}

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
                    compiled = ("expr", self.env.compile_expression(whole.group("expr"), undefined_to_none=False))
                else:
                    compiled = ("text", self.env.from_string(text))
            except JinjaTemplateError as exc:
                raise TemplateError(f"template {_excerpt(text)}: {_describe(exc)}") from None
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[text] = compiled
        return compiled

    def render(self, value: Any, context: Mapping[str, Any]) -> Any:
        """`value` with every template evaluated; non-template values are returned as they are."""
        if isinstance(value, str):
            if not is_template(value):
                return value
            kind, compiled = self._compiled(value)
            try:
                out = compiled(**context) if kind == "expr" else compiled.render(**context)
            except (JinjaTemplateError, ArithmeticError, TypeError, ValueError, KeyError, IndexError,
                    AttributeError, RecursionError) as exc:
                raise TemplateError(f"template {_excerpt(value)}: {_describe(exc)}") from None
            if isinstance(out, StrictUndefined):
                raise TemplateError(f"template {_excerpt(value)}: {out._undefined_message}")
            if isinstance(out, tuple):
                out = list(out)
            elif not isinstance(out, _PLAIN):
                # Functions, ranges, generators...: nothing a later step or the store could use safely.
                raise TemplateError(f"template {_excerpt(value)}: evaluates to a {type(out).__name__}, not data")
            if isinstance(out, str) and len(out) > _MAX_OUTPUT:
                raise TemplateError(f"template {_excerpt(value)}: result larger than {_MAX_OUTPUT} characters")
            return out
        if isinstance(value, Mapping):
            return {k: self.render(v, context) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(v, context) for v in value]
        return value

    def truthy(self, value: Any, context: Mapping[str, Any]) -> bool:
        return bool(self.render(value, context))


def _excerpt(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "…")
