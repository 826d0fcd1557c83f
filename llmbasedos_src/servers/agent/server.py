"""The agent server: YAML workflows run for the client that starts them.

    LLMBDO_WORKFLOWS_DIR      the workflows directory (default: <config_dir>/workflows)
    LLMBDO_AGENT_HTTP_ALLOW   comma list of hosts http steps may reach (added to agent.yaml's http.allow_hosts)
    LLMBDO_GATEWAY_SOCKET     the gateway's UNIX socket (default: <run_dir>/gateway.sock)
    LLMBDO_AGENT_KEEP_RUNS    finished executions kept (default: 1000; older ones are deleted at start)
    LLMBDO_AGENT_MAX_RUNS, LLMBDO_AGENT_MAX_RUNS_PER_CLIENT, LLMBDO_AGENT_MAX_DEPTH, LLMBDO_AGENT_MAX_CHILDREN,
    LLMBDO_AGENT_MAX_STRING, LLMBDO_AGENT_MAX_RENDER_SECONDS   bounds on runs and templates (see config.py)

Configuration: `<config_dir>/agent.yaml` (see config.py). Executions: `<data_dir>/agent/executions.db`.

Identity: the gateway forwards who made each call (`ctx.caller`). A run remembers that client's id and every
`call`/`llm` step goes back through the gateway as that client, with its rights and limits and no more.
A client sees and stops its own executions only; the owner sees all.

Bounds: runs in flight per client and in total, and the depth and size of the tree of runs a run starts
(`workflow` steps, and `mcp.agent.runWorkflow` called by a run, which the gateway hands back with the
calling run's id in `caller.run`): see runs.py. A refusal names the setting that would allow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any, ClassVar

from llmbasedos.backend.server import CallContext, MCPServer, method
from llmbasedos.protocol import errors
from llmbasedos.protocol.caller import Caller
from llmbasedos.servers.agent.config import AgentConfig, ConfigError
from llmbasedos.servers.agent.engine import Engine, validate_inputs
from llmbasedos.servers.agent.gateway_client import GatewayClient
from llmbasedos.servers.agent.runs import LiveRuns
from llmbasedos.servers.agent.store import LIVE_STATES, ExecutionRecord, ExecutionStore
from llmbasedos.servers.agent.templating import Templater
from llmbasedos.servers.agent.workflow import Workflow, WorkflowLibrary
from llmbasedos.settings import Settings

__all__ = ["AgentServer"]


def _who(ctx: CallContext) -> tuple[str | None, str | None, bool]:
    """(client id, client name, is owner) of the call (the rule is llmbasedos.protocol.caller's)."""
    caller = Caller.of(ctx.caller)
    return caller.client_id, caller.name, caller.is_owner


def _parent_run(ctx: CallContext) -> str | None:
    """The execution whose step made this call, as the gateway's UNIX door passed it on; None for a client."""
    run = ctx.caller.get("run") if isinstance(ctx.caller, dict) else None
    if run is not None and not isinstance(run, str):
        raise errors.InvalidRequest('"caller.run" must be an execution id')
    return run


class AgentServer(MCPServer):
    service_name: ClassVar[str] = "agent"
    caps_file: ClassVar[Path] = Path(__file__).with_name("caps.json")

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        try:
            self.config = AgentConfig.load(self.settings)
        except ConfigError as exc:
            self.log.error("refusing to start: %s", exc)
            raise SystemExit(2) from None
        self.templater = Templater(max_size=self.config.max_string, max_seconds=self.config.max_render_seconds)
        self.live = LiveRuns(self.config)
        self.library = WorkflowLibrary(self.config.workflows_dir, self.templater)
        self.gateway = GatewayClient(self.config.gateway_socket)
        self.store: ExecutionStore | None = None
        self.engine: Engine | None = None
        self._runs: dict[str, asyncio.Task[None]] = {}

    async def on_start(self) -> None:
        self.store = ExecutionStore(self.settings.data_dir / "agent" / "executions.db")
        marked = self.store.mark_interrupted(time.time())
        self.store.prune(max(1, int(os.environ.get("LLMBDO_AGENT_KEEP_RUNS", "1000"))))
        if marked:
            self.log.warning("%d run(s) were in flight when the agent last stopped: marked interrupted", marked)
        self.engine = Engine(self.config, self.gateway, self.store, self.templater, self._workflows, self.live)
        _, problems = self.library.scan()
        self.log.info("workflows directory %s: %d problem file(s)", self.config.workflows_dir.name, len(problems))

    async def on_stop(self) -> None:
        if self.engine is not None:
            self.engine.shutting_down = True
        tasks = list(self._runs.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self.gateway.close()
        self.templater.close()
        if self.store is not None:
            self.store.close()

    def _workflows(self) -> dict[str, Workflow]:
        return self.library.scan()[0]

    def _record(self, execution_id: str, ctx: CallContext) -> ExecutionRecord:
        assert self.store is not None
        rec = self.store.get(execution_id)
        client_id, _, owner = _who(ctx)
        if rec is None or (not owner and rec.client_id != client_id):
            raise errors.NotFound(f"No execution {execution_id}")
        return rec

    # -- methods -------------------------------------------------------------------------------------

    @method("mcp.agent.listWorkflows")
    async def list_workflows(self, params: dict[str, Any], ctx: CallContext) -> Any:
        workflows, problems = self.library.scan()
        return {"workflows": [w.describe() for w in sorted(workflows.values(), key=lambda w: w.id)],
                "errors": problems}

    @method("mcp.agent.getWorkflow")
    async def get_workflow(self, params: dict[str, Any], ctx: CallContext) -> Any:
        workflow = self._workflows().get(params["workflow_id"])
        if workflow is None:
            raise errors.NotFound(f"No workflow {params['workflow_id']}")
        return workflow.describe(full=True)

    @method("mcp.agent.runWorkflow")
    async def run_workflow(self, params: dict[str, Any], ctx: CallContext) -> Any:
        assert self.store is not None and self.engine is not None
        workflows, problems = self.library.scan()
        wid = params["workflow_id"]
        workflow = workflows.get(wid)
        if workflow is None:
            broken = next((p["error"] for p in problems if Path(p["file"]).stem == wid), None)
            if broken is not None:
                raise errors.InvalidParams(f"Workflow {wid} cannot be run: {broken}")
            raise errors.NotFound(f"No workflow {wid}")
        inputs = validate_inputs(workflow, params.get("inputs", {}))
        client_id, name, _ = _who(ctx)
        rec = ExecutionRecord(id="x_" + secrets.token_hex(8), workflow_id=wid, state="pending",
                              created_at=time.time(), client_id=client_id, client_name=name)
        self.live.admit(rec.id, client_id, _parent_run(ctx))  # a refusal leaves no record behind
        try:
            self.store.save(rec)
        except BaseException:
            self.live.end(rec.id)
            raise
        task = asyncio.get_running_loop().create_task(self.engine.run(rec, workflow, inputs, client_id))
        self._runs[rec.id] = task
        task.add_done_callback(lambda t, rid=rec.id: self._ended(rid, t))  # type: ignore[misc]
        self.log.info("run %s of workflow %s started", rec.id, wid)
        return {"execution_id": rec.id, "workflow_id": wid, "state": rec.state}

    def _ended(self, execution_id: str, task: asyncio.Task[None]) -> None:
        self._runs.pop(execution_id, None)
        self.live.end(execution_id)
        if task.cancelled() and self.store is not None:
            # Cancelled before its first step ran: the engine never saw it, so say here how it ended.
            rec = self.store.get(execution_id)
            if rec is not None and rec.state in LIVE_STATES:
                shutting_down = self.engine is not None and self.engine.shutting_down
                rec.state = "interrupted" if shutting_down else "stopped"
                rec.ended_at = time.time()
                self.store.save(rec)
            return
        if not task.cancelled() and task.exception() is not None:
            self.log.error("run %s ended with an unexpected error", execution_id, exc_info=task.exception())

    @method("mcp.agent.getWorkflowStatus")
    async def get_status(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self._record(params["execution_id"], ctx).to_dict()

    @method("mcp.agent.stopWorkflow")
    async def stop_workflow(self, params: dict[str, Any], ctx: CallContext) -> Any:
        rec = self._record(params["execution_id"], ctx)
        task = self._runs.get(rec.id)
        if task is None or rec.state not in LIVE_STATES:
            return {"execution_id": rec.id, "stopped": False, "state": rec.state}
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task}, timeout=10)
        rec = self._record(rec.id, ctx)
        return {"execution_id": rec.id, "stopped": rec.state == "stopped", "state": rec.state}

    @method("mcp.agent.listExecutions")
    async def list_executions(self, params: dict[str, Any], ctx: CallContext) -> Any:
        assert self.store is not None
        client_id, _, owner = _who(ctx)
        records = self.store.list(workflow_id=params.get("workflow_id"), state=params.get("state"),
                                  client_id=None if owner else client_id, limit=params.get("limit", 50))
        return {"executions": [r.to_dict(with_log=False) for r in records]}


logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry full URLs with query strings
