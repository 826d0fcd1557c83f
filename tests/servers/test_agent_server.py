"""The agent server end to end: a real gateway, the real fs server, the agent, a real HTTP server on loopback."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from llmbasedos.protocol import errors
from tests.gateway.harness import wait_until
from tests.servers.agent_harness import AgentStack

AGENT_YAML = """
http:
  allow_hosts: ["127.0.0.1:{port}"]
n8n:
  enabled: true
docker:
  enabled: false
max_depth: 3
"""

WORKFLOWS = {
    "copy_upper.yaml": """
id: copy_upper
name: Copy a file in capitals
input_schema:
  type: object
  properties:
    source: {type: string}
    target: {type: string, default: /out.txt}
    times: {type: integer, minimum: 1, default: 2}
  required: [source]
  additionalProperties: false
steps:
  - id: read
    call: mcp.fs.read
    params: {path: "{{ inputs.source }}"}
  - id: shout
    set:
      text: "{{ steps.read.content | upper }}"
      doubled: "{{ inputs.times * 2 }}"
  - id: write
    call: mcp.fs.write
    params: {path: "{{ inputs.target }}", content: "{{ vars.text * inputs.times }}"}
outputs:
  written: "{{ steps.write.bytes_written }}"
  doubled: "{{ vars.doubled }}"
  target: "{{ inputs.target }}"
""",
    "http_get.yaml": """
id: http_get
input_schema:
  type: object
  properties: {url: {type: string}}
  required: [url]
steps:
  - id: get
    http: {url: "{{ inputs.url }}"}
outputs:
  answer: "{{ steps.get.json.answer }}"
  total: "{{ steps.get.json['items'] | sum }}"
""",
    "flaky.yaml": """
id: flaky
input_schema:
  type: object
  properties: {key: {type: string}, fails: {type: integer}, retries: {type: integer}}
steps:
  - id: get
    http: {url: "http://127.0.0.1:{port}/flaky/{{ inputs.key }}/{{ inputs.fails }}"}
    retry: {count: 2, backoff: 0.01}
""",
    "slow.yaml": """
id: slow
steps:
  - id: wait
    http: {url: "http://127.0.0.1:{port}/slow"}
  - id: after
    call: mcp.fs.write
    params: {path: /after-slow.txt, content: should not exist}
""",
    "slow_timeout.yaml": """
id: slow_timeout
steps:
  - id: wait
    http: {url: "http://127.0.0.1:{port}/slow"}
    timeout: 0.2
    on_error: continue
  - id: note
    set: {why: "{{ error }}"}
""",
    "routes.yaml": """
id: routes
steps:
  - id: missing
    call: mcp.fs.read
    params: {path: /does-not-exist.txt}
    on_error: continue
  - id: broken
    call: mcp.fs.read
    params: {path: /nope-either.txt}
    on_error: {goto: recover}
  - id: skipped
    set: {skipped: true}
  - id: recover
    set:
      recovered: "{{ error }}"
      missing_output: "{{ steps.missing }}"
  - id: loop
    foreach: [1, 2, 3]
    as: n
    do:
      - id: square
        set: {square: "{{ n * n }}"}
  - id: branch
    if: "{{ steps.loop | map(attribute='square') | sum > 10 }}"
    then:
      - id: big
        set: {size: big}
    else:
      - id: small
        set: {size: small}
  - id: sub
    workflow: copy_upper
    inputs: {source: /in.txt, target: /sub-out.txt, times: 1}
outputs:
  squares: "{{ steps.loop | map(attribute='square') | list }}"
  size: "{{ vars.size }}"
  skipped: "{{ vars.get('skipped', false) }}"
  sub: "{{ steps.sub }}"
  missing_output: "{{ vars.missing_output }}"
""",
    "recursive.yaml": """
id: recursive
steps:
  - id: again
    workflow: recursive
""",
    "inject.yaml": """
id: inject
input_schema:
  type: object
  properties: {template: {type: string}}
steps:
  - id: evil
    set: {x: "{{ ''.__class__.__mro__ }}"}
""",
    "inject_import.yaml": """
id: inject_import
steps:
  - id: evil
    set: {x: "{% import 'os' as os %}{{ os }}"}
""",
    "inject_internals.yaml": """
id: inject_internals
steps:
  - id: evil
    set: {x: "{{ inputs.__class__.__init__.__globals__ }}"}
""",
    "echo_input.yaml": """
id: echo_input
input_schema:
  type: object
  properties: {text: {type: string}}
  required: [text]
steps:
  - id: write
    call: mcp.fs.write
    params: {path: /echo.txt, content: "{{ inputs.text }}"}
""",
    "legacy_simple.yaml": """
type: simple_sequential
steps:
  - action: log_message
    message: hello
  - action: sleep
    duration_seconds: 0
""",
    "legacy_mcp.yaml": """
workflow_id: legacy_mcp
type: mcp_sequential_agent
steps:
  - mcp_method: mcp.fs.write
    params: {path: /legacy.txt, content: legacy content}
  - method: mcp.fs.read
    params: {path: /legacy.txt}
    output_var: legacy
  - mcp_method: mcp.fs.write
    params: {path: /legacy-copy.txt, content: "{{ legacy.content }} / {{ previous.size }}"}
""",
    "docker.yaml": """
id: docker_step
steps:
  - id: box
    docker: {image: alpine:3.20, command: [echo, hi], environment: {A: b}}
""",
    "webhook.yaml": """
id: webhook
input_schema:
  type: object
  properties: {n: {type: integer, default: 7}}
steps:
  - id: hook
    n8n_webhook:
      webhook_url: "http://127.0.0.1:{port}/hook"
      payload: {n: "{{ inputs.n }}", tags: [a, b]}
      timeout_seconds: 10
""",
    "broken.yaml": "id: broken\nsteps:\n  - id: x\n    call: not-a-method\n",
    "badyaml.yaml": "id: [unclosed\n",
}


@pytest.fixture(scope="module")
def stack() -> Iterator[AgentStack]:
    s = AgentStack(WORKFLOWS, AGENT_YAML)
    (s.root / "in.txt").write_text("hello agent\n", encoding="utf-8")
    try:
        yield s
    finally:
        s.close()


def _step(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in status["log"] if e["step"] == name)


async def test_workflow_reads_and_writes_files_through_the_gateway(stack: AgentStack) -> None:
    async with stack.client() as c:
        status = await stack.run(c, "copy_upper", {"source": "/in.txt"})
    assert status["state"] == "succeeded", (status["error"], status["log"])
    assert (stack.root / "out.txt").read_text(encoding="utf-8") == "HELLO AGENT\n" * 2
    # Native values keep their types: numbers stay numbers.
    assert status["outputs"] == {"written": 24, "doubled": 4, "target": "/out.txt"}
    assert [e["step"] for e in status["log"]] == ["read", "shout", "write"]
    assert all(e["state"] == "succeeded" and e["attempts"] == 1 for e in status["log"])
    assert status["current_step"] is None
    # Step inputs and outputs (file contents) never reach the agent's log.
    assert "hello agent" not in stack.agent.output().lower()


async def test_inputs_are_validated_and_defaults_applied(stack: AgentStack) -> None:
    async with stack.client() as c:
        with pytest.raises(errors.InvalidParams, match="source"):
            await c.call("mcp.agent.runWorkflow", {"workflow_id": "copy_upper", "inputs": {}})
        with pytest.raises(errors.InvalidParams, match=r"inputs\.times"):
            await c.call("mcp.agent.runWorkflow", {"workflow_id": "copy_upper",
                                                   "inputs": {"source": "/in.txt", "times": "two"}})
        with pytest.raises(errors.InvalidParams, match="extra"):
            await c.call("mcp.agent.runWorkflow", {"workflow_id": "copy_upper",
                                                   "inputs": {"source": "/in.txt", "extra": 1}})
        with pytest.raises(errors.NotFound):
            await c.call("mcp.agent.runWorkflow", {"workflow_id": "no_such_workflow"})
        status = await stack.run(c, "copy_upper", {"source": "/in.txt", "target": "/defaults.txt"})
    assert status["outputs"]["doubled"] == 4  # times defaulted to 2
    assert (stack.root / "defaults.txt").read_text(encoding="utf-8") == "HELLO AGENT\n" * 2


async def test_http_step_reaches_allowlisted_loopback_and_refuses_other_hosts(stack: AgentStack) -> None:
    async with stack.client() as c:
        ok = await stack.run(c, "http_get", {"url": f"{stack.http.base}/json"})
        assert ok["state"] == "succeeded", ok
        assert ok["outputs"] == {"answer": 42, "total": 6}
        refused = await stack.run(c, "http_get", {"url": f"http://localhost:{stack.http.port}/json"})
        other_port = await stack.run(c, "http_get", {"url": "http://127.0.0.1:1/json"})
        scheme = await stack.run(c, "http_get", {"url": "file:///etc/passwd"})
    assert refused["state"] == "failed"
    assert "not on the agent's HTTP allowlist" in refused["error"]
    assert other_port["state"] == "failed" and "allowlist" in other_port["error"]
    assert scheme["state"] == "failed" and "http:// or https://" in scheme["error"]
    assert stack.http.hits.get("/json") == 1  # the refused requests never left the agent


async def test_retries_until_success_or_exhaustion(stack: AgentStack) -> None:
    async with stack.client() as c:
        ok = await stack.run(c, "flaky", {"key": "a", "fails": 2})
        failed = await stack.run(c, "flaky", {"key": "b", "fails": 5})
    assert ok["state"] == "succeeded", ok
    assert _step(ok, "get")["attempts"] == 3
    assert stack.http.hits["/flaky/a/2"] == 3
    assert failed["state"] == "failed"
    assert _step(failed, "get")["attempts"] == 3
    assert "HTTP 503" in failed["error"]
    assert stack.http.hits["/flaky/b/5"] == 3


async def test_stop_cancels_the_step_in_flight(stack: AgentStack) -> None:
    stack.http.slow_started.clear()
    stack.http.release.clear()
    async with stack.client() as c:
        started = await c.call("mcp.agent.runWorkflow", {"workflow_id": "slow"})
        xid = started["execution_id"]
        assert started["state"] in ("pending", "running")
        await wait_until(stack.http.slow_started.is_set, what="the slow request to arrive")
        running = await c.call("mcp.agent.getWorkflowStatus", {"execution_id": xid})
        assert running["state"] == "running" and running["current_step"] == "wait"
        stopped = await c.call("mcp.agent.stopWorkflow", {"execution_id": xid})
        assert stopped == {"execution_id": xid, "stopped": True, "state": "stopped"}
        status = await c.call("mcp.agent.getWorkflowStatus", {"execution_id": xid})
        again = await c.call("mcp.agent.stopWorkflow", {"execution_id": xid})
    stack.http.release.set()
    assert status["state"] == "stopped"
    assert _step(status, "wait")["state"] == "stopped"
    assert all(e["step"] != "after" for e in status["log"])
    assert not (stack.root / "after-slow.txt").exists()
    assert again["stopped"] is False and again["state"] == "stopped"


async def test_a_step_timeout_fails_the_step(stack: AgentStack) -> None:
    stack.http.release.clear()
    async with stack.client() as c:
        status = await stack.run(c, "slow_timeout")
    stack.http.release.set()
    assert status["state"] == "succeeded", status["error"]
    assert _step(status, "wait")["state"] == "failed (continued)"
    assert status["outputs"]["note"] == {"why": "wait: timed out after 0.2 s"}


async def test_error_routes_loops_branches_and_sub_workflows(stack: AgentStack) -> None:
    async with stack.client() as c:
        status = await stack.run(c, "routes")
        recursive = await stack.run(c, "recursive")
    assert status["state"] == "succeeded", (status["error"], status["log"])
    out = status["outputs"]
    assert out["squares"] == [1, 4, 9]
    assert out["size"] == "big"
    assert out["skipped"] is False
    assert out["missing_output"] is None
    assert out["sub"] == {"written": 12, "doubled": 2, "target": "/sub-out.txt"}
    assert (stack.root / "sub-out.txt").read_text(encoding="utf-8") == "HELLO AGENT\n"
    assert _step(status, "missing")["state"] == "failed (continued)"
    assert _step(status, "broken")["state"] == "failed (goto recover)"
    assert all(e["step"] != "skipped" for e in status["log"])
    assert _step(status, "sub/write")["state"] == "succeeded"
    assert recursive["state"] == "failed"
    assert "nest deeper than 3" in recursive["error"]


@pytest.mark.parametrize(("workflow", "message"), [
    ("inject", "access to attribute '__class__' of 'str' object is unsafe"),
    ("inject_import", "may not import, include or extend"),
    ("inject_internals", "unsafe"),
])
async def test_template_injection_is_refused_by_the_sandbox(stack: AgentStack, workflow: str,
                                                            message: str) -> None:
    async with stack.client() as c:
        status = await stack.run(c, workflow)
    assert status["state"] == "failed"
    assert "template refused" in status["error"] and message in status["error"]
    assert _step(status, "evil")["state"] == "failed"
    assert _step(status, "evil")["attempts"] == 1


async def test_template_text_in_inputs_is_data_not_code(stack: AgentStack) -> None:
    payload = "{{ ''.__class__.__mro__ }} {% import 'os' as os %} {{ 7 * 7 }}"
    async with stack.client() as c:
        status = await stack.run(c, "echo_input", {"text": payload})
    assert status["state"] == "succeeded", (status["error"], status["log"])
    assert (stack.root / "echo.txt").read_text(encoding="utf-8") == payload


async def test_broken_files_are_reported_and_fixed_files_picked_up(stack: AgentStack) -> None:
    async with stack.client() as c:
        listed = await c.call("mcp.agent.listWorkflows")
        ids = {w["id"] for w in listed["workflows"]}
        assert {"copy_upper", "slow", "legacy_simple", "legacy_mcp"} <= ids
        problems = {p["file"]: p["error"] for p in listed["errors"]}
        assert problems["broken.yaml"].startswith("broken.yaml.steps[x].call:")
        assert "mcp.fs.read" in problems["broken.yaml"]  # the message says what a method name looks like
        assert "at line 2" in problems["badyaml.yaml"]
        assert str(stack.env.state) not in str(listed)  # no host paths
        with pytest.raises(errors.InvalidParams, match="cannot be run"):
            await c.call("mcp.agent.runWorkflow", {"workflow_id": "broken"})
        stack.write_workflow("broken.yaml", "id: broken\nsteps:\n  - id: x\n    set: {fixed: true}\n")
        relisted = await c.call("mcp.agent.listWorkflows")
        assert "broken" in {w["id"] for w in relisted["workflows"]}
        assert "broken.yaml" not in {p["file"] for p in relisted["errors"]}
        described = await c.call("mcp.agent.getWorkflow", {"workflow_id": "broken"})
        assert described["steps"] == [{"id": "x", "set": {"fixed": True}}]
        status = await stack.run(c, "broken")
    assert status["state"] == "succeeded" and status["outputs"] == {"x": {"fixed": True}}
    assert stack.agent.alive()


async def test_original_formats_are_read(stack: AgentStack) -> None:
    async with stack.client() as c:
        simple = await stack.run(c, "legacy_simple")
        mcp = await stack.run(c, "legacy_mcp")
        described = await c.call("mcp.agent.getWorkflow", {"workflow_id": "legacy_mcp"})
    assert simple["state"] == "succeeded", simple
    assert [e["kind"] for e in simple["log"]] == ["log", "sleep"]
    assert mcp["state"] == "succeeded", mcp
    assert described["type"] == "mcp_sequential_agent"
    assert (stack.root / "legacy-copy.txt").read_text(encoding="utf-8") == "legacy content / 14"


async def test_docker_refused_when_disabled_and_webhook_posts_when_enabled(stack: AgentStack) -> None:
    async with stack.client() as c:
        docker = await stack.run(c, "docker_step")
        hook = await stack.run(c, "webhook")
    assert docker["state"] == "failed" and "docker steps are disabled" in docker["error"]
    assert hook["state"] == "succeeded", hook
    assert {"n": 7, "tags": ["a", "b"]} in stack.http.posted


async def test_executions_are_listed(stack: AgentStack) -> None:
    async with stack.client() as c:
        status = await stack.run(c, "legacy_simple")
        listed = await c.call("mcp.agent.listExecutions", {"workflow_id": "legacy_simple", "limit": 5})
        with pytest.raises(errors.NotFound):
            await c.call("mcp.agent.getWorkflowStatus", {"execution_id": "x_nope"})
    assert listed["executions"][0]["id"] == status["id"]
    assert all(e["workflow_id"] == "legacy_simple" for e in listed["executions"])
    assert "log" not in listed["executions"][0]


async def test_restart_marks_a_run_in_flight_interrupted(stack: AgentStack) -> None:
    stack.http.slow_started.clear()
    stack.http.release.clear()
    async with stack.client() as c:
        started = await c.call("mcp.agent.runWorkflow", {"workflow_id": "slow"})
        xid = started["execution_id"]
        await wait_until(stack.http.slow_started.is_set, what="the slow request to arrive")
    os.kill(stack.agent.proc.pid, signal.SIGKILL)  # no chance to record anything
    stack.agent.proc.wait(10)
    stack.http.release.set()
    stack.agent = stack.start_agent()
    async with stack.client() as c:
        status = await wait_until(lambda: _status_if_routed(c, xid), what="the restarted agent to answer")
    assert status["state"] == "interrupted"
    assert status["ended_at"] is not None
    assert not (stack.root / "after-slow.txt").exists()


async def test_a_clean_shutdown_marks_a_run_in_flight_interrupted(stack: AgentStack) -> None:
    stack.http.slow_started.clear()
    stack.http.release.clear()
    async with stack.client() as c:
        started = await c.call("mcp.agent.runWorkflow", {"workflow_id": "slow"})
        await wait_until(stack.http.slow_started.is_set, what="the slow request to arrive")
    assert stack.agent.stop() == 0
    stack.http.release.set()
    stack.agent = stack.start_agent()
    async with stack.client() as c:
        status = await wait_until(lambda: _status_if_routed(c, started["execution_id"]),
                                  what="the restarted agent to answer")
    assert status["state"] == "interrupted"
    assert [(e["step"], e["state"]) for e in status["log"]] == [("wait", "stopped")]


async def _status_if_routed(c: Any, xid: str) -> dict[str, Any] | None:
    try:
        status: dict[str, Any] = await c.call("mcp.agent.getWorkflowStatus", {"execution_id": xid})
    except errors.RPCError:
        return None
    return status
