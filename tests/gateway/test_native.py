"""The gateway's per-call modules compiled with mypyc: used when the build matches the sources, never when stale.

`make test` builds them first (`llmbasedos native build`), so the rest of the suite runs the
compiled gateway, as `make up` does. These tests check the rule that picks compiled or plain Python, on a copy
of the package, and that the plain-Python gateway still routes calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from llmbasedos.gateway import native
from tests.gateway.harness import REPO, Env, WsClient, wait_until

EXT = sysconfig.get_config_var("EXT_SUFFIX")
pytestmark = pytest.mark.skipif(os.environ.get("LLMBASEDOS_PURE_PYTHON", "") not in ("", "0"),
                                reason="LLMBASEDOS_PURE_PYTHON is set for this run")

_PROBE = ("import llmbasedos.gateway.router as r, llmbasedos.gateway.native as n, llmbasedos.gateway.app; "
          "print(r.__file__); print(n.decision())")


def _run(root: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """`python *args` with `root` first on the path."""
    full = {k: v for k, v in os.environ.items() if k != "LLMBASEDOS_PURE_PYTHON"}
    return subprocess.run([sys.executable, *args], env={**full, "PYTHONPATH": str(root), **env},
                          capture_output=True, text=True, timeout=timeout)


def _probe(root: Path, **env: str) -> tuple[Path, str]:
    """In a new interpreter with `root` first on the path: where the router came from, and why."""
    proc = _run(root, "-c", _PROBE, **env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    return Path(out[0]), out[1]


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The package with its build, as `llmbasedos/` under a fresh directory."""
    if not native.status()[0]:
        pytest.fail(f"the gateway is not compiled here ({native.status()[1]}): run `make native`")
    shutil.copytree(REPO / "llmbasedos_src", tmp_path / "llmbasedos", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_this_checkout_runs_the_compiled_modules() -> None:
    usable, why = native.status()
    assert usable, f"the gateway is not compiled here ({why}): run `make native`"
    import llmbasedos.gateway.router as router
    import llmbasedos.gateway.ws_protocol as ws_protocol

    for module in (router, ws_protocol):
        path = Path(str(module.__file__))
        # A module first imported by another compiled one names a path below the build (mypyc's doing).
        assert path.is_relative_to(native.BUILD_DIR) and path.name.endswith(EXT), path


def test_a_copy_with_its_build_loads_the_build(copy: Path) -> None:
    origin, why = _probe(copy)
    assert origin.is_relative_to(copy / "llmbasedos" / "gateway" / "compiled") and origin.name == f"router{EXT}"
    assert why == f"compiled ({len(native.COMPILED)} modules)"


def test_a_source_changed_after_the_build_runs_as_python(copy: Path) -> None:
    router = copy / "llmbasedos" / "gateway" / "router.py"
    router.write_text(router.read_text(encoding="utf-8") + "\n# edited after the build\n", encoding="utf-8")
    origin, why = _probe(copy)
    assert origin == router  # and so does every other module: app imported without a mixed build
    assert why == "sources changed since the build: router"


def test_the_command_rebuilds_a_stale_build_and_leaves_a_fresh_one(copy: Path) -> None:
    gateway = copy / "llmbasedos" / "gateway"
    manifest = gateway / "compiled" / "manifest.json"
    before = manifest.stat().st_mtime_ns
    fresh = _run(copy, "-m", "llmbasedos.cli", "native", "build")
    assert fresh.returncode == 0 and f"compiled ({len(native.COMPILED)} modules)" in fresh.stdout
    assert manifest.stat().st_mtime_ns == before  # up to date: nothing rebuilt

    metrics = gateway / "metrics.py"
    metrics.write_text(metrics.read_text(encoding="utf-8") + "\n# edited after the build\n", encoding="utf-8")
    stale = _run(copy, "-m", "llmbasedos.cli", "native", "status")
    assert stale.returncode == 0 and "sources changed since the build: metrics" in stale.stdout
    rebuilt = _run(copy, "-m", "llmbasedos.cli", "native", "build", timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert f"compiled ({len(native.COMPILED)} modules)" in rebuilt.stdout
    origin, why = _probe(copy)
    assert origin.is_relative_to(gateway / "compiled") and origin.name == f"router{EXT}"
    assert why.startswith("compiled")
    assert sorted(p.name for p in gateway.iterdir() if p.name.startswith(".compiled")) == []  # nothing staged left


def test_a_build_for_another_python_is_not_used(copy: Path) -> None:
    manifest = copy / "llmbasedos" / "gateway" / "compiled" / "manifest.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["platform"] = "cpython-312.cpython-312-x86_64-linux-gnu.so"
    manifest.write_text(json.dumps(data), encoding="utf-8")
    origin, why = _probe(copy)
    assert origin.suffix == ".py" and why == "built for another Python"


def test_no_build_and_a_broken_manifest_run_as_python(copy: Path) -> None:
    build = copy / "llmbasedos" / "gateway" / "compiled"
    for text in ("{not json", '["a list"]', '{"platform": "x", "sources": ["a list"]}'):
        (build / "manifest.json").write_text(text, encoding="utf-8")
        origin, why = _probe(copy)
        assert origin.suffix == ".py" and why.startswith("unreadable manifest"), (text, why)
    shutil.rmtree(build)
    origin, why = _probe(copy)
    assert origin.suffix == ".py" and why.startswith("not built")


def test_the_switch_turns_the_build_off(copy: Path) -> None:
    origin, why = _probe(copy, LLMBASEDOS_PURE_PYTHON="1")
    assert origin.suffix == ".py" and why == "LLMBASEDOS_PURE_PYTHON is set"


@pytest.mark.parametrize("pure", [True, False], ids=["plain-python", "compiled"])
async def test_the_gateway_routes_calls_either_way(env: Env, pure: bool) -> None:
    env.start_backend("echo")
    gw = env.start_gateway(LLMBASEDOS_PURE_PYTHON="1" if pure else "0")
    expected = "LLMBASEDOS_PURE_PYTHON is set" if pure else f"compiled ({len(native.COMPILED)} modules)"
    assert f"(per-call modules: {expected})" in gw.output()
    async with WsClient.connect(gw.ws_url, gw.token) as c:
        async def routed() -> bool:
            return "mcp.echo.say" in (await c.call("mcp.hello"))["methods"]

        await wait_until(routed, what="echo to be routed")
        answers = await asyncio.gather(*(c.call("mcp.echo.say", {"text": f"hi {i}"}) for i in range(50)))
        assert answers == [f"hi {i}" for i in range(50)]
