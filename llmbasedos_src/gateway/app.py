"""The ASGI app: `/ws`, `/health`, `/status`, `/metrics`, `/ui`, and the lifespan that runs the `Gateway`."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from llmbasedos.files import atomic_write_text
from llmbasedos.gateway.config import GatewayConfig
from llmbasedos.gateway.doors.auth import bearer_token, install_token_redactor, refusal_response, remote_of
from llmbasedos.gateway.doors.mcp_http import McpHttpEndpoint
from llmbasedos.gateway.doors.mcp_http.endpoint import PATH as MCP_PATH
from llmbasedos.gateway.doors.ws import ws_endpoint
from llmbasedos.gateway.policy.gatekeeper import ClientIdentity, Policy
from llmbasedos.gateway.policy.visibility import reads_everything
from llmbasedos.gateway.routing.metrics import render_usage
from llmbasedos.gateway.runtime import VERSION, Gateway
from llmbasedos.gateway.ui import install_ui
from llmbasedos.protocol import errors
from llmbasedos.settings import Settings

__all__ = ["create_app", "ENDPOINT_FILE"]

WS_PATH = "/ws"
ENDPOINT_FILE = "gateway.json"  # in the run dir: where the gateway listens, for tools that started it on port 0


def _authenticate(request: Request) -> ClientIdentity | Response:
    gateway: Gateway = request.app.state.gateway
    try:
        return gateway.policy.authenticate(bearer_token(request.headers), transport="http",
                                           remote=remote_of(request))
    except errors.RPCError as exc:
        return refusal_response(exc)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def status(request: Request) -> Response:
    who = _authenticate(request)
    if isinstance(who, Response):
        return who
    gateway: Gateway = request.app.state.gateway
    return JSONResponse(gateway.status(who))


async def metrics(request: Request) -> Response:
    who = _authenticate(request)
    if isinstance(who, Response):
        return who
    gateway: Gateway = request.app.state.gateway
    try:
        usage = gateway.policy.usage()
    except Exception:
        usage = {}
    if reads_everything(who):
        text = gateway.metrics.render() + render_usage(usage)
    else:  # the gateway's counters are everybody's calls: a client sees only its own use
        text = render_usage({cid: use for cid, use in usage.items() if cid == who.client_id})
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


class _GatewayApp(FastAPI):
    """FastAPI with `/mcp` and `/ws` served ahead of its whole stack (telemetry, error and body-limit layers,
    routing): both doors answer every error themselves, and these layers cost more per call than the doors
    (on `/ws`, every frame sent went through each layer's wrapper of `send`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mcp_endpoint = McpHttpEndpoint()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == MCP_PATH:
            scope["app"] = self
            await self.mcp_endpoint(scope, receive, send)
        elif scope["type"] == "websocket" and scope["path"] == WS_PATH:
            scope["app"] = self
            await ws_endpoint(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, config: GatewayConfig | None = None, *,
               policy: Policy | None = None) -> FastAPI:
    """Build the gateway app. The gateway starts and stops with the app's lifespan."""
    settings = settings or Settings.from_env()
    config = config or GatewayConfig()
    install_token_redactor()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = Gateway(settings, config, policy or Policy.load(settings))
        app.state.gateway = gateway
        endpoint = settings.run_dir / ENDPOINT_FILE
        announced = False
        try:
            await gateway.start()
            if config.port:
                host = f"[{config.host}]" if ":" in config.host else config.host
                atomic_write_text(endpoint, json.dumps({"url": f"http://{host}:{config.port}",
                                                        "port": config.port, "pid": os.getpid()}))
                announced = True
            yield
        finally:
            if announced:
                with contextlib.suppress(FileNotFoundError):
                    endpoint.unlink()
            await gateway.stop()

    app = _GatewayApp(title="llmbasedos gateway", version=VERSION, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/status", status, methods=["GET"])
    app.add_api_route("/metrics", metrics, methods=["GET"])
    install_ui(app)
    return app
