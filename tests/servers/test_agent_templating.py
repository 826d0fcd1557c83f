"""The sandboxed templating of workflow steps: native values, and refusals with clear messages."""

from __future__ import annotations

import asyncio
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


BIG: dict[str, Any] = {"inputs": {"s": "x" * 900_000, "n": 5}, "steps": {}, "vars": {}}


@pytest.fixture
def small() -> Templater:
    return Templater(max_size=1 << 20, max_seconds=0.3)


@pytest.mark.parametrize(("template", "message"), [
    ("{{ 'a' * 10**9 }}", "the result of '*' would be too large"),
    ("{{ ('x' ~ 'x') * 10**6 }}", "the result of '*' would be too large"),
    ("{{ [inputs.s] * 1000 }}", "the result of '*' would be too large"),  # a list of one big string, counted deeply
    ("{{ inputs.s ~ inputs.s }}", "the result of '~' would be larger than 1048576"),
    ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "'~'"),
    ("{{ inputs.s + inputs.s }}", "the result of '+' would be larger"),
    ("{{ ','.join([inputs.s, inputs.s]) }}", "the result of join would be larger"),
    ("{{ [inputs.s, inputs.s] | join }}", "the input of the filter 'join' would be larger"),
    ("{{ range(100000) | join(inputs.s) }}", "the result of join would be larger"),
    ("{{ range(10**9) | list }}", "Range too big"),
    ("{{ '%0999999999d' % 1 }}", "the result of '%' would be larger"),
    ("{{ '%*d' % (5, 1) }}", "'*' widths are not allowed"),
    ("{{ '%0999999999d' | format(1) }}", "the result of '%' would be larger"),
    ("{{ '{:>999999999}'.format(1) }}", "the result of format would be larger"),
    ("{{ '{:{}}'.format(1, 9) }}", "nested fields in format specifications are not allowed"),
    ("{{ 'x' | center(10**9) }}", "the filter 'center': the argument 1000000000 is larger than 1048576"),
    ("{{ 'x'.ljust(10**9) }}", "str.ljust: the argument 1000000000 is larger"),
    ("{{ ('x\\n' * 400000) | indent(100) }}", "the result of the filter 'indent' would be larger"),
    ("{{ inputs.s | replace('x', 'yy') }}", "the result of replace would be larger"),
    ("{{ 'ab'.replace('', 'z' * 900000) }}", "the result of replace would be larger"),
    ("{{ [1] | batch(10**9, 'x') | list }}", "the filter 'batch': the argument 1000000000 is larger"),
    ("{{ (1).to_bytes(10**9, 'big') }}", "int.to_bytes: the argument 1000000000 is larger"),
    ("{{ ((10**64) ** 64) ** 64 }}", "the result of '**' would have more than 65536 bits"),
    ("{{ lipsum(10**6) }}", "lipsum makes at most 100000 words"),
    ("{% for i in range(100000) %}{{ inputs.s }}{% endfor %}", "the rendered text would be larger than 1048576"),
    ("{% macro m() %}{% for i in range(10) %}{{ inputs.s }}{% endfor %}{% endmacro %}{{ m() | length }}",
     "the rendered text would be larger"),
    ("{% set l = [inputs.s, inputs.s] %}{{ l | string }}", "the input of the filter 'string' would be larger"),
    ("{% set l = [inputs.s, inputs.s] %}{{ l }}", "an output would be larger"),
    ("{{ [inputs.s, inputs.s] }}", "the value would be larger"),
])
def test_a_template_cannot_make_a_value_past_the_size_bound(small: Templater, template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=r"^template ") as info:
        small.render(template, BIG)
    assert message in str(info.value)


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ inputs.s }}", "x" * 900_000),  # handing an existing value on produces nothing: not bounded
    ("{{ inputs.s | length }}", 900_000),
    ("{{ inputs.s[:10] ~ '!' }}", "x" * 10 + "!"),
    ("{{ '{:,}'.format(5000000000) }}", "5,000,000,000"),  # big numbers are data, not sizes
    ("{{ 'ab' | center(6) }}", "  ab  "),
    ("{{ '%05d' % inputs.n }}", "00005"),
    ("{{ range(3) | map('string') | join('-') }}", "0-1-2"),
    ("{% for i in range(3) %}{{ loop.index }}/{{ loop.length }} {% endfor %}", "1/3 2/3 3/3 "),
])
def test_ordinary_templates_stay_within_the_bounds(small: Templater, template: str, expected: Any) -> None:
    assert small.render(template, BIG) == expected


@pytest.mark.parametrize("template", [
    "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",  # loops doing nothing
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",  # 2**40 calls
    "{{ range(100000) | map('string') | map('upper') | map('lower') | map('title') | list | length }}"
    "{% for i in range(100000) %}{{ range(100) | sum }}{% endfor %}",
])
def test_a_render_ends_once_its_cpu_time_is_spent(template: str) -> None:
    t = Templater(max_seconds=0.2)
    with pytest.raises(TemplateError, match=r"the template used more than 0.2 s of CPU time"):
        t.render(template, CTX)
    assert t.render("{{ inputs.n }}", CTX) == 3  # the next render has its own time


async def test_a_render_that_never_ends_leaves_the_event_loop_serving() -> None:
    t = Templater(max_seconds=1.0)
    try:
        forever = asyncio.ensure_future(t.render_async(
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", CTX))
        others = [await t.render_async("{{ inputs.n * 2 }}", CTX) for _ in range(3)]
        for _ in range(3):
            await asyncio.sleep(0.01)
        # The loop answered other renders and woke this coroutine while the long one still worked.
        assert others == [6, 6, 6]
        assert not forever.done()
        with pytest.raises(TemplateError, match="CPU time"):
            await forever
    finally:
        t.close()
