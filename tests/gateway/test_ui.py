"""GET /ui: the status page, rendered by a real headless Chromium against a real gateway and a real fs server."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import httpx
import pytest

from tests.gateway.harness import Env, GatewayProcess, WsClient
from tests.support.procs import start_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="Debian's chromium is not installed")


def _chromium(*args: str) -> subprocess.CompletedProcess[bytes]:
    profile = tempfile.mkdtemp(prefix="chr", dir="/tmp")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900",
             "--virtual-time-budget=5000", *args],
            capture_output=True, timeout=120, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _png_pixels(path: Path) -> tuple[int, int, bytes]:
    """(width, height, raw filtered scanlines) of an 8-bit PNG, checking every chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        if kind == b"IHDR":
            width, height, depth = struct.unpack(">IIB", body[:9])
            assert depth == 8
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.fixture
def gateway_with_fs(env: Env) -> GatewayProcess:
    root = env.state / "user_files"
    root.mkdir()
    (root / "notes.txt").write_text("hello from the virtual root\n", encoding="utf-8")
    env.backends.append(start_server("fs", {**env.env, "LLMBDO_VIRTUAL_ROOT": str(root)}))
    return env.start_gateway()


async def _make_decisions(gw: GatewayProcess) -> None:
    """One allowed call and one denied one, so the audit log has decisions of both kinds."""
    async with WsClient.connect(gw.ws_url, gw.token) as owner:
        assert [e["name"] for e in await owner.call("mcp.fs.list", {"path": "/"})] == ["notes.txt"]
    limited = gw.create_token("reader", allow=("mcp.fs.list",))
    async with WsClient.connect(gw.ws_url, limited) as reader:
        denied = await reader.request("mcp.fs.read", {"path": "/notes.txt"})
        assert "error" in denied


async def test_page_needs_a_token_and_is_locked_down(gateway_with_fs: GatewayProcess) -> None:
    gw = gateway_with_fs
    async with httpx.AsyncClient(base_url=gw.url, timeout=20) as http:
        for path in ("/ui", "/ui/data"):
            assert (await http.get(path)).status_code == 401
            assert (await http.get(path, params={"token": "lbd_nope"})).status_code == 401
            assert (await http.get(path, headers={"Authorization": "Bearer lbd_nope"})).status_code == 401

        page = await http.get("/ui", headers={"Authorization": f"Bearer {gw.token}"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        by_query = await http.get("/ui", params={"token": gw.token})
        assert by_query.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
        # No inline script and nothing from another origin.
        assert "<script>" not in page.text and '<script src="/ui/ui.js"' in page.text
        assert "http://" not in page.text and "https://" not in page.text and "//" not in page.text

        script = await http.get("/ui/ui.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert gw.token not in script.text
        assert (await http.get("/ui/ui.css")).headers["content-type"].startswith("text/css")
        assert (await http.get("/ui/secret.txt")).status_code == 404


async def test_data_lists_recent_decisions(gateway_with_fs: GatewayProcess) -> None:
    gw = gateway_with_fs
    await _make_decisions(gw)
    async with httpx.AsyncClient(base_url=gw.url, timeout=20) as http:
        auth = {"Authorization": f"Bearer {gw.token}"}
        for _ in range(3):  # reads of the page itself must not crowd out real decisions
            assert (await http.get("/status", headers=auth)).status_code == 200
        entries = (await http.get("/ui/data", headers=auth)).json()["audit"]
    denied = [e for e in entries if e.get("event") == "authz"]
    assert denied and denied[0]["outcome"] == "denied" and denied[0]["method"] == "mcp.fs.read"
    assert denied[0]["name"] == "reader"
    assert any(e.get("event") == "call" and e.get("method") == "mcp.fs.list" for e in entries)
    assert not any(e.get("event") == "auth" and e.get("transport") == "http" and e.get("outcome") == "allowed"
                   for e in entries)
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    assert all("mac" not in e and "prev" not in e for e in entries)
    assert gw.token not in str(entries)


@needs_chromium
async def test_chromium_renders_services_methods_and_decisions(gateway_with_fs: GatewayProcess,
                                                                tmp_path: Path) -> None:
    gw = gateway_with_fs
    await _make_decisions(gw)
    url = f"{gw.url}/ui?token={gw.token}"

    async with WsClient.connect(gw.ws_url, gw.token):  # a connected client for the page to list
        dom = _chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    html = dom.stdout.decode()
    assert "1 of 1 services up" in html and "Loading…" not in html
    clients = html[html.index('id="clients"'):html.index('id="usage"')]
    assert "<td>owner</td><td>ws</td>" in clients
    services = html[html.index('id="services"'):html.index('id="clients"')]
    assert "<td>fs</td>" in services and "state-up" in services and ">up<" in services
    assert "mcp.fs.list" in services and "mcp.fs.read" in services
    audit = html[html.index('id="audit"'):html.index('id="methods"')]
    assert "mcp.fs.read" in audit and ">denied<" in audit and "reader" in audit
    assert "not allowed for tier" in audit
    assert "Loading…" not in html and "services up" in html  # the page filled itself from /status

    shot = tmp_path / "ui.png"
    result = _chromium(f"--screenshot={shot}", url)
    assert result.returncode == 0 and shot.exists(), result.stderr.decode(errors="replace")[-2000:]
    width, height, raw = _png_pixels(shot)
    assert (width, height) == (1280, 900)
    assert shot.stat().st_size > 10_000  # a blank page compresses to a few hundred bytes
    assert len(set(raw)) > 32  # text, tables and colours, not a flat fill
    if os.environ.get("LLMBDO_UI_SCREENSHOT"):  # to look at it: LLMBDO_UI_SCREENSHOT=/tmp/ui.png pytest ...
        shutil.copyfile(shot, os.environ["LLMBDO_UI_SCREENSHOT"])

    refused = _chromium("--dump-dom", f"{gw.url}/ui")
    assert "A token is required" in refused.stdout.decode()
    assert "mcp.fs.list" not in refused.stdout.decode()

    assert gw.token not in gw.output()  # never in any log line


@needs_chromium
async def test_chromium_renders_the_upstream_servers(env: Env) -> None:
    gw = env.start_gateway()
    state = {"pid": os.getpid(), "updated": 1.0, "registry": "mcp_servers.yaml", "registry_error": None,
             "servers": {"memory": {"state": "ready", "transport": "stdio", "tools": 9, "calls": 12, "errors": 2,
                                    "restarts": 1, "last_error": "the child exited (status 1)", "tool_names": {},
                                    "refused_tools": {"delete_all": "denied by the tools policy in the registry"}},
                         "github": {"state": "failed", "transport": "http", "tools": 0, "calls": 0, "errors": 0,
                                    "restarts": 3, "last_error": "initialize timed out after 30 s"}}}
    (env.run_dir / "upstream.state.json").write_text(json.dumps(state), encoding="utf-8")
    dom = _chromium("--dump-dom", f"{gw.url}/ui?token={gw.token}")
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    html = dom.stdout.decode()
    table = html[html.index('id="upstreams"'):html.index('id="clients"')]
    assert "<td>memory</td>" in table and "state-ready" in table and ">ready<" in table
    assert "<td>9</td><td>12</td><td>2</td><td>1</td>" in table and "the child exited (status 1)" in table
    assert "<td>github</td>" in table and "state-failed" in table and "initialize timed out after 30 s" in table
    assert "memory: delete_all left out: denied by the tools policy in the registry" in table
