"""The llm-local program's command line and model handling (the server itself runs in test_llm_local.py)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from llmbasedos.servers.llm_local.program import ensure_model, server_command
from llmbasedos.settings import Settings


def _settings(d: Path) -> Settings:
    return Settings(state_dir=d, run_dir=d, data_dir=d, log_dir=d, config_dir=d, virtual_root=d)


def test_server_command_serves_loopback_on_the_configured_port(tmp_path: Path) -> None:
    os.environ["LLMBDO_LLM_LOCAL_PORT"] = "18123"
    try:
        argv = server_command(tmp_path / "m.gguf")
    finally:
        del os.environ["LLMBDO_LLM_LOCAL_PORT"]
    args = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert argv[1:3] == ["-m", "llmbasedos.servers.llm_local.serve"]
    assert args["--host"] == "127.0.0.1" and args["--port"] == "18123"
    assert args["--chat_format"] == "gemma" and args["--model"] == str(tmp_path / "m.gguf")
    assert args["--interrupt_requests"] == "False" and args["--embedding"] == "False"


def test_bad_settings_are_named(tmp_path: Path) -> None:
    os.environ["LLMBDO_LLM_LOCAL_THREADS"] = "many"
    try:
        with pytest.raises(SystemExit, match="LLMBDO_LLM_LOCAL_THREADS"):
            server_command(tmp_path / "m.gguf")
    finally:
        del os.environ["LLMBDO_LLM_LOCAL_THREADS"]
    os.environ["LLMBDO_LLM_LOCAL_MODEL"] = str(tmp_path / "missing.gguf")
    try:
        with pytest.raises(SystemExit, match="LLMBDO_LLM_LOCAL_MODEL"):
            ensure_model(_settings(tmp_path))
    finally:
        del os.environ["LLMBDO_LLM_LOCAL_MODEL"]


def test_an_assembled_model_is_reused_not_rebuilt() -> None:
    d = Path(tempfile.mkdtemp(prefix="llmp", dir="/tmp"))
    target = d / "models" / "gemma-3-270m-q4_k_m.gguf"
    target.parent.mkdir()
    target.write_bytes(b"GGUF already here")
    assert ensure_model(_settings(d)) == target
    assert target.read_bytes() == b"GGUF already here"
    assert [p.name for p in target.parent.iterdir()] == [target.name]

