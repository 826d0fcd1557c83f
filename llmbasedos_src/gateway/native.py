"""The gateway's per-call modules compiled to C with mypyc, and the rule that decides whether they are used.

Every call through the gateway runs the same dozen modules: the `/ws` frames and protocol, the session, the
router, the upstream pool, admission (policy, limits), metrics and the audit log. They are typed Python, and
mypyc compiles that very source to C extension modules, which cut the gateway's CPU per call by about a
quarter. Nothing else changes: the sources stay the reference, and the package runs as plain Python when no
build is there.

    llmbasedos native build     # `make up` and `make test` run it; it compiles only when a source changed
    llmbasedos native status    # whether the gateway runs them compiled, and if not, why

The build goes to `compiled/` beside this file, with a manifest of the hashes of the sources it was built
from. `llmbasedos.gateway` puts that directory first on its search path only when every hash still matches
and the build is for this Python, so a source edited after the build runs as Python, never as stale code.
`LLMBASEDOS_PURE_PYTHON=1` turns the compiled modules off.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["COMPILED", "build", "decision", "register", "search_path", "status"]

# The modules every routed call runs, compiled together (calls between them stay in C).
COMPILED = ("audit", "http_protocol", "limits", "metrics", "policy", "read_scope", "router", "session", "upstream",
            "ws", "ws_frames", "ws_protocol")
_GROUP = "llmbasedos.gateway.compiled"  # the shared library: `compiled__mypyc` in the gateway package
_PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_DIR = _PACKAGE_DIR / "compiled"
_MANIFEST = "manifest.json"
_OFF = "LLMBASEDOS_PURE_PYTHON"


def _sources(package_dir: Path) -> dict[str, str]:
    return {name: hashlib.sha256((package_dir / f"{name}.py").read_bytes()).hexdigest() for name in COMPILED}


def _platform() -> str:
    return f"{sys.implementation.cache_tag}{sysconfig.get_config_var('EXT_SUFFIX')}"


def status(package_dir: Path = _PACKAGE_DIR) -> tuple[bool, str]:
    """Whether the compiled modules may be used, and why (or why not)."""
    if os.environ.get(_OFF, "") not in ("", "0"):
        return False, f"{_OFF} is set"
    build_dir = package_dir / BUILD_DIR.name
    try:
        manifest = json.loads((build_dir / _MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False, "not built (llmbasedos native build)"
    except (OSError, ValueError) as exc:
        return False, f"unreadable manifest: {exc}"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sources"), dict):
        return False, "unreadable manifest: not a build manifest"
    if manifest.get("platform") != _platform():
        return False, "built for another Python"
    try:
        current = _sources(package_dir)
    except OSError as exc:
        return False, f"a source cannot be read: {exc}"
    built = manifest["sources"]
    stale = sorted(name for name in COMPILED if built.get(name) != current[name])
    if stale:
        return False, f"sources changed since the build: {', '.join(stale)}"
    return True, f"compiled ({len(COMPILED)} modules)"


_decision = (False, "undecided: llmbasedos.gateway is not imported")


def search_path(package_path: list[str]) -> list[str]:
    """The gateway package's `__path__`: the build first when it matches the sources, else unchanged."""
    global _decision
    _decision = status()
    return [str(BUILD_DIR), *package_path] if _decision[0] else package_path


def decision() -> str:
    """What this process runs, as decided when `llmbasedos.gateway` was imported: compiled, or why not."""
    return _decision[1]


def build(package_dir: Path = _PACKAGE_DIR) -> Path:
    """Compile the modules of COMPILED with mypyc and put them in place of any earlier build, whole or not at all.

    mypyc names modules after their paths, so it works on a copy of the package laid out as `llmbasedos/`
    (the source tree calls it `llmbasedos_src/`). Needs mypy (which carries mypyc), setuptools and a C compiler.
    """
    from mypyc.build import mypycify  # only the build needs mypyc
    from setuptools import setup

    target = package_dir / BUILD_DIR.name
    with tempfile.TemporaryDirectory(prefix="llmbasedos-native-") as tmp:
        work = Path(tmp)
        shutil.copytree(package_dir.parent, work / "llmbasedos",
                        ignore=shutil.ignore_patterns("__pycache__", BUILD_DIR.name, ".compiled-*", "*.so", "static"))
        hashes = _sources(work / "llmbasedos" / "gateway")  # of what is compiled: a later edit shows as stale
        out = work / "out"
        cwd = os.getcwd()
        os.chdir(work)
        try:
            extensions = mypycify(["--ignore-missing-imports",
                                   *(f"llmbasedos/gateway/{name}.py" for name in COMPILED)],
                                  group_name=_GROUP, opt_level="3")
            setup(name="llmbasedos-native", ext_modules=extensions,
                  script_args=["--quiet", "build_ext", "--build-lib", str(out), "--build-temp", str(work / "tmp")])
        finally:
            os.chdir(cwd)
        staged = Path(tempfile.mkdtemp(prefix=".compiled-", dir=package_dir))
        try:
            for lib in (out / "llmbasedos" / "gateway").glob("*.so"):
                shutil.copy2(lib, staged / lib.name)
            manifest: dict[str, Any] = {"platform": _platform(), "sources": hashes}
            (staged / _MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            old = package_dir / ".compiled-old"
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                target.rename(old)
            staged.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
    return target


def register(subparsers: Any) -> None:
    """`llmbasedos native build|status`."""
    parser = subparsers.add_parser("native", help="compile the gateway's per-call modules (mypyc), or say if "
                                   "they are used", description="build: compile them when a source changed; "
                                   "status: whether the gateway runs them compiled, and why not.")
    parser.add_argument("action", choices=["build", "status"])
    parser.set_defaults(func=_command)


def _command(args: Any) -> int:
    if args.action == "build" and not status()[0]:
        build()
    usable, why = status()
    print(f"llmbasedos.gateway: {why}")
    return 0 if usable or args.action == "status" else 1
