"""A real gateway with a real fs server (over a small tree of files) and the echo server, for `/mcp` tests.

    stack = McpStack.start()          # python -m llmbasedos.gateway + llmbasedos.servers.fs + echo server
    stack.url                         # http://127.0.0.1:<port>/mcp
    stack.url_with_token              # the same with ?token=<owner token>
    stack.close()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.gateway.harness import Env, GatewayProcess
from tests.support.procs import start_server

__all__ = ["McpStack", "FILES"]

FILES: dict[str, bytes] = {
    "hello.txt": b"hello world\n",
    "docs/a.md": b"# A\n\nSome notes.\n",
    "docs/deep/b.txt": b"deeper\n",
    "bin.dat": bytes(range(256)),
}


class McpStack:
    def __init__(self, env: Env, gateway: GatewayProcess, root: Path) -> None:
        self.env = env
        self.gateway = gateway
        self.root = root

    @classmethod
    def start(cls, **gateway_env: str) -> McpStack:
        env = Env()
        try:
            root = env.state / "files"
            for rel, data in FILES.items():
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            fs = start_server("fs", {**env.env, "LLMBDO_VIRTUAL_ROOT": str(root)})
            env.backends.append(fs)
            env.start_backend("echo")
            gateway = env.start_gateway(**gateway_env)
        except BaseException:
            env.close()
            raise
        return cls(env, gateway, root)

    @property
    def token(self) -> str:
        return self.gateway.token

    @property
    def url(self) -> str:
        return self.gateway.url + "/mcp"

    @property
    def url_with_token(self) -> str:
        return f"{self.url}?token={self.token}"

    def auth(self, **extra: str) -> dict[str, Any]:
        return {"authorization": f"Bearer {self.token}", **extra}

    def close(self) -> None:
        self.env.close()
