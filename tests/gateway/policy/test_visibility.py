"""/status, /ui, /ui/data and /metrics: everything for the owner and admin.read, only itself for anyone else."""

from __future__ import annotations

import json

import httpx

from llmbasedos.gateway.policy.gatekeeper import ClientIdentity
from llmbasedos.gateway.policy.visibility import own_entries, reads_everything
from tests.gateway.harness import GatewayProcess, WsClient, wait_until


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_client_sees_only_itself_and_an_admin_reader_everything(gw: GatewayProcess) -> None:
    alice_id, alice = gw.create_client("alice", allow=("mcp.hello", "mcp.echo.say"))  # no admin.read
    bob_id, bob = gw.create_client("bob", allow=("*",))  # "*" does not mean admin.read
    carol_id, carol = gw.create_client("carol", allow=("mcp.hello", "admin.read"))
    async with WsClient.connect(gw.ws_url, alice) as a, WsClient.connect(gw.ws_url, bob) as b, \
            WsClient.connect(gw.ws_url, gw.token) as owner, httpx.AsyncClient(base_url=gw.url, timeout=20) as http:
        assert await a.call("mcp.echo.say", {"text": "a"}) == "a"
        assert await b.call("mcp.echo.say", {"text": "b"}) == "b"
        assert (await b.request("mcp.echo.fail", {"kind": "rpc"}))["error"]  # a failure, audited under bob
        assert await owner.call("mcp.echo.say", {"text": "o"}) == "o"

        async def audited() -> bool:  # bob's and the owner's calls are in the log
            data = (await http.get("/ui/data", headers=_auth(gw.token))).json()["audit"]
            return {bob_id, "c_owner"} <= {e.get("client") for e in data}

        await wait_until(audited, what="the calls to be audited")

        # alice: her own connection, usage and audit entries; nobody else's, not even their names.
        status = (await http.get("/status", headers=_auth(alice))).json()
        assert [c["name"] for c in status["clients"]] == ["alice"]
        assert set(status["usage"]) == {alice_id} and status["usage"][alice_id]["requests_today"] >= 1
        assert status["services"]["echo"]["methods"] == ["mcp.echo.say"]  # what her rights reach
        assert "mcp.echo.sleep" not in status["methods"] and "pid" not in status["gateway"]
        assert status["you"] == {"client_id": alice_id, "name": "alice", "reads_everything": False}
        text = json.dumps(status)
        for other in ("bob", bob_id, "owner", "c_owner", "carol", carol_id):
            assert other not in text
        audit = (await http.get("/ui/data", headers=_auth(alice))).json()["audit"]
        assert audit and all(e.get("client") == alice_id for e in audit)
        assert any(e.get("method") == "mcp.echo.say" for e in audit)
        metrics = (await http.get("/metrics", headers=_auth(alice))).text
        assert f'llmbasedos_client_requests_today{{client="{alice_id}",name="alice"}}' in metrics
        assert "bob" not in metrics and "owner" not in metrics and "requests_total" not in metrics
        page = await http.get("/ui", headers=_auth(alice))
        assert page.status_code == 200 and "bob" not in page.text

        # bob, allowed "*": every capability of his tier, but his own records only.
        status = (await http.get("/status", headers=_auth(bob))).json()
        assert set(status["usage"]) == {bob_id} and [c["name"] for c in status["clients"]] == ["bob"]
        audit = (await http.get("/ui/data", headers=_auth(bob))).json()["audit"]
        assert audit and {e.get("client") for e in audit} == {bob_id}
        assert any(e.get("method") == "mcp.echo.fail" for e in audit)  # his own failed call is there

        # carol holds admin.read: the whole picture, like the owner.
        for token in (carol, gw.token):
            status = (await http.get("/status", headers=_auth(token))).json()
            assert {"alice", "bob", "owner"} <= {c["name"] for c in status["clients"]}
            assert {alice_id, bob_id, "c_owner"} <= set(status["usage"])
            assert "pid" in status["gateway"] and "calls" in status["services"]["echo"]
            audit = (await http.get("/ui/data", headers=_auth(token))).json()["audit"]
            assert {alice_id, bob_id, "c_owner"} <= {e.get("client") for e in audit}
            metrics = (await http.get("/metrics", headers=_auth(token))).text
            assert 'llmbasedos_gateway_requests_total{method="mcp.echo.say",outcome="ok"}' in metrics
            assert f'client="{bob_id}",name="bob"' in metrics

        # A revoked reader sees nothing at all.
        gw.revoke_token("carol")
        for path in ("/status", "/ui/data", "/metrics", "/ui"):
            assert (await http.get(path, headers=_auth(carol))).status_code == 401


def test_the_rule() -> None:
    def who(allow: tuple[str, ...], owner: bool = False) -> ClientIdentity:
        return ClientIdentity("c_x", "x", "FREE", allow, owner)

    assert reads_everything(who(("*",), owner=True))
    assert reads_everything(who(("admin.read",))) and reads_everything(who(("mcp.hello", "admin.*")))
    assert not reads_everything(who(("*",))) and not reads_everything(who(("mcp.*", "admin.write")))
    mine = own_entries(who(("*",)))
    assert mine is not None and mine({"client": "c_x"}) and not mine({"client": "c_y"}) and not mine({})
    assert own_entries(who(("admin.read",))) is None
