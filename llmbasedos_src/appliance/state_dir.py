"""The state directory `llmbasedos up` runs the appliance in: where it is, the layout `up` recorded in it
(`<run dir>/appliance.json`), its directories, and the lock that keeps two commands from racing on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from llmbasedos.appliance.cli_errors import CLIError
from llmbasedos.appliance.supervisor_config import Layout
from llmbasedos.settings import default_state_dir

__all__ = ["STATE_FILE", "resolve_state_dir", "layout_for", "locked", "make_dirs"]

# What `up` recorded of the run (ports, user files, python), in the run dir.
STATE_FILE = "appliance.json"


def resolve_state_dir(arg: str | None) -> Path:
    path = Path(arg).expanduser() if arg else default_state_dir()
    return Path(os.path.abspath(path))


def layout_for(state_dir: Path) -> Layout:
    """The layout `up` recorded for this state dir, or the default one when nothing was recorded."""
    base = Layout.for_state_dir(state_dir)
    try:
        saved = json.loads((base.run_dir / STATE_FILE).read_text(encoding="utf-8"))
        return Layout.for_state_dir(
            state_dir,
            user_files=Path(saved["user_files"]),
            gateway_port=int(saved["gateway_port"]),
            gateway_host=str(saved["gateway_host"]),
            llm_local_port=int(saved["llm_local_port"]),
            python=str(saved["python"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return base


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    # Two `up`s (or an `up` and a `down`) at once on one state dir would race on supervisord's socket.
    fd = os.open(state_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def make_dirs(layout: Layout) -> None:
    for path in (layout.state_dir, layout.run_dir, layout.data_dir, layout.log_dir, layout.config_dir):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.is_dir():
            raise CLIError(f"{path} exists and is not a directory")
    # The run dir holds sockets that grant access to everything: keep it to this user.
    os.chmod(layout.run_dir, 0o700)
