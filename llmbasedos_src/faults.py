"""A fault that stops a program and that restarting it cannot mend (a corrupt database): the exit status that
tells supervisord so, and the file that tells `llmbasedos up` and `status` why.

The program writes `<run dir>/<program>.fault.json` ({"program", "pid", "message", "file", "identity"}) and
exits with `EXIT_NO_RETRY`. supervisord restarts a program only on an exit status other than this one
(`autorestart=unexpected`, `exitcodes=78`), so the program ends FATAL (it failed while starting) or EXITED,
never in a restart loop. When supervisord tries the start again (it does a few times when the program ends
within `startsecs`), the program finds its own report of the same fault on the same, unchanged file and
exits without saying it again: the log holds the message once. A start that gets past the fault removes
the file.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["EXIT_NO_RETRY", "clear_fault", "read_faults", "record_fault"]

EXIT_NO_RETRY = 78  # EX_CONFIG of sysexits.h: the setup is wrong, trying again cannot help
_SUFFIX = ".fault.json"


def _path(run_dir: Path, program: str) -> Path:
    return run_dir / f"{program}{_SUFFIX}"


def _identity(file: Path) -> list[int] | None:
    try:
        st = file.stat()
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def record_fault(run_dir: Path, program: str, message: str, file: Path) -> bool:
    """Write the fault report; False when this very fault on this unchanged file was already reported."""
    path = _path(run_dir, program)
    identity = _identity(file)
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("message") == message and old.get("identity") == identity:
            return False
    except (OSError, ValueError, AttributeError):
        pass
    report = {"program": program, "pid": os.getpid(), "message": message, "file": str(file), "identity": identity}
    with contextlib.suppress(OSError):  # the run dir may be unwritable: the log still has the message
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(report) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    return True


def clear_fault(run_dir: Path, program: str) -> None:
    with contextlib.suppress(OSError):
        _path(run_dir, program).unlink()


def read_faults(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The faults reported in `run_dir`, by program name."""
    out: dict[str, dict[str, Any]] = {}
    try:
        names = sorted(os.listdir(run_dir))
    except OSError:
        return out
    for name in names:
        if not name.endswith(_SUFFIX) or name.startswith("."):
            continue
        try:
            report = json.loads((run_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and isinstance(report.get("message"), str):
            out[name[: -len(_SUFFIX)]] = report
    return out
