"""YAML configuration text parsed with one way of saying where it is wrong."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["load_yaml"]


def load_yaml(text: str, source: str, error: type[ValueError]) -> Any:
    """`text` parsed safely; when it is not YAML, `error` naming the file, the line and column and the problem,
    never the text itself (a snippet could show a line the person did not mean to share, a password say)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise error(f"{source}: not valid YAML{where}: {problem}") from None
