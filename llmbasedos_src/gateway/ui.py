"""`GET /ui`: a read-only status page for token holders, refreshing itself.

    /ui          the page (needs a token: `Authorization: Bearer`, or `?token=` for a browser's address bar)
    /ui/ui.js    its script, /ui/ui.css its style: static, no data in them, so served without a token
    /ui/data     recent audit decisions (needs a token); the rest comes from `/status`

What the page shows follows the token's rights (visibility.py): everything for the owner and `admin.read`,
else the client's own connections, usage and audit entries only.

The page carries the token it was opened with in a `<meta>` element, and its script sends it as a Bearer
header to `/status` and `/ui/data`: the token never goes into a URL the page builds, and the gateway's access
log is off (and redacts `token=` anyway). The Content-Security-Policy allows only this origin's script,
style and fetches: no inline script, no external resource, no framing.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmbasedos.gateway.doors.auth import bearer_token, refusal_response, remote_of
from llmbasedos.gateway.policy.gatekeeper import ClientIdentity
from llmbasedos.gateway.policy.visibility import own_entries
from llmbasedos.protocol import errors

__all__ = ["install_ui", "SECURITY_HEADERS", "AUDIT_ENTRIES"]

AUDIT_ENTRIES = 50
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # The page's URL may hold `?token=`: never hand it to another site, never keep the page in a cache.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_TOKEN_SLOT = "{{token}}"
_ASSETS = {"ui.js": "text/javascript; charset=utf-8", "ui.css": "text/css; charset=utf-8"}


@cache
def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def _token_of(request: Request) -> str | None:
    return bearer_token(request.headers) or request.query_params.get("token") or None


def _authenticate(request: Request) -> tuple[str, ClientIdentity] | Response:
    """The request's token and client once the policy accepts it, or the refusal to send."""
    token = _token_of(request)
    try:
        client = request.app.state.gateway.policy.authenticate(token, transport="http", remote=remote_of(request))
    except errors.RPCError as exc:
        refused = refusal_response(exc)
        refused.headers.update(SECURITY_HEADERS)
        return refused
    return token or "", client  # authenticate refused a missing token already


def _is_decision(entry: dict[str, Any]) -> bool:
    # Every read of /status, /metrics and this page is an audited "auth allowed" entry over HTTP; shown, they
    # would push every real decision off the page within a minute.
    return not (entry.get("event") == "auth" and entry.get("outcome") == "allowed"
                and entry.get("transport") == "http")


async def ui_page(request: Request) -> Response:
    who = _authenticate(request)
    if isinstance(who, Response):
        return who
    token = who[0]
    page = _asset("ui.html").replace(_TOKEN_SLOT, html.escape(token, quote=True))
    return Response(page, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


async def ui_asset(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = _ASSETS.get(name)
    if media_type is None:
        return JSONResponse({"error": "not found"}, status_code=404, headers=SECURITY_HEADERS)
    return Response(_asset(name), media_type=media_type, headers=SECURITY_HEADERS)


async def ui_data(request: Request) -> Response:
    who = _authenticate(request)
    if isinstance(who, Response):
        return who
    audit = request.app.state.gateway.policy.recent_audit(AUDIT_ENTRIES, own_entries(who[1], _is_decision))
    return JSONResponse({"audit": audit}, headers=SECURITY_HEADERS)


def install_ui(app: FastAPI) -> None:
    app.add_api_route("/ui", ui_page, methods=["GET"])
    app.add_api_route("/ui/data", ui_data, methods=["GET"])
    app.add_api_route("/ui/{name}", ui_asset, methods=["GET"])
