"""Workflow files: reading, checking and normalising them, and the library of a workflows directory.

The native format (YAML):

    id: summarise_folder
    name: Summarise a folder
    description: ...
    input_schema: {type: object, properties: {...}}     # JSON Schema, enforced, defaults applied
    steps:
      - id: files
        call: mcp.fs.list                                # any gateway method, named params
        params: {path: "{{ inputs.folder }}"}
      - id: summary
        llm: {messages: [{role: user, content: "..."}], options: {max_tokens: 64}}   # or llm: {prompt: "..."}
        retry: {count: 2, backoff: 0.5}
        timeout: 30
        on_error: continue                               # fail (default) | continue | {goto: <step id>}
        save_as: summary_text                            # also keep the output as vars.summary_text
    outputs: {summary: "{{ steps.summary }}"}            # optional; default: every top-level step's output

Step kinds: call, llm, http, set, foreach (+ do, as, and `until`: a condition checked after each item that
ends the loop early, for polling), if (+ then, else), workflow (+ inputs), log, sleep, and
when enabled in agent.yaml, docker and n8n_webhook. The original llmbasedos `simple_sequential` and
`mcp_sequential_agent` types are read too and turned into native steps (see `_from_simple_sequential` and
`_from_mcp_sequential`).

A file is checked when it is loaded: structure, unique step ids, goto targets, the input schema, and that
every template compiles. `WorkflowLibrary.scan()` re-reads only files whose mtime or size changed; a broken
file becomes an error entry and a log line, never an exception.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from llmbasedos.servers.agent.templating import TemplateError, Templater

__all__ = ["Workflow", "WorkflowError", "WorkflowLibrary", "parse_workflow", "STEP_KINDS", "LIST_KINDS"]

log = logging.getLogger("llmbasedos.agent.workflow")

STEP_KINDS = ("call", "llm", "http", "set", "foreach", "if", "workflow", "log", "sleep", "docker", "n8n_webhook")
LIST_KINDS = {"foreach": ("do",), "if": ("then", "else")}
_COMMON = {"id", "name", "description", "retry", "timeout", "on_error", "save_as"}
_EXTRA = {
    "call": {"params"},
    "foreach": {"do", "as", "until"},
    "if": {"then", "else"},
    "workflow": {"inputs"},
}
_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_MAX_FILE = 1 << 20
_MAX_STEPS = 500


class WorkflowError(ValueError):
    """A workflow file is not valid; the message names the file and the fault."""


@dataclass
class Workflow:
    id: str
    name: str
    description: str
    input_schema: dict[str, Any]
    steps: list[dict[str, Any]]
    outputs: dict[str, Any] | None
    source: str  # the file name, never a host path
    kind: str = "native"  # native | simple_sequential | mcp_sequential_agent
    validator: Draft202012Validator = field(repr=False, default=None)  # type: ignore[assignment]

    def describe(self, full: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "description": self.description,
                               "file": self.source, "type": self.kind, "input_schema": self.input_schema}
        if full:
            out["steps"] = self.steps
            out["outputs"] = self.outputs
        return out


def _kind_of(step: dict[str, Any], where: str) -> str:
    kinds = [k for k in STEP_KINDS if k in step]
    if len(kinds) != 1:
        raise WorkflowError(f"{where}: a step needs exactly one of {', '.join(STEP_KINDS)}"
                            + (f" (found {', '.join(kinds)})" if kinds else ""))
    return kinds[0]


def _check_number(value: Any, where: str, *, minimum: float = 0, maximum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum or (
            maximum is not None and value > maximum):
        bound = f" and at most {maximum:g}" if maximum is not None else ""
        raise WorkflowError(f"{where}: must be a number of at least {minimum:g}{bound}")


def _check_kind_body(kind: str, body: Any, step: dict[str, Any], where: str) -> None:
    if kind == "call":
        if not isinstance(body, str) or not body.startswith("mcp.") or body.count(".") < 2:
            raise WorkflowError(f"{where}.call: must be a method name like mcp.fs.read")
        if not isinstance(step.get("params", {}), (dict, str)):
            raise WorkflowError(f"{where}.params: must be a mapping")
    elif kind == "llm":
        if isinstance(body, str):
            return  # the prompt itself
        if not isinstance(body, dict) or not ({"messages", "prompt"} & set(body)):
            raise WorkflowError(f"{where}.llm: must be a prompt string or a mapping with 'messages' or 'prompt'")
        unknown = set(body) - {"messages", "prompt", "system", "model", "options"}
        if unknown:
            raise WorkflowError(f"{where}.llm: unknown keys {sorted(unknown)}")
    elif kind == "http":
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            raise WorkflowError(f"{where}.http: must be a mapping with a 'url'")
        unknown = set(body) - {"url", "method", "headers", "params", "json", "body"}
        if unknown:
            raise WorkflowError(f"{where}.http: unknown keys {sorted(unknown)}")
    elif kind == "set":
        if not isinstance(body, dict) or not body:
            raise WorkflowError(f"{where}.set: must be a non-empty mapping of names to values")
        for name in body:
            if not isinstance(name, str) or not _ID_RE.match(name):
                raise WorkflowError(f"{where}.set: {name!r} is not a valid name")
    elif kind == "foreach":
        if not isinstance(body, (str, list)):
            raise WorkflowError(f"{where}.foreach: must be a list or a template giving one")
        if not isinstance(step.get("as", "item"), str) or not _ID_RE.match(step.get("as", "item")):
            raise WorkflowError(f"{where}.as: must be a name")
        if "do" not in step:
            raise WorkflowError(f"{where}: a foreach step needs 'do' (a list of steps)")
    elif kind == "if":
        if "then" not in step:
            raise WorkflowError(f"{where}: an if step needs 'then' (a list of steps)")
    elif kind == "workflow":
        if not isinstance(body, str) or not _ID_RE.match(body):
            raise WorkflowError(f"{where}.workflow: must be a workflow id")
        if not isinstance(step.get("inputs", {}), (dict, str)):
            raise WorkflowError(f"{where}.inputs: must be a mapping")
    elif kind == "log":
        if not isinstance(body, str):
            raise WorkflowError(f"{where}.log: must be a message string")
    elif kind == "sleep":
        if not isinstance(body, str):
            _check_number(body, f"{where}.sleep", maximum=86400)
    elif kind == "docker":
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            raise WorkflowError(f"{where}.docker: must be a mapping with an 'image'")
        unknown = set(body) - {"image", "command", "environment"}
        if unknown:
            raise WorkflowError(f"{where}.docker: unknown keys {sorted(unknown)}")
        command = body.get("command", [])
        if not isinstance(command, (list, str)):
            raise WorkflowError(f"{where}.docker.command: must be a list of arguments")
        if not isinstance(body.get("environment", {}), dict):
            raise WorkflowError(f"{where}.docker.environment: must be a mapping")
    elif kind == "n8n_webhook":
        if not isinstance(body, dict) or not isinstance(body.get("webhook_url"), str):
            raise WorkflowError(f"{where}.n8n_webhook: must be a mapping with a 'webhook_url'")
        unknown = set(body) - {"webhook_url", "payload", "timeout_seconds"}
        if unknown:
            raise WorkflowError(f"{where}.n8n_webhook: unknown keys {sorted(unknown)}")
        if "timeout_seconds" in body:
            _check_number(body["timeout_seconds"], f"{where}.n8n_webhook.timeout_seconds", maximum=3600)


def _check_common(step: dict[str, Any], where: str) -> None:
    retry = step.get("retry")
    if retry is not None:
        if not isinstance(retry, dict) or set(retry) - {"count", "backoff"}:
            raise WorkflowError(f"{where}.retry: must be a mapping with 'count' and optional 'backoff'")
        count = retry.get("count", 0)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 20:
            raise WorkflowError(f"{where}.retry.count: must be an integer from 0 to 20")
        _check_number(retry.get("backoff", 0), f"{where}.retry.backoff", maximum=600)
    save_as = step.get("save_as")
    if save_as is not None and (not isinstance(save_as, str) or not _ID_RE.match(save_as)):
        raise WorkflowError(f"{where}.save_as: must be a name")
    if "timeout" in step:
        _check_number(step["timeout"], f"{where}.timeout", minimum=0.001, maximum=86400)
    on_error = step.get("on_error", "fail")
    if isinstance(on_error, dict):
        if set(on_error) != {"goto"} or not isinstance(on_error["goto"], str):
            raise WorkflowError(f"{where}.on_error: must be fail, continue or {{goto: <step id>}}")
    elif isinstance(on_error, str):
        if on_error not in ("fail", "continue") and not on_error.startswith("goto:"):
            raise WorkflowError(f"{where}.on_error: must be fail, continue or {{goto: <step id>}}")
    else:
        raise WorkflowError(f"{where}.on_error: must be fail, continue or {{goto: <step id>}}")


def goto_target(step: dict[str, Any]) -> str | None:
    on_error = step.get("on_error", "fail")
    if isinstance(on_error, dict):
        return str(on_error["goto"])
    if isinstance(on_error, str) and on_error.startswith("goto:"):
        return on_error[5:].strip()
    return None


class _Checker:
    def __init__(self, templater: Templater) -> None:
        self.templater = templater
        self.ids: set[str] = set()
        self.count = 0

    def steps(self, steps: Any, where: str) -> list[dict[str, Any]]:
        if not isinstance(steps, list) or not steps:
            raise WorkflowError(f"{where}: must be a non-empty list of steps")
        out: list[dict[str, Any]] = []
        level_ids: list[str] = []
        for i, raw in enumerate(steps):
            here = f"{where}[{i}]"
            if not isinstance(raw, dict):
                raise WorkflowError(f"{here}: a step must be a mapping")
            self.count += 1
            if self.count > _MAX_STEPS:
                raise WorkflowError(f"{where}: more than {_MAX_STEPS} steps")
            step = dict(raw)
            kind = _kind_of(step, here)
            sid = step.get("id", f"step{self.count}")
            if not isinstance(sid, str) or not _ID_RE.match(sid):
                raise WorkflowError(f"{here}.id: {sid!r} is not a valid id (letters, digits, '_' and '-')")
            if sid in self.ids:
                raise WorkflowError(f"{here}.id: {sid!r} is used twice")
            self.ids.add(sid)
            level_ids.append(sid)
            step["id"] = sid
            here = f"{where}[{sid}]"
            unknown = set(step) - _COMMON - {kind} - _EXTRA.get(kind, set())
            if unknown:
                raise WorkflowError(f"{here}: unknown keys {sorted(unknown)}")
            _check_kind_body(kind, step[kind], step, here)
            _check_common(step, here)
            for key in LIST_KINDS.get(kind, ()):
                if key in step:
                    step[key] = self.steps(step[key], f"{here}.{key}")
            for key, value in step.items():
                if key not in LIST_KINDS.get(kind, ()):
                    try:
                        self.templater.check(value)
                    except TemplateError as exc:
                        raise WorkflowError(f"{here}.{key}: {exc}") from None
            out.append(step)
        for step in out:
            target = goto_target(step)
            if target is not None and target not in level_ids:
                raise WorkflowError(f"{where}[{step['id']}].on_error: goto target {target!r} is not a step of "
                                    "the same list")
        return out


def _from_simple_sequential(data: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Original `simple_sequential`: steps `{action: log_message, message}` and `{action: sleep,
    duration_seconds}`."""
    steps = data.get("steps")
    if not isinstance(steps, list):
        raise WorkflowError(f"{where}.steps: must be a list")
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(steps):
        if not isinstance(raw, dict):
            raise WorkflowError(f"{where}.steps[{i}]: a step must be a mapping")
        action = raw.get("action")
        step: dict[str, Any] = {k: raw[k] for k in ("id", "retry", "timeout", "on_error") if k in raw}
        if "name" in raw and "id" not in raw and isinstance(raw["name"], str) and _ID_RE.match(raw["name"]):
            step["id"] = raw["name"]
        if action == "log_message":
            step["log"] = raw.get("message", "")
        elif action == "sleep":
            step["sleep"] = raw.get("duration_seconds", 0)
        else:
            raise WorkflowError(f"{where}.steps[{i}].action: must be log_message or sleep, not {action!r}")
        out.append(step)
    return out


def _from_mcp_sequential(data: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Original `mcp_sequential_agent`: a list of `{mcp_method | method, params}` steps.

    Each step becomes a `call`; its id is its `id`, `name` or `output_var` when that is a valid id, else
    `stepN`. Later steps read earlier results as `{{ steps.<id> }}`, `{{ vars.<output_var> }}` (and the bare
    `{{ <output_var> }}`) when the step named an `output_var`, and `{{ previous }}` for the step just before.
    """
    steps = data.get("steps")
    if not isinstance(steps, list):
        raise WorkflowError(f"{where}.steps: must be a list")
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(steps):
        if not isinstance(raw, dict):
            raise WorkflowError(f"{where}.steps[{i}]: a step must be a mapping")
        method = raw.get("mcp_method", raw.get("method"))
        if not isinstance(method, str):
            raise WorkflowError(f"{where}.steps[{i}]: needs 'mcp_method' (or 'method')")
        step: dict[str, Any] = {"call": method, "params": raw.get("params", {})}
        for key in ("retry", "timeout", "on_error"):
            if key in raw:
                step[key] = raw[key]
        for key in ("id", "name", "output_var"):
            if isinstance(raw.get(key), str) and _ID_RE.match(raw[key]):
                step["id"] = raw[key]
                break
        var = raw.get("output_var")
        if isinstance(var, str) and _ID_RE.match(var):
            step["save_as"] = var
        out.append(step)
    return out


def parse_workflow(data: Any, source: str, templater: Templater | None = None) -> Workflow:
    """Check a decoded workflow document and return it normalised. Raises WorkflowError."""
    templater = templater or Templater()
    where = source
    if not isinstance(data, dict):
        raise WorkflowError(f"{where}: a workflow must be a mapping")
    wid = data.get("id", data.get("workflow_id", Path(source).stem))
    if not isinstance(wid, str) or not _ID_RE.match(wid):
        raise WorkflowError(f"{where}.id: {wid!r} is not a valid id (letters, digits, '_' and '-')")
    kind = data.get("type", "native")
    if kind == "simple_sequential":
        steps_raw: Any = _from_simple_sequential(data, where)
        allowed = {"id", "workflow_id", "name", "description", "type", "steps", "input_schema"}
    elif kind == "mcp_sequential_agent":
        steps_raw = _from_mcp_sequential(data, where)
        allowed = {"id", "workflow_id", "name", "description", "type", "steps", "input_schema"}
    elif kind == "native":
        steps_raw = data.get("steps")
        allowed = {"id", "name", "description", "type", "steps", "input_schema", "outputs"}
    else:
        raise WorkflowError(f"{where}.type: unknown workflow type {kind!r}")
    unknown = set(data) - allowed
    if unknown:
        raise WorkflowError(f"{where}: unknown keys {sorted(unknown)}")
    name = data.get("name", wid)
    description = data.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        raise WorkflowError(f"{where}: name and description must be strings")
    schema = data.get("input_schema", {"type": "object"})
    if not isinstance(schema, dict):
        raise WorkflowError(f"{where}.input_schema: must be a mapping (a JSON Schema)")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise WorkflowError(f"{where}.input_schema: not a valid JSON Schema: {exc.message}") from None
    steps = _Checker(templater).steps(steps_raw, f"{where}.steps")
    outputs = data.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, dict):
            raise WorkflowError(f"{where}.outputs: must be a mapping of names to values")
        try:
            templater.check(outputs)
        except TemplateError as exc:
            raise WorkflowError(f"{where}.outputs: {exc}") from None
    return Workflow(wid, name, description, schema, steps, outputs, source, kind, Draft202012Validator(schema))


def load_file(path: Path, templater: Templater | None = None) -> Workflow:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_FILE + 1)
    except OSError as exc:
        raise WorkflowError(f"{path.name}: cannot be read ({exc.strerror})") from None
    if len(raw) > _MAX_FILE:
        raise WorkflowError(f"{path.name}: larger than {_MAX_FILE} bytes")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise WorkflowError(f"{path.name}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise WorkflowError(f"{path.name}: {problem}{at}") from None
    return parse_workflow(data, path.name, templater)


class WorkflowLibrary:
    """The workflows of one directory, re-read when files change (by mtime and size)."""

    def __init__(self, directory: Path, templater: Templater | None = None) -> None:
        self.directory = directory
        self.templater = templater or Templater()
        self._seen: dict[str, tuple[int, int]] = {}
        self._loaded: dict[str, Workflow | WorkflowError] = {}

    def scan(self) -> tuple[dict[str, Workflow], list[dict[str, str]]]:
        """(workflows by id, errors as {file, error}). Never raises for a bad file."""
        try:
            names = sorted(e.name for e in os.scandir(self.directory)
                           if e.name.endswith((".yaml", ".yml")) and not e.name.startswith("."))
        except OSError:
            names = []
        current: dict[str, tuple[int, int]] = {}
        for name in names:
            try:
                st = (self.directory / name).stat()
            except OSError:
                continue
            current[name] = (st.st_mtime_ns, st.st_size)
        for name in list(self._loaded):
            if name not in current:
                del self._loaded[name]
        for name, stamp in current.items():
            if self._seen.get(name) == stamp and name in self._loaded:
                continue
            try:
                self._loaded[name] = load_file(self.directory / name, self.templater)
            except WorkflowError as exc:
                log.warning("workflow file refused: %s", exc)
                self._loaded[name] = exc
            self._seen[name] = stamp
        workflows: dict[str, Workflow] = {}
        problems: list[dict[str, str]] = []
        for name, item in sorted(self._loaded.items()):
            if isinstance(item, WorkflowError):
                problems.append({"file": name, "error": str(item)})
            elif item.id in workflows:
                problems.append({"file": name, "error": f"{name}: workflow id {item.id!r} is already used by "
                                                        f"{workflows[item.id].source}"})
            else:
                workflows[item.id] = item
        return workflows, problems
