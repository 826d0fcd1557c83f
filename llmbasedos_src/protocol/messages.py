"""JSON-RPC 2.0 message types: classification of incoming objects and builders for outgoing ones.

Messages travel as plain dicts (cheap on the hot path); the dataclasses here are what a receiver gets after
`parse_message` has checked the shape. They are not frozen: a frozen dataclass costs three times as much to
build, and one is built for every message; nothing here mutates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmbasedos.protocol.errors import InvalidRequest, NestingTooDeep, RPCError

__all__ = [
    "Request", "Notification", "Response", "Message", "RequestId",
    "parse_message", "request", "notification", "result_response", "error_response", "refusal", "is_valid_id",
    "answer_id", "check_call",
]

RequestId = str | int


@dataclass(slots=True)
class Request:
    id: RequestId
    method: str
    params: Any  # dict, list or None
    # llmbasedos extension between the gateway and its backends: who the call is made for
    # ({"client_id", "name", "tier"}, and "run": the agent's execution making the call, when a workflow run
    # does), so a backend that calls back through the gateway (the agent) can act with that client's rights
    # and no more. Clients' own "caller" members are dropped by the gateway.
    caller: Any = None


@dataclass(slots=True)
class Notification:
    method: str
    params: Any


@dataclass(slots=True)
class Response:
    id: RequestId | None
    result: Any = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


Message = Request | Notification | Response


def is_valid_id(value: Any) -> bool:
    """Whether `value` may be a request's id here: a string or an integer (bool is an int in Python, not an
    id; null and fractions are refused too)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def answer_id(value: Any) -> RequestId | None:
    """The id to answer a message with: its own when valid, else null."""
    return value if is_valid_id(value) else None


def check_call(obj: dict[str, Any]) -> InvalidRequest | None:
    """What is wrong with the envelope of a request or notification ("jsonrpc", "method", "params", "id"), or
    None. The one statement of these rules; returned rather than raised, since the gateway checks every call."""
    if obj.get("jsonrpc") != "2.0":
        return InvalidRequest('"jsonrpc" must be "2.0"')
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        return InvalidRequest('"method" must be a non-empty string')
    params = obj.get("params")
    if params is not None and not isinstance(params, (dict, list)):
        return InvalidRequest('"params" must be an object or an array')
    if "id" in obj and not is_valid_id(obj["id"]):
        return InvalidRequest('"id" must be a string or an integer')
    return None


def parse_message(obj: Any) -> Message:
    """Classify one decoded JSON value. Raises InvalidRequest (with the id when one is readable)."""
    if not isinstance(obj, dict):
        raise InvalidRequest("A JSON-RPC message must be an object")
    if obj.get("jsonrpc") != "2.0":
        raise InvalidRequest('"jsonrpc" must be "2.0"', {"id": _safe_id(obj)})
    if "method" in obj:
        wrong = check_call(obj)
        if wrong is not None:
            raise InvalidRequest(wrong.message, {"id": _safe_id(obj)})
        if "id" not in obj:
            return Notification(obj["method"], obj.get("params"))
        return Request(obj["id"], obj["method"], obj.get("params"), obj.get("caller"))
    if "result" in obj or "error" in obj:
        rid = obj.get("id")
        if rid is not None and not is_valid_id(rid):
            raise InvalidRequest('"id" must be a string, an integer or null')
        if "error" in obj:
            error = obj["error"]
            if not isinstance(error, dict) or not isinstance(error.get("code"), int):
                raise InvalidRequest('"error" must be an object with an integer "code"')
            return Response(rid, None, error)
        return Response(rid, obj["result"], None)
    raise InvalidRequest("Neither a request nor a response", {"id": _safe_id(obj)})


def _safe_id(obj: dict[str, Any]) -> RequestId | None:
    return answer_id(obj.get("id"))


def request(rid: RequestId, method: str, params: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def notification(method: str, params: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def result_response(rid: RequestId | None, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def error_response(rid: RequestId | None, error: RPCError | dict[str, Any]) -> dict[str, Any]:
    err = error.to_error() if isinstance(error, RPCError) else error
    return {"jsonrpc": "2.0", "id": rid, "error": err}


def refusal(error: RPCError) -> dict[str, Any]:
    """The answer to a frame refused before it became a message: id null, unless the error could read the
    request's id (NestingTooDeep), so that the request itself gets its answer."""
    return error_response(error.request_id if isinstance(error, NestingTooDeep) else None, error)
