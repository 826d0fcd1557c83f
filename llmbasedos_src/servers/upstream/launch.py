"""The launcher every stdio upstream server runs under: `python -m llmbasedos.servers.upstream.launch`.

    python -m llmbasedos.servers.upstream.launch --parent PID --keep NAME,... -- COMMAND [ARG...]

The SDK starts each stdio server in a session of its own, so a server and everything it spawns (`npx` starts
`node`, which may start more) form one process group, and the SDK kills that group when it closes a session.
What the SDK cannot do is outlive its own death: after a kill -9 of the upstream program nobody would kill the
group, and MetaMCP's users found thousands of such orphans. The launcher closes that gap. It asks the kernel
for a signal when its parent dies (PR_SET_PDEATHSIG), runs the server as its child in the same group, sharing
its stdin and stdout (nothing is copied, nothing slows down), and on that signal, or on SIGTERM, ends the
whole group: SIGTERM first, SIGKILL a moment later.

It also gives the server a clean environment: PATH, HOME and the variables its registry entry declares
(`--keep`), never the appliance's own settings or secrets.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from types import FrameType

__all__ = ["BASE_ENV", "child_env", "main"]

BASE_ENV = ("PATH", "HOME")
_PR_SET_PDEATHSIG = 1
_GRACE = 1.0  # seconds between SIGTERM and SIGKILL to the group


def child_env(environ: dict[str, str], keep: list[str]) -> dict[str, str]:
    """The environment the server gets: PATH, HOME and the declared names, nothing else."""
    return {k: environ[k] for k in (*BASE_ENV, *keep) if k in environ}


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _end_group(child: subprocess.Popen[bytes]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgid(0), signal.SIGTERM)
    deadline = time.monotonic() + _GRACE
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # The server may be gone while something it started is not: the group goes, the launcher with it.
    os.killpg(os.getpgid(0), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmbasedos.servers.upstream.launch")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--keep", default="")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    _die_with_parent()
    if os.getppid() != args.parent:
        return 1  # the parent died before the kernel was asked to tell us
    keep = [k for k in args.keep.split(",") if k]
    try:
        child = subprocess.Popen(command, env=child_env(dict(os.environ), keep))
    except OSError as exc:
        print(f"cannot start {command[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127

    def stop(signum: int, frame: FrameType | None) -> None:
        _end_group(child)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, stop)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
