"""Running a workflow: steps in order, with templating, retries, timeouts, error routes and a per-step log.

Every `call` and `llm` step goes through the gateway *for the client that started the run* (see
gateway_client.py), so a workflow can never do more than its caller. Stopping a run cancels its task, which
cancels the step in flight — a gateway call included (the gateway passes the cancellation upstream).

The template context of a step: `inputs`, `steps` (outputs by step id), `vars` (from `set` steps and
`save_as`, also available by their bare names), `previous` (the output of the step just before), `item` (or
the `as` name) and `index` inside a foreach, `error` (the last step error message, for error routes),
`execution_id` and `workflow_id`.

A run shares the agent's event loop with every other caller: each step begins by yielding to it, and
templates render on worker threads (see templating.py), so a 100,000-item foreach of `set` steps never
stalls the others. `workflow` steps take a level and a descendant of the run's tree (see runs.py), and
gateway calls say which run makes them (`caller.run`), so runs started by runs are bounded the same way.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from llmbasedos.protocol import errors
from llmbasedos.servers.agent.config import AgentConfig
from llmbasedos.servers.agent.gateway_client import GatewayClient
from llmbasedos.servers.agent.runs import LiveRuns
from llmbasedos.servers.agent.steps import StepFailed, http_request, post_webhook, run_docker
from llmbasedos.servers.agent.store import ExecutionRecord, ExecutionStore
from llmbasedos.servers.agent.templating import TemplateError, Templater
from llmbasedos.servers.agent.workflow import STEP_KINDS, Workflow, goto_target

__all__ = ["Engine", "RunState", "validate_inputs", "MAX_STEP_RUNS", "MAX_LOG"]

log = logging.getLogger("llmbasedos.agent.engine")

MAX_STEP_RUNS = 10000  # steps executed in one run, goto loops and foreach included
MAX_LOG = 1000
_MAX_BACKOFF = 60.0


def _apply_defaults(schema: Any, value: Any) -> Any:
    """Fill `default`s of object properties (recursively), the way a form would, before validation."""
    if not isinstance(schema, dict) or not isinstance(value, dict):
        return value
    props = schema.get("properties")
    if not isinstance(props, dict):
        return value
    out = dict(value)
    for name, sub in props.items():
        if not isinstance(sub, dict):
            continue
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if name in out:
            out[name] = _apply_defaults(sub, out[name])
    return out


def validate_inputs(workflow: Workflow, inputs: Any) -> dict[str, Any]:
    """The inputs with defaults applied; InvalidParams naming the fault when they do not fit the schema."""
    if inputs is None:
        inputs = {}
    filled = _apply_defaults(workflow.input_schema, inputs)
    validator: Draft202012Validator = workflow.validator or Draft202012Validator(workflow.input_schema)
    bad = best_match(validator.iter_errors(filled))
    if bad is not None:
        where = "inputs" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in bad.absolute_path)
        raise errors.InvalidParams(f"{where}: {bad.message}", {"workflow_id": workflow.id})
    if not isinstance(filled, dict):
        raise errors.InvalidParams("inputs must be an object", {"workflow_id": workflow.id})
    return filled


class _StepError(Exception):
    """A step failed (after its retries); the message is what the log and the run's error say."""


class _Goto(Exception):
    def __init__(self, target: str) -> None:
        self.target = target


@dataclass
class RunState:
    """One workflow's variables inside a run (a `workflow` step gets its own)."""

    workflow: Workflow
    inputs: dict[str, Any]
    depth: int = 0
    prefix: str = ""
    steps: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    previous: Any = None
    error: str | None = None

    def context(self, execution_id: str) -> dict[str, Any]:
        return {**self.vars, **self.locals, "inputs": self.inputs, "steps": self.steps, "vars": self.vars,
                "previous": self.previous, "error": self.error, "execution_id": execution_id,
                "workflow_id": self.workflow.id}


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, errors.RPCError):
        return f"{exc.message} (code {exc.code})"
    if isinstance(exc, TemplateError):
        return f"template refused: {exc}"
    return str(exc) or type(exc).__name__


class Engine:
    def __init__(self, config: AgentConfig, gateway: GatewayClient, store: ExecutionStore, templater: Templater,
                 workflows: Callable[[], dict[str, Workflow]], live: LiveRuns) -> None:
        self.config = config
        self.live = live
        self.gateway = gateway
        self.store = store
        self.templater = templater
        self.workflows = workflows
        self.shutting_down = False  # runs cancelled from now on are interrupted, not stopped

    # -- a whole run ---------------------------------------------------------------------------------

    async def run(self, rec: ExecutionRecord, workflow: Workflow, inputs: dict[str, Any],
                  client_id: str | None) -> None:
        """Run to the end; the record is saved at every change. Cancellation means stopped."""
        runner = _Run(self, rec, client_id)
        rec.state = "running"
        rec.started_at = time.time()
        self.store.save(rec)
        state = RunState(workflow, inputs)
        try:
            await runner.steps(workflow.steps, state)
            rec.outputs = await runner.outputs(workflow, state)
            rec.state = "succeeded"
        except asyncio.CancelledError:
            rec.state = "interrupted" if self.shutting_down else "stopped"
            rec.error = "Stopped by request" if rec.state == "stopped" else "The agent server stopped"
            raise
        except _StepError as exc:
            rec.state = "failed"
            rec.error = str(exc)
        except Exception:
            log.exception("workflow run %s failed unexpectedly", rec.id)
            rec.state = "failed"
            rec.error = "Internal error"
        finally:
            rec.ended_at = time.time()
            rec.current_step = None
            self.store.save(rec)


class _Run:
    def __init__(self, engine: Engine, rec: ExecutionRecord, client_id: str | None) -> None:
        self.engine = engine
        self.rec = rec
        self.client_id = client_id
        self.step_runs = 0

    async def outputs(self, workflow: Workflow, state: RunState) -> Any:
        if workflow.outputs is None:
            return {sid: state.steps.get(sid) for sid in (s["id"] for s in workflow.steps) if sid in state.steps}
        try:
            return await self.render(workflow.outputs, state)
        except TemplateError as exc:
            raise _StepError(f"outputs: template refused: {exc}") from None

    def _log(self, entry: dict[str, Any]) -> dict[str, Any]:
        if len(self.rec.log) < MAX_LOG:
            self.rec.log.append(entry)
        elif len(self.rec.log) == MAX_LOG:
            self.rec.log.append({"step": "(log truncated)", "state": "truncated"})
        return entry

    async def steps(self, steps: list[dict[str, Any]], state: RunState) -> Any:
        index = 0
        last: Any = None
        positions = {s["id"]: i for i, s in enumerate(steps)}
        while index < len(steps):
            step = steps[index]
            try:
                last = await self.step(step, state)
            except _Goto as jump:
                index = positions[jump.target]
                continue
            index += 1
        return last

    async def step(self, step: dict[str, Any], state: RunState) -> Any:
        # Every step yields to the loop first, so steps that never wait (set, if, log, a foreach's items)
        # cannot keep the agent's other callers waiting; a stop request lands here too.
        await asyncio.sleep(0)
        self.step_runs += 1
        if self.step_runs > MAX_STEP_RUNS:
            raise _StepError(f"more than {MAX_STEP_RUNS} steps executed in one run (a goto loop?)")
        sid = step["id"]
        kind = next(k for k in STEP_KINDS if k in step)
        name = state.prefix + sid
        entry = self._log({"step": name, "kind": kind, "state": "running", "attempts": 0,
                           "started_at": round(time.time(), 3)})
        self.rec.current_step = name
        self.engine.store.save(self.rec)
        retry = step.get("retry") or {}
        attempts = 1 + int(retry.get("count", 0))
        backoff = float(retry.get("backoff", 0))
        timeout = step.get("timeout")
        error: BaseException | None = None
        output: Any = None
        for attempt in range(attempts):
            entry["attempts"] = attempt + 1
            try:
                if timeout is not None:
                    try:
                        output = await asyncio.wait_for(self.execute(kind, step, state), float(timeout))
                    except TimeoutError:
                        raise StepFailed(f"timed out after {float(timeout):g} s") from None
                else:
                    output = await self.execute(kind, step, state)
                error = None
                break
            except asyncio.CancelledError:
                entry.update(state="stopped", ended_at=round(time.time(), 3))
                raise
            except _StepError as exc:
                error = exc  # a nested step failed past its own retries: this step's on_error decides
                break
            except TemplateError as exc:
                error = exc
                break  # the same template fails the same way every time
            except (StepFailed, errors.RPCError) as exc:
                error = exc
            except Exception:
                log.exception("step %s of run %s failed unexpectedly", name, self.rec.id)
                error = _StepError("internal error")
                break
            if attempt + 1 < attempts and backoff > 0:
                await asyncio.sleep(min(_MAX_BACKOFF, backoff * (2 ** attempt)))
        entry["ended_at"] = round(time.time(), 3)
        if error is None:
            entry["state"] = "succeeded"
            state.steps[sid] = output
            state.previous = output
            if step.get("save_as"):
                state.vars[step["save_as"]] = output
            self.engine.store.save(self.rec)
            return output
        message = _describe_error(error)
        entry.update(state="failed", error=message)
        state.error = f"{name}: {message}"
        on_error = step.get("on_error", "fail")
        target = goto_target(step)
        self.engine.store.save(self.rec)
        if on_error == "continue":
            entry["state"] = "failed (continued)"
            state.steps[sid] = None
            state.previous = None
            return None
        if target is not None:
            entry["state"] = f"failed (goto {target})"
            raise _Goto(target)
        raise _StepError(f"step {name} failed: {message}")

    async def render(self, value: Any, state: RunState) -> Any:
        return await self.engine.templater.render_async(value, state.context(self.rec.id))

    async def truthy(self, value: Any, state: RunState) -> bool:
        return bool(await self.render(value, state))

    async def execute(self, kind: str, step: dict[str, Any], state: RunState) -> Any:
        config = self.engine.config
        body = step[kind]
        if kind == "call":
            params = await self.render(step.get("params", {}), state)
            if not isinstance(params, dict):
                raise StepFailed("params must render to a mapping")
            return await self.engine.gateway.call(self.client_id, body, params, run=self.rec.id)
        if kind == "llm":
            return await self.llm(body, state)
        if kind == "http":
            return await http_request(config, await self.render(body, state), step.get("timeout"))
        if kind == "n8n_webhook":
            return await post_webhook(config, await self.render(body, state), step.get("timeout"))
        if kind == "docker":
            return await run_docker(config, await self.render(body, state))
        if kind == "set":
            values: dict[str, Any] = {}
            for key, value in body.items():
                values[key] = await self.render(value, state)
                state.vars[key] = values[key]  # later entries of the same step may use earlier ones
            return values
        if kind == "log":
            message = await self.render(body, state)
            log.info("workflow %s: %s", state.workflow.id, str(message)[:500])
            return message
        if kind == "sleep":
            seconds = await self.render(body, state)
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 86400:
                raise StepFailed("sleep needs a number of seconds from 0 to 86400")
            await asyncio.sleep(seconds)
            return seconds
        if kind == "foreach":
            return await self.foreach(step, state)
        if kind == "if":
            branch = "then" if await self.truthy(body, state) else "else"
            if branch not in step:
                return None
            return await self.steps(step[branch], state)
        if kind == "workflow":
            return await self.sub_workflow(step, state)
        raise StepFailed(f"unknown step kind {kind!r}")  # pragma: no cover - workflow.py rejects these

    async def llm(self, body: Any, state: RunState) -> Any:
        spec = await self.render(body, state)
        if isinstance(spec, str):
            spec = {"prompt": spec}
        messages = spec.get("messages")
        if messages is None:
            messages = []
            if spec.get("system"):
                messages.append({"role": "system", "content": str(spec["system"])})
            messages.append({"role": "user", "content": str(spec["prompt"])})
        params: dict[str, Any] = {"messages": messages}
        if spec.get("model"):
            params["model"] = spec["model"]
        if spec.get("options"):
            params["options"] = spec["options"]
        result = await self.engine.gateway.call(self.client_id, "mcp.llm.chat", params, run=self.rec.id)
        try:
            return result["message"]["content"]
        except (KeyError, TypeError):
            raise StepFailed("the LLM answer has no message") from None

    async def foreach(self, step: dict[str, Any], state: RunState) -> list[Any]:
        items = await self.render(step["foreach"], state)
        if isinstance(items, dict):
            items = list(items.items())
        if not isinstance(items, list):
            raise StepFailed(f"foreach needs a list, got {type(items).__name__}")
        name = step.get("as", "item")
        results: list[Any] = []
        saved = dict(state.locals)
        try:
            for i, item in enumerate(items):
                state.locals[name] = item
                state.locals["index"] = i
                results.append(await self.steps(step["do"], state))
                if "until" in step and await self.truthy(step["until"], state):
                    break
        finally:
            state.locals = saved
        return results

    async def sub_workflow(self, step: dict[str, Any], state: RunState) -> Any:
        target = self.engine.workflows().get(step["workflow"])
        if target is None:
            raise StepFailed(f"workflow {step['workflow']!r} not found (or its file is broken)")
        inputs = validate_inputs(target, await self.render(step.get("inputs", {}), state))
        self.engine.live.enter_workflow(self.rec.id)  # a level and a descendant of this run's tree, or refused
        try:
            sub = RunState(target, inputs, depth=state.depth + 1, prefix=f"{state.prefix}{step['id']}/")
            await self.steps(target.steps, sub)
            return await self.outputs(target, sub)
        finally:
            self.engine.live.leave_workflow(self.rec.id)

