"""The sandboxed templating of workflow steps: native values, and refusals with clear messages."""

from __future__ import annotations

from typing import Any

import pytest

from llmbasedos.servers.agent.templating import TemplateError, Templater

CTX: dict[str, Any] = {"inputs": {"n": 3, "names": ["a", "b"], "flag": False, "text": "{{ 1 + 1 }}"},
                       "steps": {"get": {"status": 200}, "items": [1, 2]}, "vars": {}}


@pytest.fixture
def t() -> Templater:
    return Templater()


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ inputs.n }}", 3),
    ("{{ inputs.n * 2.5 }}", 7.5),
    ("{{ inputs.flag }}", False),
    ("{{ inputs.names }}", ["a", "b"]),
    ("  {{ {'k': inputs.n} }}  ", {"k": 3}),
    ("{{ none }}", None),
    ("n={{ inputs.n }}", "n=3"),
    ("{{ inputs.n }}{{ inputs.n }}", "33"),
    ("{% if inputs.flag %}yes{% else %}no{% endif %}", "no"),
    ("{{ inputs.text }}", "{{ 1 + 1 }}"),  # values are data: never rendered again
    ("{{ steps.get.status }}", 200),  # keys before dict methods
    ("{{ steps.items | sum }}", 3),
    ("{{ (1, 2) }}", [1, 2]),
    ("plain text", "plain text"),
])
def test_values_keep_their_types(t: Templater, template: str, expected: Any) -> None:
    assert t.render(template, CTX) == expected


def test_containers_are_rendered_member_by_member(t: Templater) -> None:
    assert t.render({"a": ["{{ inputs.n }}", 5, {"b": "x{{ inputs.n }}"}]}, CTX) == {"a": [3, 5, {"b": "x3"}]}


@pytest.mark.parametrize(("template", "message"), [
    ("{{ ''.__class__.__mro__ }}", "access to attribute '__class__' of 'str' object is unsafe"),
    ("{{ inputs.__class__ }}", "unsafe"),
    ("{{ cycler.__init__.__globals__ }}", "unsafe"),
    ("{{ lipsum.__globals__ }}", "unsafe"),
    ("{{ (1).__class__.__base__.__subclasses__() }}", "unsafe"),
    ("{% import 'os' as os %}{{ os }}", "may not import, include or extend"),
    ("{% include 'x' %}", "may not import, include or extend"),
    ("{% extends 'base' %}", "may not import, include or extend"),
    ("{{ inputs.names.append(1) }}", "unsafe"),  # immutable sandbox: no mutation of the context
    ("{{ 'a' * 100000000 }}", "too large"),
    ("{{ 2 ** 100000 }}", "exponent too large"),
    ("{% for i in range(10**8) %}{% endfor %}", "Range too big"),
    ("{{ missing }}", "'missing' is undefined"),
    ("{{ ''.format }}", "not data"),
    ("{{ inputs.n + }}", "syntax error"),
])
def test_injection_and_mistakes_are_refused(t: Templater, template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=r"^template ") as info:
        t.render(template, CTX)
    assert message in str(info.value)
    assert CTX["inputs"]["names"] == ["a", "b"]


def test_check_compiles_without_evaluating(t: Templater) -> None:
    t.check({"a": ["{{ anything.at.all }}"]})  # names are resolved at run time only
    with pytest.raises(TemplateError, match="syntax error"):
        t.check({"a": ["ok", "{% if %}"]})
