"""Reading and checking workflow files, the original formats, and the library's re-scan on change."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmbasedos.servers.agent.workflow import WorkflowError, WorkflowLibrary, parse_workflow


def _wf(text: str) -> Any:
    return parse_workflow(yaml.safe_load(text), "wf.yaml")


def test_native_workflow_is_normalised() -> None:
    wf = _wf("""
id: demo
name: Demo
input_schema: {type: object, properties: {x: {type: integer, default: 1}}}
steps:
  - call: mcp.fs.list
  - id: later
    set: {y: "{{ inputs.x }}"}
    retry: {count: 2, backoff: 0.5}
    timeout: 3
    on_error: continue
""")
    assert wf.id == "demo" and wf.kind == "native"
    assert [s["id"] for s in wf.steps] == ["step1", "later"]
    assert wf.describe()["input_schema"]["properties"]["x"]["default"] == 1


@pytest.mark.parametrize(("text", "message"), [
    ("steps: []", "wf.yaml.steps: must be a non-empty list"),
    ("steps: [{call: mcp.fs.list, http: {url: x}}]", "exactly one of"),
    ("steps: [{nothing: 1}]", "exactly one of"),
    ("steps: [{id: a, set: {x: 1}}, {id: a, set: {y: 1}}]", "'a' is used twice"),
    ("steps: [{id: 'bad id', set: {x: 1}}]", "not a valid id"),
    ("steps: [{call: fs.list}]", "must be a method name like mcp.fs.read"),
    ("steps: [{set: {x: 1}, on_error: explode}]", "on_error: must be fail, continue"),
    ("steps: [{set: {x: 1}, on_error: {goto: nowhere}}]", "goto target 'nowhere'"),
    ("steps: [{set: {x: 1}, retry: {count: 99}}]", "retry.count: must be an integer from 0 to 20"),
    ("steps: [{set: {x: 1}, timeout: -1}]", "timeout: must be a number"),
    ("steps: [{set: {x: '{{ 1 + }}'}}]", "syntax error"),
    ("steps: [{set: {x: 1}, bogus: 2}]", "unknown keys ['bogus']"),
    ("steps: [{foreach: [1], as: x}]", "needs 'do'"),
    ("steps: [{if: '{{ true }}'}]", "needs 'then'"),
    ("steps: [{http: {url: x, verb: GET}}]", "unknown keys ['verb']"),
    ("input_schema: {type: nonsense}\nsteps: [{set: {x: 1}}]", "input_schema: not a valid JSON Schema"),
    ("type: weird\nsteps: [{set: {x: 1}}]", "unknown workflow type 'weird'"),
    ("steps: [{set: {x: 1}}]\nextra: 1", "unknown keys ['extra']"),
    ("type: simple_sequential\nsteps: [{action: dance}]", "must be log_message or sleep"),
    ("type: mcp_sequential_agent\nsteps: [{params: {}}]", "needs 'mcp_method'"),
    ("steps:\n  - foreach: [1]\n    do: [{id: in, set: {x: 1}, on_error: {goto: out}}]\n  - id: out\n    set: {y: 1}",
     "goto target 'out' is not a step of the same list"),
])
def test_invalid_files_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(WorkflowError) as info:
        _wf(text)
    assert message in str(info.value)
    assert str(info.value).startswith("wf.yaml")


def test_simple_sequential_reader() -> None:
    wf = _wf("""
type: simple_sequential
steps:
  - {action: log_message, message: hi}
  - {action: sleep, duration_seconds: 2}
""")
    assert wf.kind == "simple_sequential" and wf.id == "wf"
    assert [{k: v for k, v in s.items() if k != "id"} for s in wf.steps] == [{"log": "hi"}, {"sleep": 2}]


def test_mcp_sequential_agent_reader() -> None:
    wf = _wf("""
workflow_id: seq
type: mcp_sequential_agent
steps:
  - {mcp_method: mcp.fs.read, params: {path: /a}, output_var: doc}
  - {method: mcp.fs.write, params: {path: /b, content: "{{ doc.content }}"}}
""")
    assert wf.id == "seq"
    assert wf.steps[0] == {"call": "mcp.fs.read", "params": {"path": "/a"}, "id": "doc", "save_as": "doc"}
    assert wf.steps[1]["call"] == "mcp.fs.write" and wf.steps[1]["id"] == "step2"


def test_library_rescans_changed_files_and_reports_broken_ones(tmp_path: Path) -> None:
    lib = WorkflowLibrary(tmp_path)
    (tmp_path / "a.yaml").write_text("id: a\nsteps: [{set: {x: 1}}]\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("id: b\nsteps: [{set: {x: }}", encoding="utf-8")
    (tmp_path / "dup.yaml").write_text("id: a\nsteps: [{set: {x: 1}}]\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("ignored", encoding="utf-8")
    workflows, problems = lib.scan()
    assert set(workflows) == {"a"}
    assert {p["file"] for p in problems} == {"b.yaml", "dup.yaml"}
    assert str(tmp_path) not in str(problems)
    (tmp_path / "b.yaml").write_text("id: b\nsteps: [{set: {x: 2}}]\n", encoding="utf-8")
    os.utime(tmp_path / "b.yaml", ns=(1, 1))  # a different mtime even on coarse clocks
    (tmp_path / "dup.yaml").unlink()
    workflows, problems = lib.scan()
    assert set(workflows) == {"a", "b"} and problems == []
    assert workflows["b"].steps[0]["set"] == {"x": 2}
