"""Credentials on the TCP doors: where a token is found, and the HTTP answers to a refusal."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from llmbasedos.protocol import errors

__all__ = ["bearer_token", "remote_of", "refusal_response", "TokenRedactor", "install_token_redactor"]

_SECRET_IN_TEXT = re.compile(r"(?i)(token=|bearer\s+)[^&\s\"']+")


class TokenRedactor(logging.Filter):
    """Blanks tokens out of log records (uvicorn logs WebSocket paths with their query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(_SECRET_IN_TEXT.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str) and ("oken" in record.msg or "earer" in record.msg):
            record.msg = _SECRET_IN_TEXT.sub(r"\1[redacted]", record.msg)
        return True


_REDACTOR = TokenRedactor()


def install_token_redactor() -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "websockets.server"):
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def remote_of(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client is not None else ""


def refusal_response(exc: errors.RPCError) -> JSONResponse:
    """The HTTP answer to a refused credential or origin: 401, 403 or 429, with a JSON body."""
    headers: dict[str, str] = {}
    if isinstance(exc, errors.Unauthorized):
        status = 401
        headers["WWW-Authenticate"] = 'Bearer realm="llmbasedos"'
    elif isinstance(exc, (errors.RateLimited, errors.QuotaExceeded)):
        status = 429
        retry = exc.data.get("retry_after") if isinstance(exc.data, dict) else None
        if isinstance(retry, (int, float)):
            headers["Retry-After"] = str(max(1, int(retry + 0.999)))
    else:
        status = 403
    return JSONResponse({"error": exc.to_error()}, status_code=status, headers=headers)
