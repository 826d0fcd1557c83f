"""The package's map holds: each folder imports only the layers below it, no module imports itself back through
others (not even for type checking), each folder says what lives in it, and modules stay small.

LAYERS says, for each unit, which other units it may import (its own modules it always may).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "llmbasedos_src"

# The shared leaves at the top of the package (settings, logs, faults, files, heap, loopback, local_llm).
SHARED = "llmbasedos"
LAYERS: dict[str, set[str]] = {
    "llmbasedos.protocol": set(),
    SHARED: {"llmbasedos.protocol"},
    "llmbasedos.rpc": {"llmbasedos.protocol", SHARED},
    "llmbasedos.backend": {"llmbasedos.protocol", "llmbasedos.rpc", SHARED},
    "llmbasedos.servers": {"llmbasedos.backend", "llmbasedos.protocol", "llmbasedos.rpc", SHARED},
    "llmbasedos.gateway.policy": {"llmbasedos.protocol", SHARED},
    "llmbasedos.gateway.config": {SHARED},
    "llmbasedos.gateway.llm": {"llmbasedos.gateway.policy", "llmbasedos.protocol", SHARED},
    "llmbasedos.gateway.routing": {"llmbasedos.gateway.policy", "llmbasedos.protocol", "llmbasedos.rpc", SHARED},
    "llmbasedos.gateway.doors": {"llmbasedos.gateway.routing", "llmbasedos.gateway.policy", "llmbasedos.gateway.config",
                                 "llmbasedos.protocol", "llmbasedos.rpc", SHARED},
    "llmbasedos.gateway": {"llmbasedos.gateway.doors", "llmbasedos.gateway.routing", "llmbasedos.gateway.policy",
                           "llmbasedos.gateway.config", "llmbasedos.gateway.llm", "llmbasedos.protocol",
                           "llmbasedos.rpc", SHARED},
    "llmbasedos.clients": {"llmbasedos.protocol", "llmbasedos.rpc", SHARED},
    # The appliance starts everything and administers the policy's stores: it may import anything.
    "llmbasedos.appliance": {"*"},
}

MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = ["llmbasedos", *path.relative_to(SRC).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def unit_of(module: str) -> str:
    """The most specific layer a module belongs to."""
    best = SHARED
    for unit in LAYERS:
        if (module == unit or module.startswith(unit + ".")) and len(unit) > len(best):
            best = unit
    return best


def imports_of(path: Path) -> set[str]:
    """Every llmbasedos module `path` imports, anywhere in it (functions and TYPE_CHECKING blocks too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path.relative_to(SRC)}:{node.lineno}: imports are absolute (llmbasedos.x.y)")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "llmbasedos":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "llmbasedos")
    return {m for m in found if m in MODULES}


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for module, targets in GRAPH.items():
        unit = unit_of(module)
        allowed = LAYERS[unit]
        for target in sorted(targets):
            other = unit_of(target)
            if other != unit and "*" not in allowed and other not in allowed:
                wrong.append(f"{module} ({unit}) imports {target} ({other})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    # Depth-first search for a back edge; the path to it is the cycle to show.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", sorted(m for m, p in MODULES.items() if p.name == "__init__.py"))
def test_each_folder_says_what_lives_in_it(package: str) -> None:
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text(encoding="utf-8"))) or ""
    assert len(doc.split()) >= 6, f"{package}/__init__.py: its docstring must say what lives there"


def test_modules_stay_small() -> None:
    long = sorted(str(p.relative_to(SRC)) for p in MODULES.values()
                  if len(p.read_text(encoding="utf-8").splitlines()) > MAX_LINES)
    assert not long, f"past {MAX_LINES} lines, split them: {long}"
