"""What every provider shares: result types, one HTTP client per alias, retries and error translation.

Foreign exceptions stop here: httpx errors and provider error bodies become RPCErrors whose messages name the
alias and the fault, never the key, the URL or the provider's echo of either.

    ProviderUnreachable (ServiceUnavailable)   connection refused / timed out after the retries: fall back
    ProviderRejected (UpstreamError)           the provider answered the request with an error status
    UpstreamError                              the answer broke off or is malformed
    Timeout                                    no progress within the alias's timeout
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import random
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from llmbasedos.gateway.llm.registry import ModelConfig
from llmbasedos.loopback import is_loopback_url
from llmbasedos.protocol.errors import FeatureUnavailable, RPCError, ServiceUnavailable, Timeout, UpstreamError

__all__ = [
    "Usage", "ChatResult", "Delta", "StreamEnd", "EmbedResult", "Provider", "ProviderUnreachable", "ProviderRejected",
    "RETRY_AFTER_CAP", "parse_retry_after",
]

log = logging.getLogger("llmbasedos.gateway.llm")

RETRY_AFTER_CAP = 60.0  # a provider's hint is honoured up to this many seconds
_RETRY_STATUSES = frozenset({429, 503})
_UNREACHABLE_STATUSES = frozenset({502, 503, 504})


class ProviderUnreachable(ServiceUnavailable):
    """The provider could not be reached (or said it is unavailable): the next fallback alias may serve."""


class ProviderRejected(UpstreamError):
    """The provider refused the request with an error status, so it generated nothing (nothing to charge)."""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


@dataclass(frozen=True, slots=True)
class ChatResult:
    content: str
    finish_reason: str | None
    usage: Usage | None
    tool_calls: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    finish_reason: str | None
    usage: Usage | None
    tool_calls: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class EmbedResult:
    vectors: list[list[float]]
    usage: Usage | None


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds a provider asks us to wait (Retry-After as seconds or HTTP date, or retry-after-ms)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~0.2 s; one context serves every alias.
    return httpx.create_ssl_context()


class Provider(ABC):
    """One configured alias. Subclasses build requests and read responses; the base sends and retries."""

    def __init__(self, cfg: ModelConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.cfg = cfg
        # A loopback server must not be reached through a proxy from the environment.
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(cfg.timeout, connect=min(10.0, cfg.timeout)),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            trust_env=not is_loopback_url(cfg.base_url),
            verify=_ssl_context(),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    @abstractmethod
    async def chat(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> ChatResult: ...

    @abstractmethod
    def stream(self, messages: list[dict[str, Any]],
               options: dict[str, Any]) -> AsyncGenerator[Delta | StreamEnd, None]: ...

    async def embed(self, inputs: list[str]) -> EmbedResult:
        raise FeatureUnavailable(f"Model alias {self.cfg.alias!r} ({self.cfg.provider}) does not provide embeddings")

    # -- shared plumbing ------------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        try:
            key = self.cfg.api_key()
        except RPCError:
            key = None
        if key:
            text = text.replace(key, "***")
        return text

    def _error_detail(self, body: bytes, extract: Callable[[Any], str | None]) -> str | None:
        try:
            detail = extract(orjson.loads(body))
        except (ValueError, TypeError, AttributeError, KeyError):
            detail = None
        if not detail:
            return None
        return self._redact(detail)[:300]

    def _status_error(self, resp: httpx.Response, body: bytes, extract: Callable[[Any], str | None]) -> RPCError:
        alias = self.cfg.alias
        status = resp.status_code
        data: dict[str, Any] = {"alias": alias, "status": status}
        if status in (401, 403):
            # Providers echo part of a rejected key in this message; it never goes further.
            return ProviderRejected(f"Model alias {alias!r}: the provider rejected the credentials", data)
        retry_after = parse_retry_after(resp.headers)
        if retry_after is not None:
            data["retry_after"] = min(retry_after, RETRY_AFTER_CAP)
        if status in _UNREACHABLE_STATUSES:
            return ProviderUnreachable(f"Model alias {alias!r}: the provider is unavailable (HTTP {status})", data)
        detail = self._error_detail(body, extract)
        if status == 429:
            message = f"Model alias {alias!r}: the provider is rate limiting requests"
        elif status == 404:
            message = f"Model alias {alias!r}: the provider does not know this model or endpoint"
        else:
            message = f"Model alias {alias!r}: the provider answered HTTP {status}"
        if detail:
            message += f": {detail}"
        return ProviderRejected(message, data)

    def _backoff(self, attempt: int) -> float:
        return min(8.0, 0.2 * (2**attempt)) * (0.75 + random.random() / 2)

    async def _send(self, method: str, path: str, *, json_body: Any, headers: dict[str, str],
                    extract_error: Callable[[Any], str | None]) -> httpx.Response:
        """Send and return a response with an unread (streaming) body and a 2xx status.

        Retries connection failures, 429 and 503 with backoff (or the provider's hint, capped): nothing has
        been streamed to anyone yet, so a retry is invisible to the caller.
        """
        alias = self.cfg.alias
        deadline = time.monotonic() + self.cfg.timeout
        request = self.client.build_request(method, self.cfg.base_url + path, json=json_body, headers=headers)
        attempt = 0
        while True:
            try:
                resp = await self.client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                delay = self._backoff(attempt)
                if attempt < self.cfg.max_retries and time.monotonic() + delay < deadline:
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                raise ProviderUnreachable(f"Model alias {alias!r}: the provider cannot be reached",
                                          {"alias": alias}) from exc
            except httpx.TimeoutException as exc:
                raise Timeout(f"Model alias {alias!r}: the provider did not answer in time",
                              {"alias": alias}) from exc
            except httpx.HTTPError as exc:
                raise UpstreamError(f"Model alias {alias!r}: the connection to the provider failed",
                                    {"alias": alias}) from exc
            if resp.status_code < 400:
                return resp
            try:
                body = await resp.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await resp.aclose()
            if resp.status_code in _RETRY_STATUSES and attempt < self.cfg.max_retries:
                hint = parse_retry_after(resp.headers)
                delay = min(hint, RETRY_AFTER_CAP) if hint is not None else self._backoff(attempt)
                if time.monotonic() + delay < deadline:
                    attempt += 1
                    log.info("llm provider busy, retrying", extra={"alias": alias, "status": resp.status_code,
                                                                     "delay": round(delay, 3)})
                    await asyncio.sleep(delay)
                    continue
            raise self._status_error(resp, body, extract_error)

    def _stream_failed(self, exc: httpx.HTTPError) -> RPCError:
        alias = self.cfg.alias
        if isinstance(exc, httpx.TimeoutException):
            return Timeout(f"Model alias {alias!r}: the provider stopped answering", {"alias": alias})
        return UpstreamError(f"Model alias {alias!r}: the provider's answer was cut off", {"alias": alias})


def protocol_error(alias: str, what: str) -> UpstreamError:
    return UpstreamError(f"Model alias {alias!r}: the provider's answer is malformed ({what})", {"alias": alias})
