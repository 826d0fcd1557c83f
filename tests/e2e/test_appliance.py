"""The whole appliance, end to end: `llmbasedos up` on a fresh state dir, every service through the gateway over
`/ws`, `/mcp` (the official MCP SDK) and luca-shell, `kill -9` of each backend under load, then `down`.

One appliance for the module (starting the local model is the slow part); tests run in file order and the
last one takes it down. Select with `pytest -m e2e`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import Client

from llmbasedos.protocol import errors
from tests.e2e.appliance import SEEDED, WORKFLOW_ID, Appliance
from tests.gateway.harness import WsClient, wait_until
from tests.support.dovecot import dovecot_available, dovecot_server, sample_messages
from tests.support.procs import wait_for

pytestmark = pytest.mark.e2e

# Seconds between two calls of one load loop.
LOAD_INTERVAL = 0.2

BACKENDS = ("fs", "sync", "mail", "agent")
MAIL_USER = "alice"
MAIL_PASSWORD = "alice-e2e-password"

# Cheap read-only calls, one per backend, used as load and as "is this service answering".
PROBES: dict[str, tuple[str, dict[str, Any]]] = {
    "fs": ("mcp.fs.stat", {"path": "/"}),
    "sync": ("mcp.sync.listRemotes", {}),
    "mail": ("mcp.mail.listAccounts", {}),
    "agent": ("mcp.agent.listWorkflows", {}),
}

NOTES = {
    "/notes/garden.txt": "Tomatoes and basil grow best in full sun; water the vegetable garden every morning.\n",
    "/notes/car.txt": "The car needs new brake pads and an oil change before the long motorway trip.\n",
    "/notes/bread.txt": "Sourdough bread: mix flour, water and starter, let the dough rise overnight, then bake.\n",
}


@pytest.fixture(scope="module")
def appliance() -> Iterator[Appliance]:
    if not dovecot_available():
        pytest.fail("dovecot (Debian dovecot-imapd) is needed by the end-to-end suite")
    with dovecot_server({MAIL_USER: MAIL_PASSWORD}) as dovecot:
        for message in sample_messages().values():
            dovecot.append(MAIL_USER, message)
        app = Appliance.start(dovecot, MAIL_USER, MAIL_PASSWORD)
        try:
            yield app
        finally:
            app.cleanup()


@pytest.fixture(scope="module")
def token(appliance: Appliance) -> str:
    return appliance.token


def test_up_runs_every_program(appliance: Appliance) -> None:
    status = appliance.status_data
    assert status["gateway_url"].startswith("http://127.0.0.1:")
    for name in (*BACKENDS, "gateway", "llm-local"):
        assert status["services"][name] == "RUNNING", status
        assert status["programs"][name]["ready"] is True
    # What a fresh install gets: no licence, so FREE.
    assert not (appliance.state / "config" / "lic.key").exists()


async def test_fs_write_read_list_and_semantic_search(appliance: Appliance, token: str) -> None:
    async with WsClient.connect(appliance.ws_url, token) as c:
        for path, text in NOTES.items():
            written = await c.call("mcp.fs.write", {"path": path, "content": text, "create_parents": True})
            assert written["bytes_written"] == len(text.encode())
        read = await c.call("mcp.fs.read", {"path": "/notes/car.txt"})
        assert read["content"] == NOTES["/notes/car.txt"]
        listed = await c.call("mcp.fs.list", {"path": "/notes"})
        assert sorted(e["name"] for e in listed) == ["bread.txt", "car.txt", "garden.txt"]
        assert (appliance.user_files / "notes" / "garden.txt").read_text() == NOTES["/notes/garden.txt"]

        indexed = await c.call("mcp.fs.embed", {"path": "/notes"})
        assert indexed["status"] == "success"
        assert indexed["files_indexed"] == 3
        hits = await c.call("mcp.fs.search", {"query": "how do I bake a loaf of bread", "top_k": 3})
        assert hits[0]["path"] == "/notes/bread.txt", hits
        hits = await c.call("mcp.fs.search", {"query": "vehicle maintenance", "top_k": 3})
        assert hits[0]["path"] == "/notes/car.txt", hits


async def test_sync_copy_with_rclone(appliance: Appliance, token: str) -> None:
    files = {"/outbox/a.txt": "first file\n", "/outbox/sub/b.txt": "second file, deeper\n"}
    async with WsClient.connect(appliance.ws_url, token) as c:
        remotes = await c.call("mcp.sync.listRemotes", {})
        assert {"name": "backup", "type": "alias", "local": False, "usable": True, "refused": None} in remotes
        for path, text in files.items():
            await c.call("mcp.fs.write", {"path": path, "content": text, "create_parents": True})
        job = await c.call("mcp.sync.runJob", {"source": "/outbox", "destination": "backup:copied",
                                               "mode": "copy", "wait": True})
        status = job
        if job["state"] in ("queued", "running"):
            async def ended() -> Any:
                s = await c.call("mcp.sync.getJobStatus", {"job_id": job["job_id"]})
                return s if s["state"] not in ("queued", "running") else None
            status = await wait_until(ended, timeout=60, what="the rclone job to end")
        assert status["state"] == "succeeded", status
    copied = appliance.remote / "copied"
    assert (copied / "a.txt").read_text() == files["/outbox/a.txt"]
    assert (copied / "sub" / "b.txt").read_text() == files["/outbox/sub/b.txt"]


async def test_mail_list_and_get_from_dovecot(appliance: Appliance, token: str) -> None:
    async with WsClient.connect(appliance.ws_url, token) as c:
        accounts = await c.call("mcp.mail.listAccounts", {})
        assert [a["id"] for a in accounts] == ["inbox"]
        listed = await c.call("mcp.mail.listMessages", {"account": "inbox", "folder": "INBOX"})
        messages = listed["messages"]
        subjects = {m["subject"]: m for m in messages}
        assert "Plain hello" in subjects, subjects
        assert len(messages) == len(sample_messages())
        got = await c.call("mcp.mail.getMessage", {"account": "inbox", "uid": subjects["Plain hello"]["uid"]})
        assert "this is plain text" in json.dumps(got)
        # FREE reads mail but may not send it.
        with pytest.raises(errors.Forbidden):
            await c.call("mcp.mail.send", {"account": "inbox", "to": ["bob@example.org"], "subject": "x",
                                           "body": "x"})


async def test_workflow_runs_to_completion(appliance: Appliance, token: str) -> None:
    async with WsClient.connect(appliance.ws_url, token) as c:
        workflows = await c.call("mcp.agent.listWorkflows", {})
        assert workflows["errors"] == []
        assert WORKFLOW_ID in [w.get("id") for w in workflows["workflows"]], workflows
        started = await c.call("mcp.agent.runWorkflow", {"workflow_id": WORKFLOW_ID,
                                                         "inputs": {"path": "/from-agent.txt",
                                                                    "text": "written by a workflow\n"}})

        async def ended() -> Any:
            s = await c.call("mcp.agent.getWorkflowStatus", {"execution_id": started["execution_id"]})
            return s if s["state"] not in ("pending", "running") else None

        status = await wait_until(ended, timeout=60, what="the workflow to end")
        assert status["state"] == "succeeded", status
    assert (appliance.user_files / "from-agent.txt").read_text() == "written by a workflow\n"


async def test_streamed_chat_with_the_local_model(appliance: Appliance, token: str) -> None:
    async with WsClient.connect(appliance.ws_url, token) as c:
        answer = await c.request("mcp.llm.chat", {
            "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
            "model": "local", "stream": True, "options": {"max_tokens": 24, "temperature": 0, "seed": 1}})
        assert "result" in answer, answer
        result = answer["result"]
        chunks = [n for n in c.notifications if n["method"] == "mcp.llm.chunk"]
        assert chunks, "no mcp.llm.chunk notification arrived"
        assert all(n["params"]["id"] == answer["id"] for n in chunks)
        assert result["message"]["content"].strip()
        usage = result["usage"]
        assert usage["completion_tokens"] >= 1
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_mcp_door_with_the_official_sdk(appliance: Appliance, token: str) -> None:
    async with Client(f"{appliance.mcp_url}?token={token}", mode="auto") as client:
        names: set[str] = set()
        cursor = None
        while True:
            page = await client.list_tools(cursor=cursor)
            names.update(t.name for t in page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert {"fs_read", "fs_search", "sync_runJob", "mail_getMessage", "agent_runWorkflow", "llm_chat"} <= names
        read = await client.call_tool("fs_read", {"path": "/welcome.txt"})
        assert read.is_error is False
        assert read.structured_content["content"] == SEEDED["/welcome.txt"]


def test_luca_shell_finds_the_appliance_by_itself(appliance: Appliance) -> None:
    # appliance.env carries no LLMBDO_* variable: the URL and the token come from the state dir alone.
    res = subprocess.run([sys.executable, "-m", "llmbasedos.clients.shell", "--state-dir", str(appliance.state),
                          "-c", "write /from-luca.txt hello from luca", "-c", "cat /welcome.txt",
                          "-c", "mcp.sync.listRemotes"],
                         env=appliance.env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    assert SEEDED["/welcome.txt"].strip() in res.stdout
    assert "backup" in res.stdout
    assert (appliance.user_files / "from-luca.txt").read_text().startswith("hello from luca")


async def _hammer(c: WsClient, service: str, stop: asyncio.Event, outcomes: list[bool]) -> None:
    method, params = PROBES[service]
    while not stop.is_set():
        try:
            await c.call(method, params)
            outcomes.append(True)
        except errors.RPCError:
            outcomes.append(False)
        # Paced, not flat out: the FREE tier admits 3000 requests a minute, and a refusal for that would be
        # indistinguishable here from a service that stopped answering.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), LOAD_INTERVAL)


@pytest.mark.parametrize("victim", BACKENDS)
async def test_kill_9_under_load_is_restarted_and_recovered(appliance: Appliance, token: str, victim: str) -> None:
    old_pid = appliance.status()["programs"][victim]["pid"]
    others = [s for s in BACKENDS if s != victim]
    stop = asyncio.Event()
    victim_outcomes: list[bool] = []
    other_outcomes: dict[str, list[bool]] = {s: [] for s in others}
    async with WsClient.connect(appliance.ws_url, token) as c:
        load = [asyncio.create_task(_hammer(c, victim, stop, victim_outcomes)) for _ in range(2)]
        load += [asyncio.create_task(_hammer(c, s, stop, other_outcomes[s])) for s in others]
        try:
            await wait_until(lambda: len(victim_outcomes) >= 10, timeout=30, what="load to run")
            os.kill(old_pid, signal.SIGKILL)
            at_kill = {s: len(other_outcomes[s]) for s in others}

            def restarted() -> Any:
                info = appliance.status()["programs"][victim]
                return info if info["state"] == "RUNNING" and info["pid"] not in (None, old_pid) else None

            info = await asyncio.to_thread(wait_for, restarted, 90, 0.2, f"{victim} to be restarted")
            assert info["pid"] != old_pid
            # The gateway recovers: calls to the victim succeed again, through the connection that saw the kill.
            mark = len(victim_outcomes)

            def recovered() -> bool:
                return any(victim_outcomes[mark:])

            await wait_until(recovered, timeout=60, what=f"calls to {victim} to succeed again")
            method, params = PROBES[victim]
            await c.call(method, params)
        finally:
            stop.set()
            ended = await asyncio.gather(*load, return_exceptions=True)
    assert [e for e in ended if e is not None] == []  # no load loop died of anything but an RPC error
    for service, outcomes in other_outcomes.items():
        assert len(outcomes) > at_kill[service], f"no call to {service} ran during the restart"
        assert all(outcomes), f"calls to {service} failed while {victim} was killed"


def test_down_leaves_no_process_behind(appliance: Appliance) -> None:
    assert appliance.leftovers(), "the scan should see the running appliance"
    appliance.down()
    assert appliance.leftovers() == []
    status = json.loads(appliance.run("status", "--state-dir", str(appliance.state), "--json", check=False).stdout)
    assert status["running"] is False
