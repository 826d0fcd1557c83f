"""`http` and `n8n_webhook` steps: requests to hosts on the allowlist of agent.yaml, and nowhere else.

Redirects are not followed (a redirect could lead off the allowlist); the response body is read up to the
configured cap.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import httpx

from llmbasedos.servers.agent.config import AgentConfig

__all__ = ["StepFailed", "http_request", "post_webhook"]

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})


class StepFailed(Exception):
    """A step failed for a reason worth telling the workflow's author; the message says which."""


def _check_url(config: AgentConfig, url: Any) -> str:
    if not isinstance(url, str):
        raise StepFailed("the url must be a string")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise StepFailed("the url is not valid") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StepFailed("the url must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise StepFailed("credentials in the url are not allowed; use headers")
    if not config.host_allowed(parts.hostname, port):
        raise StepFailed(f"host {parts.hostname!r} is not on the agent's HTTP allowlist")
    return url


async def _send(config: AgentConfig, method: str, url: str, *, timeout: float | None, **kwargs: Any) -> Any:
    chunks: list[bytes] = []
    size = 0
    try:
        async with httpx.AsyncClient(follow_redirects=False, timeout=timeout, trust_env=False) as client, \
                client.stream(method, url, **kwargs) as response:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > config.max_response_bytes:
                    raise StepFailed(f"the response is larger than {config.max_response_bytes} bytes")
                chunks.append(chunk)
    except httpx.TimeoutException:
        raise StepFailed("the HTTP request timed out") from None
    except httpx.HTTPError as exc:
        raise StepFailed(f"the HTTP request failed: {type(exc).__name__}") from None
    body = b"".join(chunks)
    text = body.decode(response.encoding or "utf-8", errors="replace")
    parsed: Any = None
    if "json" in response.headers.get("content-type", ""):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
    return {"status": response.status_code, "ok": response.is_success, "text": text, "json": parsed,
            "headers": {k.lower(): v for k, v in response.headers.items() if k.lower() in (
                "content-type", "content-length", "location", "etag", "last-modified")}}


async def http_request(config: AgentConfig, spec: dict[str, Any], timeout: float | None) -> Any:
    """`spec`: url, method (GET), headers, params, json or body. Returns {status, ok, text, json, headers};
    an answer of 400 or more fails the step."""
    url = _check_url(config, spec.get("url"))
    method = str(spec.get("method", "GET")).upper()
    if method not in _METHODS:
        raise StepFailed(f"HTTP method {method!r} is not supported")
    kwargs: dict[str, Any] = {}
    headers = spec.get("headers")
    if headers is not None:
        if not isinstance(headers, dict):
            raise StepFailed("headers must be a mapping")
        kwargs["headers"] = {str(k): str(v) for k, v in headers.items()}
    if spec.get("params") is not None:
        kwargs["params"] = spec["params"]
    if "json" in spec:
        kwargs["json"] = spec["json"]
    elif spec.get("body") is not None:
        kwargs["content"] = str(spec["body"]).encode("utf-8")
    result = await _send(config, method, url, timeout=timeout, **kwargs)
    if result["status"] >= 400:
        # A failure, so that retry and on_error apply; the body stays out of the message (it may be large).
        raise StepFailed(f"HTTP {result['status']} from {urlsplit(url).hostname}")
    return result


async def post_webhook(config: AgentConfig, spec: dict[str, Any], timeout: float | None) -> Any:
    """The original `n8n_webhook` kind: POST `payload` as JSON to `webhook_url`; only when enabled."""
    if not config.n8n_enabled:
        raise StepFailed("n8n_webhook steps are disabled (set n8n.enabled in agent.yaml)")
    url = _check_url(config, spec.get("webhook_url"))
    limit = spec.get("timeout_seconds", 30)
    timeout = min(t for t in (timeout, float(limit)) if t is not None)
    result = await _send(config, "POST", url, timeout=timeout, json=spec.get("payload", {}))
    if not result["ok"]:
        raise StepFailed(f"the webhook answered HTTP {result['status']}")
    return result
