"""Plain HTTP: /health for anyone; /status and /metrics for token holders only."""

from __future__ import annotations

import re

import httpx

from tests.gateway.harness import Env, WsClient


async def test_health_status_and_metrics(env: Env) -> None:
    env.start_backend("echo")
    gw = env.start_gateway()
    auth = {"Authorization": f"Bearer {gw.token}"}
    async with httpx.AsyncClient(base_url=gw.url, timeout=20) as http:
        health = await http.get("/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        for path in ("/status", "/metrics"):
            assert (await http.get(path)).status_code == 401
            refused = await http.get(path, headers={"Authorization": "Bearer lbd_nope"})
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")

        async with WsClient.connect(gw.ws_url, gw.token) as c:
            for i in range(5):
                assert await c.call("mcp.echo.say", [str(i)]) == str(i)
            await c.request("mcp.echo.fail", {"kind": "rpc"})
            status = (await http.get("/status", headers=auth)).json()
            assert status["status"] == "ok"
            echo = status["services"]["echo"]
            assert echo["state"] == "up" and "mcp.echo.say" in echo["methods"]
            assert "mcp.hello" in status["methods"]
            clients = status["clients"]
            assert [(cl["name"], cl["transport"]) for cl in clients] == [("owner", "ws")]
            assert status["usage"]["c_owner"]["name"] == "owner"
            assert "socket" not in str(status["services"])  # no host paths

            text = (await http.get("/metrics", headers=auth)).text
        assert re.search(r'llmbasedos_gateway_requests_total\{method="mcp.echo.say",outcome="ok"\} 5', text)
        assert 'llmbasedos_gateway_requests_total{method="mcp.echo.fail",outcome="error"} 1' in text
        assert re.search(r'request_duration_seconds_bucket\{method="mcp.echo.say",le="\+Inf"\} 5', text)
        assert 'llmbasedos_gateway_request_duration_seconds_count{method="mcp.echo.say"} 5' in text
        assert 'llmbasedos_gateway_upstream_up{service="echo",state="up"} 1' in text
        assert 'llmbasedos_gateway_connected_clients{transport="ws"} 1' in text
