"""The Jinja2 sandbox templates run in, and the bounds on what one render may do.

On top of Jinja2's `ImmutableSandboxedEnvironment` (no internals, no mutation of the context):

- **Size.** No operation may produce a value larger than `max_size`: characters of a string, or items of a
  list or mapping counted deeply, as the value would be written out (a list holding the same string twice
  counts it twice). Where one C call could allocate far more than that — `*`, `%` and `format` widths,
  `center`, `replace`, `join`, `indent` ... — the size is predicted and refused *before* the call; every call,
  filter, operator, `~` and the output of a render are measured after. Numbers are bounded to
  `MAX_INT_BITS` bits.
- **CPU time.** One render may use `max_seconds` of its thread's CPU time. The clock is read at every call,
  filter and operator, and every few iterations of every `{% for %}` (the compiler wraps each loop's items),
  so even a loop with an empty body ends; between two looks only work bounded by the size bound is done.

The extension points are Jinja2's documented ones: `intercepted_binops`/`call_binop`, `call`, `filters`,
`finalize`, `concat` and `code_generator_class` (for `~` and loops).
"""

from __future__ import annotations

import functools
import operator
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["Sandbox", "TooLarge", "TooSlow", "MAX_INT_BITS", "measure"]

MAX_INT_BITS = 1 << 16
_MAX_EXPONENT = 64
_PRINTF = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_MAX_LIPSUM_WORDS = 100_000
_CHECK_EVERY = 64  # loop iterations between two looks at the clock
_CONTAINERS = (list, tuple, set, frozenset)
# Methods and filters whose integer arguments are sizes of what they make: bounded like the sizes themselves.
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "to_bytes"})
_WIDTH_FILTERS = frozenset({"center", "indent", "batch", "slice", "wordwrap"})
_MATERIALISED_FILTERS = frozenset({"join", "indent", "center", "format", "replace"})


class TooLarge(SecurityError):
    """An operation would produce a value past the size bound."""


class TooSlow(SecurityError):
    """The render used up its CPU time."""


def measure(value: Any, limit: int) -> int:
    """The written-out size of `value` (characters and items, deeply); stops counting past `limit`."""
    total = 0
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, _CONTAINERS):
            total += len(item)
            if total <= limit:
                pending.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            if total <= limit:
                pending.extend(item.keys())
                pending.extend(item.values())
        else:
            total += 1
        if total > limit:
            return total
    return total


class _Clock(threading.local):
    deadline: float | None = None  # in the thread's CPU time; None between renders


class _Compiler(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # `a ~ b` compiles to a plain join of str()s: route it through the environment, which bounds it.
        self.write("environment.concat_values((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # Every loop's items go through `environment.loop_items`, which looks at the clock as they pass.
        node.iter = nodes.Call(nodes.EnvironmentAttribute("loop_items"), [node.iter], [], None, None,
                               lineno=node.lineno)
        super().visit_For(node, frame)


class Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _Compiler

    def __init__(self, *, max_size: int, max_seconds: float, **options: Any) -> None:
        super().__init__(finalize=self._output, **options)
        self.max_size = max_size
        self.max_seconds = max_seconds
        self._clock = _Clock()
        self.filters = {name: self._bounded_filter(name, f) for name, f in self.filters.items()}
        lipsum: Callable[..., Any] = self.globals["lipsum"]  # type: ignore[assignment]

        @functools.wraps(lipsum)
        def bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:
            # Its loop is plain Python that looks at no clock: bounded by what it may make instead.
            if n * max > _MAX_LIPSUM_WORDS:
                raise TooLarge(f"lipsum makes at most {_MAX_LIPSUM_WORDS} words")
            return lipsum(n=n, html=html, min=min, max=max)

        self.globals["lipsum"] = bounded_lipsum

    # -- time ----------------------------------------------------------------------------------------

    def timed(self, render: Callable[[], Any]) -> Any:
        """Run `render` (one whole render, on this thread) within the CPU time bound."""
        clock = self._clock
        if clock.deadline is not None:
            return render()  # nested: the outer render's clock runs
        clock.deadline = time.thread_time() + self.max_seconds
        try:
            return render()
        finally:
            clock.deadline = None

    def loop_items(self, items: Iterable[Any]) -> Iterator[Any]:
        for n, item in enumerate(items):
            if n % _CHECK_EVERY == 0:
                self.check_time()
            yield item

    def check_time(self) -> None:
        deadline = self._clock.deadline
        if deadline is not None and time.thread_time() > deadline:
            raise TooSlow(f"the template used more than {self.max_seconds:g} s of CPU time")

    # -- size ----------------------------------------------------------------------------------------

    def bounded(self, value: Any, what: str) -> Any:
        """`value`, unless it is past the size bound (TooLarge, saying that `what` would be too large)."""
        self._refuse_over(measure(value, self.max_size), what)
        return value

    def _refuse_over(self, predicted: int, what: str) -> None:
        if predicted > self.max_size:
            raise TooLarge(f"{what} would be larger than {self.max_size} characters or items")

    def _output(self, value: Any) -> Any:
        return self.bounded(value, "an output")

    def concat(self, pieces: Iterable[str]) -> str:  # type: ignore[override]
        # The join of a render's (or a macro's, or a block's) output, counted as it streams in.
        out: list[str] = []
        total = 0
        for piece in pieces:
            total += len(piece)
            if total > self.max_size:
                raise TooLarge(f"the rendered text would be larger than {self.max_size} characters")
            out.append(piece)
        return "".join(out)

    def concat_values(self, values: tuple[Any, ...]) -> str:
        self.check_time()
        self._refuse_over(sum(measure(v, self.max_size) for v in values), "the result of '~'")
        return "".join(map(str, values))

    def _ints(self, args: Iterable[Any], what: str) -> None:
        for a in args:
            if isinstance(a, int) and not isinstance(a, bool) and a > self.max_size:
                raise TooLarge(f"{what}: the argument {a} is larger than {self.max_size}")

    # -- operators -----------------------------------------------------------------------------------

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        self.check_time()
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > _MAX_EXPONENT:
                raise SecurityError("exponent too large")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() * max(right, 0) > MAX_INT_BITS:
                raise TooLarge(f"the result of '**' would have more than {MAX_INT_BITS} bits")
            return operator.pow(left, right)
        if operator_name == "*":
            self._predict_mul(left, right)
            return self.bounded(operator.mul(left, right), "the result of '*'")
        if operator_name == "%":
            if isinstance(left, str):
                self._predict_printf(left, right)
            return self.bounded(operator.mod(left, right), "the result of '%'")
        return self.bounded(operator.add(left, right), "the result of '+'")

    def _predict_mul(self, left: Any, right: Any) -> None:
        if isinstance(left, int) and not isinstance(left, bool) and isinstance(right, (str, list, tuple)):
            left, right = right, left
        if isinstance(left, (str, list, tuple)) and isinstance(right, int):
            if right > 0 and measure(left, self.max_size) * right > self.max_size:
                raise TooLarge("the result of '*' would be too large "
                               f"(more than {self.max_size} characters or items)")
        elif (isinstance(left, int) and isinstance(right, int)
              and left.bit_length() + right.bit_length() > MAX_INT_BITS):
            raise TooLarge(f"the result of '*' would have more than {MAX_INT_BITS} bits")

    def _predict_printf(self, fmt: str, args: Any) -> None:
        widths = 0
        for match in _PRINTF.finditer(fmt):
            for number in match.groups():
                if number == "*":
                    raise SecurityError("'*' widths are not allowed in templates")
                if number:
                    widths += int(number)
        self._refuse_over(len(fmt) + widths + measure(args, self.max_size), "the result of '%'")

    def _predict_format(self, fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        widths = 0
        try:
            fields = list(string.Formatter().parse(fmt))
        except ValueError:
            return  # the call itself says what is wrong with the format
        for _, _, spec, _ in fields:
            if spec and "{" in spec:
                raise SecurityError("nested fields in format specifications are not allowed in templates")
            widths += sum(int(n) for n in re.findall(r"\d+", spec or ""))
        size = len(fmt) + widths + measure(args, self.max_size) + measure(kwargs, self.max_size)
        self._refuse_over(size, "the result of format")

    # -- calls ---------------------------------------------------------------------------------------

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        __self.check_time()
        target = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", "")
        if name in _WIDTH_METHODS and isinstance(owner, (str, int)):
            __self._ints((*args, *kwargs.values()), f"{type(owner).__name__}.{name}")
        if isinstance(owner, str):
            args = __self._predict_str_method(owner, name, args, kwargs)
        return __self.bounded(super().call(__context, __obj, *args, **kwargs), f"the result of {name or 'a call'}")

    def _predict_str_method(self, s: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        if name in ("format", "format_map"):
            self._predict_format(s, args, kwargs)
        elif name == "join" and args:
            items = list(args[0]) if isinstance(args[0], Iterator) else args[0]
            self._predict_join(items, s)
            return (items, *args[1:])
        elif name == "replace" and len(args) >= 2:
            self._predict_replace(s, args[0], args[1], args[2] if len(args) > 2 else -1)
        elif name == "expandtabs":
            size = args[0] if args else kwargs.get("tabsize", 8)
            if isinstance(size, int):
                self._refuse_over(len(s) + s.count("\t") * size, "the result of expandtabs")
        elif name == "translate" and args and isinstance(args[0], dict):
            longest = max((measure(v, self.max_size) for v in args[0].values()), default=1)
            self._refuse_over(len(s) * max(longest, 1), "the result of translate")
        return args

    def _predict_join(self, items: Any, sep: Any) -> None:
        count = len(items) if hasattr(items, "__len__") else 0
        self._refuse_over(measure(items, self.max_size) + len(str(sep)) * count, "the result of join")

    def _predict_replace(self, s: Any, old: Any, new: Any, count: Any) -> None:
        s, old, new = str(s), str(old), str(new)
        found = len(s) + 1 if old == "" else s.count(old)
        if isinstance(count, int) and count >= 0:
            found = min(found, count)
        self._refuse_over(len(s) + found * max(len(new) - len(old), 0), "the result of replace")

    # -- filters -------------------------------------------------------------------------------------

    def _bounded_filter(self, name: str, f: Callable[..., Any]) -> Callable[..., Any]:
        skip = 1 if getattr(f, "jinja_pass_arg", None) is not None else 0  # context, eval context or env

        @functools.wraps(f)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            self.check_time()
            head, rest = args[:skip], list(args[skip:])
            if rest:
                if isinstance(rest[0], Iterator) and name in _MATERIALISED_FILTERS:
                    rest[0] = list(rest[0])
                if isinstance(rest[0], (*_CONTAINERS, dict)):
                    # A container may hold the same value many times: written out, it is that many times larger.
                    self.bounded(rest[0], f"the input of the filter {name!r}")
                self._predict_filter(name, rest, kwargs)
            return self.bounded(f(*head, *rest, **kwargs), f"the result of the filter {name!r}")

        return bounded

    def _predict_filter(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        value = args[0]
        if name in _WIDTH_FILTERS:
            self._ints((*args[1:], *kwargs.values()), f"the filter {name!r}")
        if name == "join":
            self._predict_join(value, args[1] if len(args) > 1 else kwargs.get("d", ""))
        elif name == "replace" and len(args) >= 3:
            self._predict_replace(value, args[1], args[2], args[3] if len(args) > 3 else kwargs.get("count", -1))
        elif name == "format":
            self._predict_printf(str(value), tuple(args[1:]) or kwargs)
        elif name == "indent":
            width = args[1] if len(args) > 1 else kwargs.get("width", 4)
            step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
            text = str(value)
            self._refuse_over(len(text) + (text.count("\n") + 1) * step, "the result of the filter 'indent'")
        elif name == "tojson":
            indent = args[1] if len(args) > 1 else kwargs.get("indent")
            if isinstance(indent, int):
                self._refuse_over(measure(value, self.max_size) * (indent + 2), "the result of the filter 'tojson'")
