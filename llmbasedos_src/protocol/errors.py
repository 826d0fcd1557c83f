"""JSON-RPC error codes and the exception hierarchy that carries them to the wire.

Every error a client can see has a named code here and nowhere else.

    RPCError                      base: code, message, data
    ├── ParseError                -32700  the frame is not UTF-8 JSON
    ├── InvalidRequest            -32600  JSON, but not a JSON-RPC 2.0 request
    │   └── NestingTooDeep                    nested deeper than the decoder's limit (carries the request id)
    ├── MethodNotFound            -32601
    ├── InvalidParams             -32602  params fail the capability's schema
    ├── InternalError             -32603  a bug; details stay in the server log
    ├── Unauthorized              -32001  no or bad token
    ├── Forbidden                 -32003  the client's rights do not cover the method
    ├── ServiceUnavailable        -32004  the backend that owns the method is down
    ├── Timeout                   -32005  the call took longer than its deadline
    ├── FrameTooLarge             -32006  a frame exceeded the size cap
    ├── NotFound                  -32010  a file, job, message ... does not exist
    ├── AlreadyExists             -32011
    ├── PathOutsideRoot           -32012  a path escapes the virtual root
    ├── PayloadTooLarge           -32013  a read or write past its size cap
    ├── Conflict                  -32014  the target is in the wrong state (not a dir, not empty ...)
    ├── FeatureUnavailable        -32015  an optional part (extra) is not installed or configured
    ├── UpstreamError             -32016  a provider or remote server failed
    ├── RateLimited               -32029  too many requests in the window (data.retry_after)
    ├── QuotaExceeded             -32030  a request or token quota is used up (data.retry_after)
    └── Cancelled                 -32800  the caller cancelled the call
"""

from __future__ import annotations

import asyncio
import errno as _errno
from typing import Any, ClassVar

__all__ = [
    "PARSE_ERROR", "INVALID_REQUEST", "METHOD_NOT_FOUND", "INVALID_PARAMS", "INTERNAL_ERROR",
    "UNAUTHORIZED", "FORBIDDEN", "SERVICE_UNAVAILABLE", "TIMEOUT", "FRAME_TOO_LARGE",
    "NOT_FOUND", "ALREADY_EXISTS", "PATH_OUTSIDE_ROOT", "PAYLOAD_TOO_LARGE", "CONFLICT",
    "FEATURE_UNAVAILABLE", "UPSTREAM_ERROR", "RATE_LIMITED", "QUOTA_EXCEEDED", "CANCELLED",
    "MCP_HEADER_MISMATCH", "MCP_UNSUPPORTED_VERSION",
    "RPCError", "ParseError", "InvalidRequest", "NestingTooDeep", "MethodNotFound", "InvalidParams",
    "InternalError",
    "Unauthorized", "Forbidden", "ServiceUnavailable", "Timeout", "FrameTooLarge", "NotFound",
    "AlreadyExists", "PathOutsideRoot", "PayloadTooLarge", "Conflict", "FeatureUnavailable",
    "UpstreamError", "RateLimited", "QuotaExceeded", "Cancelled", "from_oserror", "from_error_object", "wire_error",
]

# JSON-RPC 2.0 standard codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# Implementation-defined codes (the -32000..-32099 server range, plus MCP's own).
UNAUTHORIZED = -32001
FORBIDDEN = -32003
SERVICE_UNAVAILABLE = -32004
TIMEOUT = -32005
FRAME_TOO_LARGE = -32006
NOT_FOUND = -32010
ALREADY_EXISTS = -32011
PATH_OUTSIDE_ROOT = -32012
PAYLOAD_TOO_LARGE = -32013
CONFLICT = -32014
FEATURE_UNAVAILABLE = -32015
UPSTREAM_ERROR = -32016
MCP_HEADER_MISMATCH = -32020  # standard MCP 2026-07-28: Mcp-Method/Mcp-Name disagree with the body
MCP_UNSUPPORTED_VERSION = -32022  # standard MCP 2026-07-28: protocol version not supported
RATE_LIMITED = -32029
QUOTA_EXCEEDED = -32030
CANCELLED = -32800  # as in LSP's RequestCancelled


class RPCError(Exception):
    """An error meant for the client: its message is safe to show (no host paths, no secrets)."""

    code: ClassVar[int] = INTERNAL_ERROR
    default_message: ClassVar[str] = "Internal error"

    def __init__(self, message: str | None = None, data: Any = None, *, code: int | None = None) -> None:
        self.message = message or self.default_message
        self.data = data
        if code is not None:
            self.code = code  # type: ignore[misc]  # instance override of the class default
        super().__init__(self.message)

    def to_error(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


class ParseError(RPCError):
    code = PARSE_ERROR
    default_message = "Parse error"


class InvalidRequest(RPCError):
    code = INVALID_REQUEST
    default_message = "Invalid request"


class NestingTooDeep(InvalidRequest):
    """A message refused at parse time for its depth; `request_id` is its id when it could be read, so the
    refusal can answer the request itself."""

    def __init__(self, message: str, data: Any = None, *, request_id: str | int | None = None) -> None:
        super().__init__(message, data)
        self.request_id = request_id


class MethodNotFound(RPCError):
    code = METHOD_NOT_FOUND
    default_message = "Method not found"


class InvalidParams(RPCError):
    code = INVALID_PARAMS
    default_message = "Invalid params"


class InternalError(RPCError):
    code = INTERNAL_ERROR
    default_message = "Internal error"


class Unauthorized(RPCError):
    code = UNAUTHORIZED
    default_message = "Unauthorized"


class Forbidden(RPCError):
    code = FORBIDDEN
    default_message = "Forbidden"


class ServiceUnavailable(RPCError):
    code = SERVICE_UNAVAILABLE
    default_message = "Service unavailable"


class Timeout(RPCError):
    code = TIMEOUT
    default_message = "Timed out"


class FrameTooLarge(RPCError):
    code = FRAME_TOO_LARGE
    default_message = "Frame too large"


class NotFound(RPCError):
    code = NOT_FOUND
    default_message = "Not found"


class AlreadyExists(RPCError):
    code = ALREADY_EXISTS
    default_message = "Already exists"


class PathOutsideRoot(RPCError):
    code = PATH_OUTSIDE_ROOT
    default_message = "Path is outside the virtual root"


class PayloadTooLarge(RPCError):
    code = PAYLOAD_TOO_LARGE
    default_message = "Payload too large"


class Conflict(RPCError):
    code = CONFLICT
    default_message = "Conflict"


class FeatureUnavailable(RPCError):
    code = FEATURE_UNAVAILABLE
    default_message = "Feature unavailable"


class UpstreamError(RPCError):
    code = UPSTREAM_ERROR
    default_message = "Upstream error"


class RateLimited(RPCError):
    code = RATE_LIMITED
    default_message = "Rate limit exceeded"


class QuotaExceeded(RPCError):
    code = QUOTA_EXCEEDED
    default_message = "Quota exceeded"


class Cancelled(RPCError):
    code = CANCELLED
    default_message = "Cancelled"


_BY_CODE: dict[int, type[RPCError]] = {
    cls.code: cls
    for cls in (
        ParseError, InvalidRequest, MethodNotFound, InvalidParams, InternalError, Unauthorized, Forbidden,
        ServiceUnavailable, Timeout, FrameTooLarge, NotFound, AlreadyExists, PathOutsideRoot,
        PayloadTooLarge, Conflict, FeatureUnavailable, UpstreamError, RateLimited, QuotaExceeded, Cancelled,
    )
}

_ERRNO_MAP: dict[int, type[RPCError]] = {
    _errno.ENOENT: NotFound,
    _errno.EEXIST: AlreadyExists,
    _errno.ENOTEMPTY: Conflict,
    _errno.ENOTDIR: Conflict,
    _errno.EISDIR: Conflict,
    _errno.ELOOP: PathOutsideRoot,
    _errno.EACCES: Forbidden,
    _errno.EPERM: Forbidden,
    _errno.EXDEV: Conflict,
    _errno.ENAMETOOLONG: InvalidParams,
    _errno.ENOSPC: InternalError,
}


def from_oserror(exc: OSError, vpath: str | None = None) -> RPCError:
    """Translate an OSError at the edge, keeping the virtual path and dropping the host one."""
    cls = _ERRNO_MAP.get(exc.errno or 0, InternalError)
    reason = exc.strerror or cls.default_message
    message = f"{reason}: {vpath}" if vpath else reason
    err = cls(message)
    err.__cause__ = exc
    return err


def from_error_object(error: Any) -> RPCError:
    """Rebuild an RPCError from a JSON-RPC error object received from a peer."""
    if not isinstance(error, dict):
        return InternalError("Malformed error object from peer")
    code = error.get("code")
    message = error.get("message")
    if not isinstance(code, int) or not isinstance(message, str):
        return InternalError("Malformed error object from peer")
    cls = _BY_CODE.get(code, RPCError)
    return cls(message, error.get("data"), code=code)


def wire_error(exc: BaseException) -> RPCError:
    """The one mapping from a Python exception to the error a caller sees: an RPCError as it is, a
    cancellation, a timeout, an OSError by its errno (without its path), anything else InternalError, whose
    details stay in the server's log (the caller logs it: this module does no I/O)."""
    if isinstance(exc, RPCError):
        return exc
    if isinstance(exc, asyncio.CancelledError):
        return Cancelled()
    if isinstance(exc, TimeoutError):
        return Timeout()
    if isinstance(exc, OSError):
        return from_oserror(exc)
    return InternalError()
