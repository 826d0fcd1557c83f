"""Capability files are checked before anything trusts them."""

from __future__ import annotations

import copy

import pytest

from llmbasedos.protocol.caps import CapsError, parse_caps

GOOD = {
    "service_name": "fs",
    "socket": "/run/mcp/fs.sock",
    "capabilities": [
        {
            "method": "mcp.fs.list",
            "description": "List a directory",
            "params_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
            "positional": ["path"],
            "result_schema": {"type": "array"},
            "annotations": {"readOnlyHint": True},
        }
    ],
}


def broken(mutate):
    data = copy.deepcopy(GOOD)
    mutate(data)
    return data


def test_good_file_parses():
    caps = parse_caps(GOOD, "fs.cap.json", require_socket=True)
    assert caps.service_name == "fs" and caps.methods() == ["mcp.fs.list"]
    assert caps.capabilities[0].positional == ("path",)


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d.update(service_name="Bad Name"), "service_name"),
        (lambda d: d.update(capabilities=[]), "non-empty"),
        (lambda d: d["capabilities"][0].update(method="mcp.mail.list"), "does not belong"),
        (lambda d: d["capabilities"][0].update(method="fs.list"), "mcp.<service>.<action>"),
        (lambda d: d["capabilities"][0].update(params_schema={"type": "objekt"}), "JSON Schema 2020-12"),
        (lambda d: d["capabilities"][0].update(result_schema={"minimum": "x"}), "result_schema"),
        (lambda d: d["capabilities"][0].update(positional=["nope"]), "'nope' is not a property"),
        (lambda d: d["capabilities"][0].update(annotations={"evil": 1}), "annotations"),
        (lambda d: d["capabilities"].append(copy.deepcopy(d["capabilities"][0])), "declared twice"),
        (lambda d: d.pop("socket"), "socket"),
    ],
)
def test_faults_are_named(mutate, fragment):
    with pytest.raises(CapsError) as info:
        parse_caps(broken(mutate), "fs.cap.json", require_socket=True)
    assert "fs.cap.json" in str(info.value)
    assert fragment in str(info.value)


def test_not_an_object():
    with pytest.raises(CapsError, match="JSON object"):
        parse_caps([1], "x.json")
