"""Process settings from `LLMBDO_*` environment variables, shared by every program of the appliance.

    LLMBDO_STATE_DIR     root of all state (default: the user's data dir, e.g. ~/.local/share/llmbasedos)
    LLMBDO_RUN_DIR       sockets and *.cap.json files            (default: <state>/run)
    LLMBDO_DATA_DIR      persistent data: indexes, SQLite, keys  (default: <state>/data)
    LLMBDO_LOG_DIR       program logs                             (default: <state>/logs)
    LLMBDO_CONFIG_DIR    lic.key, licence_tiers.yaml, ...         (default: <state>/config)
    LLMBDO_VIRTUAL_ROOT  the files the fs server exposes          (default: <state>/user_files)
    LLMBDO_LOG_LEVEL     DEBUG, INFO, WARNING, ERROR              (default: INFO)
    LLMBDO_LOG_FORMAT    json or text                              (default: text)
    LLMBDO_DEBUG         1 to check handler results against their result_schema
    LLMBDO_MAX_FRAME     frame size cap in bytes                   (default: 16 MiB)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_data_dir

from llmbasedos.protocol.framing import DEFAULT_MAX_FRAME

__all__ = ["Settings", "default_state_dir"]


def default_state_dir() -> Path:
    env = os.environ.get("LLMBDO_STATE_DIR")
    return Path(env) if env else Path(user_data_dir("llmbasedos", appauthor=False))


def _path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value) if value else default


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    run_dir: Path
    data_dir: Path
    log_dir: Path
    config_dir: Path
    virtual_root: Path
    log_level: str = "INFO"
    log_format: str = "text"
    debug: bool = False
    max_frame: int = DEFAULT_MAX_FRAME

    @classmethod
    def from_env(cls, state_dir: str | Path | None = None) -> Settings:
        """The settings from the environment; `state_dir` (a command's `--state-dir`) in place of
        LLMBDO_STATE_DIR when given."""
        state = Path(state_dir).expanduser().resolve() if state_dir is not None else default_state_dir()
        return cls(
            state_dir=state,
            run_dir=_path("LLMBDO_RUN_DIR", state / "run"),
            data_dir=_path("LLMBDO_DATA_DIR", state / "data"),
            log_dir=_path("LLMBDO_LOG_DIR", state / "logs"),
            config_dir=_path("LLMBDO_CONFIG_DIR", state / "config"),
            virtual_root=_path("LLMBDO_VIRTUAL_ROOT", state / "user_files"),
            log_level=os.environ.get("LLMBDO_LOG_LEVEL", "INFO").upper(),
            log_format=os.environ.get("LLMBDO_LOG_FORMAT", "text").lower(),
            debug=_truthy(os.environ.get("LLMBDO_DEBUG")),
            max_frame=int(os.environ.get("LLMBDO_MAX_FRAME", str(DEFAULT_MAX_FRAME))),
        )
