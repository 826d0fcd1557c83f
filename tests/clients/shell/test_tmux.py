"""luca-shell as a person sees it: a real terminal (tmux) typing commands and reading the screen, against a real
gateway, fs server with the real embedding model, and the real local model streaming its answer."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.gateway.harness import Env, GatewayProcess
from tests.support.llama import LlamaServer, llama  # noqa: F401  (fixture)
from tests.support.procs import start_server

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.name = f"luca-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "160", "-y", "50",
                        f"env {exports} {command}"], check=True)

    def send(self, text: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", text], check=True)
        subprocess.run(["tmux", "send-keys", "-t", self.name, "Enter"], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-J", "-S", "-200", "-t", self.name],
                              capture_output=True, text=True, check=True).stdout

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared on the screen:\n{screen}")
            time.sleep(0.05)

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def terminal(llama: LlamaServer) -> Iterator[Tmux]:  # noqa: F811
    env = Env()
    root = env.state / "user_files"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "garden.md").write_text("Tomatoes need sun and regular watering in summer.\n")
    (root / "notes" / "taxes.md").write_text("File the income tax return before the end of April.\n")
    for i in range(40):
        (root / "notes" / f"misc{i}.txt").write_text(f"Miscellaneous note number {i} about nothing much.\n")
    tmux = None
    try:
        fs = start_server("fs", {**env.env, "LLMBDO_VIRTUAL_ROOT": str(root), "HF_HUB_OFFLINE": "1"})
        env.backends.append(fs)
        gw: GatewayProcess = env.start_gateway(LLMBDO_LLM_LOCAL_PORT=str(llama.port))
        command = f"{shlex.quote(sys.executable)} -m llmbasedos.clients.shell --url {gw.ws_url} --token {gw.token}"
        tmux = Tmux(command, {"LUCA_HISTORY": str(env.state / "history"), "TERM": "xterm-256color",
                              "PATH": os.environ.get("PATH", "")})
        yield tmux
    finally:
        if tmux is not None:
            tmux.kill()
        env.close()


def test_a_person_at_the_terminal(terminal: Tmux) -> None:
    tmux = terminal
    tmux.wait_for("luca:/>")
    tmux.send("ls /notes")
    tmux.wait_for("garden.md")

    tmux.send("index /notes")
    screen = tmux.wait_for('"total_files"', timeout=240)
    assert "indexing" in screen and "100%" in screen  # the progress bar ran to the end

    tmux.send('search "when do I have to send my tax papers" 2')
    screen = tmux.wait_for("preview", timeout=60)
    assert "when do I have to send" in screen, screen
    lines = screen[screen.index("when do I have to send"):].splitlines()
    first_hit = next(line for line in lines if ".md" in line or ".txt" in line)
    assert "taxes.md" in first_hit

    tmux.send('llm -n 48 "Write a short poem about the sea"')
    marker = "Write a short poem about the sea"
    tmux.wait_for(marker)
    lengths: list[int] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        screen = tmux.screen()
        after = screen[screen.rindex(marker) + len(marker):]
        answer = after.split("luca:/>")[0].strip()
        if answer and (not lengths or len(answer) != lengths[-1]):
            lengths.append(len(answer))
        if "luca:/>" in after:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the answer never finished:\n{tmux.screen()}")
    # The answer was seen growing on the screen: it streamed, it did not arrive in one piece.
    assert len(lengths) >= 2, lengths
