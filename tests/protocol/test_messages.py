"""JSON-RPC 2.0 message classification and builders."""

from __future__ import annotations

import pytest

from llmbasedos.protocol import errors
from llmbasedos.protocol.messages import (
    Notification,
    Request,
    Response,
    error_response,
    notification,
    parse_message,
    request,
    result_response,
)


def test_request_with_named_and_positional_params():
    assert parse_message(request(1, "mcp.fs.list", {"path": "/"})) == Request(1, "mcp.fs.list", {"path": "/"})
    assert parse_message(request("a", "mcp.fs.list", ["/"])) == Request("a", "mcp.fs.list", ["/"])
    assert parse_message(request(2, "m")) == Request(2, "m", None)


def test_notification_has_no_id():
    assert parse_message(notification("mcp.progress", {"id": 3})) == Notification("mcp.progress", {"id": 3})


def test_responses():
    ok = parse_message(result_response(5, {"x": 1}))
    assert ok == Response(5, {"x": 1}, None) and ok.ok
    bad = parse_message(error_response(5, errors.NotFound("nope")))
    assert isinstance(bad, Response) and not bad.ok
    assert bad.error == {"code": errors.NOT_FOUND, "message": "nope"}
    assert parse_message({"jsonrpc": "2.0", "id": 1, "result": None}).result is None


@pytest.mark.parametrize(
    "obj, fragment",
    [
        ([], "object"),
        ("x", "object"),
        ({"id": 1, "method": "m"}, "jsonrpc"),
        ({"jsonrpc": "1.0", "id": 1, "method": "m"}, "jsonrpc"),
        ({"jsonrpc": "2.0", "id": 1, "method": 5}, "method"),
        ({"jsonrpc": "2.0", "id": 1, "method": ""}, "method"),
        ({"jsonrpc": "2.0", "id": 1, "method": "m", "params": "x"}, "params"),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "m"}, "id"),
        ({"jsonrpc": "2.0", "id": True, "method": "m"}, "id"),
        ({"jsonrpc": "2.0", "id": [1], "method": "m"}, "id"),
        ({"jsonrpc": "2.0", "id": 1}, "Neither"),
        ({"jsonrpc": "2.0", "id": 1, "error": "boom"}, "error"),
    ],
)
def test_invalid_messages(obj, fragment):
    with pytest.raises(errors.InvalidRequest) as info:
        parse_message(obj)
    assert fragment in info.value.message
    assert info.value.code == errors.INVALID_REQUEST


def test_invalid_request_keeps_readable_id():
    with pytest.raises(errors.InvalidRequest) as info:
        parse_message({"jsonrpc": "2.0", "id": 7, "method": "m", "params": 3})
    assert info.value.data == {"id": 7}


def test_builders_omit_absent_params():
    assert request(1, "m") == {"jsonrpc": "2.0", "id": 1, "method": "m"}
    assert notification("n") == {"jsonrpc": "2.0", "method": "n"}
    assert error_response(None, {"code": -1, "message": "x"}) == {
        "jsonrpc": "2.0", "id": None, "error": {"code": -1, "message": "x"}}
