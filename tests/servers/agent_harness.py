"""A real stack for the agent tests: gateway + fs server + agent server, and a loopback HTTP server.

    stack = AgentStack(workflows={"wf.yaml": "..."}, agent_yaml="...")   # started processes
    async with stack.client() as c:                                     # owner over /ws
        run = await c.call("mcp.agent.runWorkflow", {"workflow_id": "wf"})
        status = await stack.wait_done(c, run["execution_id"])
    stack.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.gateway.harness import BACKENDS, Env, GatewayProcess, WsClient, wait_until
from tests.support.procs import ServerHandle, start_server

__all__ = ["AgentStack", "LoopbackHTTP", "TIERS"]

TIERS = """
FREE:
  allowed_capabilities: ['*']
  rate_limit_requests: 100000
  requests_per_day: null
  llm_access: true
  allowed_llm_models: ['*']
  max_tokens_per_request: null
  max_tokens_per_day: null
"""

FINAL = ("succeeded", "failed", "stopped", "interrupted")


class LoopbackHTTP:
    """A real HTTP server on 127.0.0.1: /json answers JSON, /flaky/<key>/<n> fails n times first, /slow waits
    until released (or 60 s), /hook records POSTed JSON bodies."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.posted: list[Any] = []
        self.release = threading.Event()
        self.slow_started = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                if parts[0] == "json":
                    self._answer(200, {"answer": 42, "items": [1, 2, 3]})
                elif parts[0] == "flaky":
                    ok = outer.hits[self.path] > int(parts[2])
                    self._answer(200 if ok else 503, {"try": outer.hits[self.path]})
                elif parts[0] == "slow":
                    outer.slow_started.set()
                    outer.release.wait(60)
                    with contextlib.suppress(OSError):
                        self._answer(200, {"slow": True})
                else:
                    self._answer(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                outer.posted.append(json.loads(self.rfile.read(length) or b"null"))
                self._answer(200, {"received": True})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class AgentStack:
    def __init__(self, workflows: dict[str, str], agent_yaml: str = "", *, tiers: str = TIERS,
                 llm_models: str | None = None, workflows_dir: Path | None = None) -> None:
        self.env = Env()
        self.http = LoopbackHTTP()
        try:
            self.env.set_tiers(tiers)
            if llm_models is not None:
                (self.env.config_dir / "llm_models.yaml").write_text(llm_models, encoding="utf-8")
            self.root = self.env.state / "files"
            self.root.mkdir()
            self.workflows = workflows_dir or self.env.state / "workflows"
            self.workflows.mkdir(exist_ok=True)
            for name, text in workflows.items():
                self.write_workflow(name, text)
            (self.env.config_dir / "agent.yaml").write_text(agent_yaml.replace("{port}", str(self.http.port)),
                                                            encoding="utf-8")
            self.gw: GatewayProcess = self.env.start_gateway()
            self.fs = self._start("fs", LLMBDO_VIRTUAL_ROOT=str(self.root))
            self.agent = self.start_agent()
            asyncio.run(self.wait_routed())
        except BaseException:
            self.close()
            raise

    def _start(self, name: str, **env: str) -> ServerHandle:
        handle = start_server(name, {**self.env.env, **env})
        self.env.backends.append(handle)
        return handle

    def start_routed(self, name: str, **env: str) -> ServerHandle:
        """Start a backend and wait until the gateway lists its methods, so a workflow never races discovery."""
        handle = self.env.start_backend(name, **env) if name in BACKENDS else self._start(name, **env)

        async def wait() -> None:
            async with WsClient.connect(self.gw.ws_url, self.gw.token) as c:
                async def listed() -> bool:
                    services = await c.call("mcp.listCapabilities")
                    return any(s["service_name"] == name for s in services)
                await wait_until(listed, what=f"the {name} service routed by the gateway")

        asyncio.run(wait())
        return handle

    def start_agent(self) -> ServerHandle:
        return self._start("agent", LLMBDO_WORKFLOWS_DIR=str(self.workflows))

    def create_token(self, name: str, *allow: str) -> str:
        """`llmbasedos token create NAME --allow ...`, as a person would; returns the token it prints."""
        out = subprocess.run([sys.executable, "-m", "llmbasedos.appliance.cli", "token", "create", name, "--state-dir",
                              str(self.env.state), "--allow", *allow], env=self.env.env, capture_output=True,
                             text=True, check=True, timeout=60)
        return out.stdout.strip().splitlines()[-1]

    def update_token(self, name: str, *args: str) -> None:
        """`llmbasedos token update NAME ...` while the stack runs."""
        subprocess.run([sys.executable, "-m", "llmbasedos.appliance.cli", "token", "update", name, *args, "--state-dir",
                        str(self.env.state)], env=self.env.env, capture_output=True, text=True, check=True,
                       timeout=60)

    def write_workflow(self, name: str, text: str) -> None:
        (self.workflows / name).write_text(text.replace("{port}", str(self.http.port)), encoding="utf-8")

    async def wait_routed(self) -> None:
        async with WsClient.connect(self.gw.ws_url, self.gw.token) as c:
            await wait_until(lambda: _routed(c), what="the agent and fs services routed by the gateway")

    @contextlib.asynccontextmanager
    async def client(self, token: str | None = None) -> AsyncIterator[WsClient]:
        async with WsClient.connect(self.gw.ws_url, token or self.gw.token) as c:
            yield c

    async def run(self, c: WsClient, workflow_id: str, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        started = await c.call("mcp.agent.runWorkflow", {"workflow_id": workflow_id, "inputs": inputs or {}})
        return await self.wait_done(c, started["execution_id"])

    @staticmethod
    async def wait_done(c: WsClient, execution_id: str, timeout: float = 60.0) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            status: dict[str, Any] = await c.call("mcp.agent.getWorkflowStatus", {"execution_id": execution_id})
            return status if status["state"] in FINAL else None

        result: dict[str, Any] = await wait_until(done, timeout, what=f"execution {execution_id} to end")
        return result

    def close(self) -> None:
        self.http.close()
        self.env.close()


async def _routed(c: WsClient) -> bool:
    try:
        await c.call("mcp.agent.listWorkflows")
        await c.call("mcp.fs.stat", {"path": "/"})
    except Exception:
        return False
    return True

