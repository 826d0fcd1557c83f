"""MCPServer, exercised through a real server process (tests/support/echo_server.py) over a real socket."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbasedos.backend.server import MCPServer, method
from llmbasedos.protocol import errors
from llmbasedos.protocol.caps import CapsError
from llmbasedos.protocol.framing import NulFrameDecoder, encode_frame
from llmbasedos.rpc.client import RPCClient
from llmbasedos.settings import Settings

REPO = Path(__file__).resolve().parents[2]


class EchoProc:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lbd-", dir="/tmp"))
        self.socket = self.dir / "echo.sock"
        self.cap = self.dir / "echo.cap.json"
        self.log = self.dir / "server.log"
        full_env = {**os.environ, "LLMBDO_RUN_DIR": str(self.dir), "PYTHONPATH": str(REPO), **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.echo_server"], env=full_env,
                                     stderr=self.log.open("wb"), cwd=REPO)
        deadline = time.monotonic() + 20
        while not self.cap.exists():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "echo server did not start"
            time.sleep(0.02)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def echo() -> Iterator[EchoProc]:
    p = EchoProc()
    yield p
    p.cleanup()


async def raw_exchange(path: Path, data: bytes, expect: int, timeout: float = 10) -> list[Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    dec = NulFrameDecoder()
    out: list[Any] = []
    try:
        while len(out) < expect:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            assert chunk, "server closed the connection"
            out += [f.value for f in dec.receive_data(chunk)]
    finally:
        writer.close()
    return out


async def test_cap_file_and_socket_mode(echo: EchoProc) -> None:
    cap = json.loads(echo.cap.read_text())
    assert cap["service_name"] == "echo" and cap["socket"] == str(echo.socket)
    assert stat.S_IMODE(os.stat(echo.socket).st_mode) == 0o660
    assert not list(echo.dir.glob("*.tmp"))


async def test_named_and_positional_params(echo: EchoProc) -> None:
    c = await RPCClient.connect_unix(str(echo.socket))
    assert await c.call("mcp.echo.say", {"text": "ab", "n": 2}) == "abab"
    assert await c.call("mcp.echo.say", ["xy", 3]) == "xyxyxy"
    with pytest.raises(errors.InvalidParams, match="at most 2 positional"):
        await c.call("mcp.echo.say", ["a", 1, 2])
    with pytest.raises(errors.InvalidParams, match=r"params\.n"):
        await c.call("mcp.echo.say", {"text": "a", "n": "two"})
    with pytest.raises(errors.InvalidParams, match="required"):
        await c.call("mcp.echo.say", {})
    with pytest.raises(errors.InvalidParams, match="Additional properties"):
        await c.call("mcp.echo.say", {"text": "a", "zzz": 1})
    with pytest.raises(errors.MethodNotFound):
        await c.call("mcp.echo.nope", {})
    await c.close()


async def test_answers_by_id_in_any_order(echo: EchoProc) -> None:
    frames = encode_frame({"jsonrpc": "2.0", "id": "slow", "method": "mcp.echo.sleep", "params": {"seconds": 0.5}})
    frames += encode_frame({"jsonrpc": "2.0", "id": "fast", "method": "mcp.echo.say", "params": {"text": "x"}})
    out = await raw_exchange(echo.socket, frames, 2)
    assert [m["id"] for m in out] == ["fast", "slow"]


async def test_blocking_handler_runs_off_the_loop(echo: EchoProc) -> None:
    c = await RPCClient.connect_unix(str(echo.socket))
    blocked = asyncio.ensure_future(c.call("mcp.echo.block", {"seconds": 1.0}))
    assert await c.call("mcp.echo.say", {"text": "still here"}) == "still here"
    assert not blocked.done()
    assert await blocked == {"blocked": 1.0}
    await c.close()


async def test_many_in_flight_on_one_and_many_connections(echo: EchoProc) -> None:
    clients = [await RPCClient.connect_unix(str(echo.socket)) for _ in range(8)]
    calls = [c.call("mcp.echo.say", {"text": f"{i}-{j}"}) for i, c in enumerate(clients) for j in range(50)]
    results = await asyncio.gather(*calls)
    assert results == [f"{i}-{j}" for i in range(8) for j in range(50)]
    for c in clients:
        await c.close()


async def test_progress_notifications_reach_the_caller(echo: EchoProc) -> None:
    c = await RPCClient.connect_unix(str(echo.socket))
    seen: list[tuple[str, Any]] = []
    assert await c.call("mcp.echo.progress", {"steps": 4}, on_notification=lambda m, p: seen.append((m, p))) == {
        "done": 4}
    assert [p["progress"] for _, p in seen] == [1, 2, 3, 4]
    assert all(m == "mcp.progress" and p["total"] == 4 for m, p in seen)
    await c.close()


async def test_exceptions_become_errors_without_leaks(echo: EchoProc) -> None:
    c = await RPCClient.connect_unix(str(echo.socket))
    with pytest.raises(errors.NotFound, match="/virtual/x"):
        await c.call("mcp.echo.fail", {"kind": "rpc"})
    with pytest.raises(errors.NotFound) as nf:
        await c.call("mcp.echo.fail", {"kind": "oserror"})
    assert "/very/secret" not in nf.value.message
    with pytest.raises(errors.InternalError) as ie:
        await c.call("mcp.echo.fail", {"kind": "bug"})
    assert ie.value.message == "Internal error" and ie.value.data is None
    assert await c.call("mcp.echo.say", {"text": "alive"}) == "alive"
    await c.close()


async def test_malformed_input_answered_and_server_keeps_serving(echo: EchoProc) -> None:
    data = (b"{bad json}\x00" + b'"\xff"\x00' + b"[]\x00" + b'{"jsonrpc":"2.0","id":9,"method":"m","params":5}\x00'
            + b'{"jsonrpc":"2.0","method":"mcp.echo.say","params":{"text":"note"}}\x00'
            + b'{"jsonrpc":"2.0","id":10,"method":"mcp.echo.say","params":{"text":"ok"}}\x00')
    out = await raw_exchange(echo.socket, data, 5)
    codes = [m.get("error", {}).get("code") for m in out]
    assert codes[:4] == [errors.PARSE_ERROR, errors.PARSE_ERROR, errors.INVALID_REQUEST, errors.INVALID_REQUEST]
    assert out[3]["id"] == 9
    assert out[4] == {"jsonrpc": "2.0", "id": 10, "result": "ok"}  # the notification got no answer


async def test_oversize_frame_is_refused_not_fatal() -> None:
    p = EchoProc({"LLMBDO_MAX_FRAME": "1000"})
    try:
        big = encode_frame({"jsonrpc": "2.0", "id": 1, "method": "mcp.echo.say", "params": {"text": "a" * 5000}})
        small = encode_frame({"jsonrpc": "2.0", "id": 2, "method": "mcp.echo.say", "params": {"text": "b"}})
        out = await raw_exchange(p.socket, big + small, 2)
        assert out[0]["error"]["code"] == errors.FRAME_TOO_LARGE
        assert out[1]["result"] == "b"
    finally:
        p.stop()


async def test_batches(echo: EchoProc) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "mcp.echo.say", "params": {"text": "a"}},
        {"jsonrpc": "2.0", "method": "mcp.echo.say", "params": {"text": "notified"}},
        {"jsonrpc": "2.0", "id": 2, "method": "mcp.echo.nope"},
        "junk",
    ]
    out = await raw_exchange(echo.socket, encode_frame(batch), 1)
    answers = out[0]
    assert isinstance(answers, list) and len(answers) == 3
    by_id = {a["id"]: a for a in answers}
    assert by_id[1]["result"] == "a"
    assert by_id[2]["error"]["code"] == errors.METHOD_NOT_FOUND
    assert by_id[None]["error"]["code"] == errors.INVALID_REQUEST
    only_notes = [{"jsonrpc": "2.0", "method": "mcp.echo.say", "params": {"text": "n"}}]
    out = await raw_exchange(echo.socket, encode_frame(only_notes) + encode_frame([]) , 1)
    assert out[0]["error"]["code"] == errors.INVALID_REQUEST  # the empty batch; the notification batch is silent


async def test_cancel_notification_cancels_the_call(echo: EchoProc) -> None:
    c = await RPCClient.connect_unix(str(echo.socket))
    task = asyncio.ensure_future(c.call("mcp.echo.sleep", {"seconds": 30}))
    await asyncio.sleep(0.1)
    c.cancel(1)
    with pytest.raises(errors.Cancelled):
        await task
    await c.close()


async def test_sigterm_finishes_in_flight_calls_and_cleans_up() -> None:
    p = EchoProc()
    c = await RPCClient.connect_unix(str(p.socket))
    call = asyncio.ensure_future(c.call("mcp.echo.sleep", {"seconds": 0.5}))
    await asyncio.sleep(0.1)
    p.proc.send_signal(signal.SIGTERM)
    assert await call == {"slept": 0.5}
    assert await asyncio.to_thread(p.proc.wait, 20) == 0
    assert not p.cap.exists() and not p.socket.exists()
    await c.close()
    p.cleanup()


async def test_debug_mode_checks_results() -> None:
    for debug, expect_error in (("0", False), ("1", True)):
        p = EchoProc({"LLMBDO_DEBUG": debug})
        try:
            c = await RPCClient.connect_unix(str(p.socket))
            if expect_error:
                with pytest.raises(errors.InternalError, match="result_schema"):
                    await c.call("mcp.echo.badresult", {})
            else:
                assert await c.call("mcp.echo.badresult", {}) == 42
            await c.close()
        finally:
            p.cleanup()


def test_json_logging() -> None:
    p = EchoProc({"LLMBDO_LOG_FORMAT": "json"})
    p.stop()
    lines = [json.loads(line) for line in p.log.read_text().splitlines() if line.strip()]
    p.cleanup()
    assert any(e["msg"] == "listening" and e["level"] == "INFO" for e in lines)
    assert all({"ts", "level", "logger", "msg"} <= set(e) for e in lines)


def _settings(tmp: Path) -> Settings:
    return Settings(state_dir=tmp, run_dir=tmp, data_dir=tmp, log_dir=tmp, config_dir=tmp, virtual_root=tmp)


def test_bad_caps_stop_the_server(tmp_path: Path) -> None:
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"service_name": "t", "capabilities": [
        {"method": "mcp.t.a", "params_schema": {"type": "object", "properties": {}}, "positional": ["ghost"]}]}))

    class T(MCPServer):
        service_name = "t"
        caps_file = caps

        @method("mcp.t.a")
        async def a(self, params: dict[str, Any], ctx: Any) -> Any:
            return None

    with pytest.raises(CapsError, match="'ghost' is not a property"):
        T(_settings(tmp_path))


async def test_inline_handlers_answer_map_errors_and_notify(echo: EchoProc) -> None:
    c = await RPCClient.connect_unix(str(echo.socket))
    seen: list[Any] = []
    assert await c.call("mcp.echo.inline", {"n": 3}, on_notification=lambda m, p: seen.append(p)) == {"n": 3}
    assert [p["progress"] for p in seen] == [1, 2, 3]
    with pytest.raises(errors.InvalidParams, match="negative"):
        await c.call("mcp.echo.inline", {"n": -1})
    with pytest.raises(errors.InternalError) as info:
        await c.call("mcp.echo.inline", {"n": 0})
    assert info.value.message == "Internal error"
    # Inline calls and pooled ones share one connection without mixing their answers up.
    got = await asyncio.gather(c.call("mcp.echo.block", {"seconds": 0.2}), c.call("mcp.echo.inline", {"n": 1}))
    assert got == [{"blocked": 0.2}, {"n": 1}]
    await c.close()


async def test_inline_calls_with_odd_envelopes_are_checked_like_any_other(echo: EchoProc) -> None:
    """Inline handlers take a short way for well-formed requests; every other envelope still gets its error."""
    frames = [
        {"jsonrpc": "2.0", "id": True, "method": "mcp.echo.say", "params": {"text": "x"}},  # bool is no id
        {"jsonrpc": "2.0", "id": 1.5, "method": "mcp.echo.say", "params": {"text": "x"}},
        {"jsonrpc": "1.0", "id": 2, "method": "mcp.echo.say", "params": {"text": "x"}},
        {"jsonrpc": "2.0", "id": 3, "method": "mcp.echo.say", "params": "x"},
        {"jsonrpc": "2.0", "id": 4, "method": "mcp.echo.say", "params": {"text": 5}},
        {"jsonrpc": "2.0", "id": "s", "method": "mcp.echo.say", "params": ["positional"]},
        {"jsonrpc": "2.0", "id": 5, "method": "mcp.echo.say"},
    ]
    out = await raw_exchange(echo.socket, b"".join(encode_frame(f) for f in frames), len(frames))
    by_id = {json.dumps(m["id"]): m for m in out}
    assert [m.get("error", {}).get("code") for m in out[:3]] == [errors.INVALID_REQUEST] * 3
    assert by_id["3"]["error"]["code"] == errors.INVALID_REQUEST
    assert by_id["4"]["error"]["code"] == errors.INVALID_PARAMS and "text" in by_id["4"]["error"]["message"]
    assert by_id['"s"'] == {"jsonrpc": "2.0", "id": "s", "result": "positional"}
    assert by_id["5"]["error"]["code"] == errors.INVALID_PARAMS  # "text" is required


async def test_a_peer_that_does_not_read_is_held_back_and_others_are_served(echo: EchoProc) -> None:
    """Answers for a peer that only sends pile up to a bound, then the server stops reading from it."""
    reader, writer = await asyncio.open_unix_connection(str(echo.socket))
    big = "y" * 60_000
    frame = encode_frame({"jsonrpc": "2.0", "id": 1, "method": "mcp.echo.say", "params": {"text": big}})
    sent = 0
    try:
        # Keep sending until our own socket buffer is full: the server has stopped reading from us.
        for i in range(2000):
            writer.write(frame.replace(b'"id":1', f'"id":{i}'.encode()))
            sent += 1
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                break
        assert sent < 2000, "the server kept reading from a peer that never reads"
        # Meanwhile another client is served as usual.
        c = await RPCClient.connect_unix(str(echo.socket))
        assert await c.call("mcp.echo.say", {"text": "still here"}) == "still here"
        await c.close()
        # Once the stuck peer reads, it gets every answer, in order (what it had left to send goes out too).
        dec = NulFrameDecoder(1 << 24)
        got: list[Any] = []
        while len(got) < sent:
            chunk = await asyncio.wait_for(reader.read(1 << 20), 10)
            assert chunk
            got += [f.value for f in dec.receive_data(chunk)]
        assert [m["id"] for m in got] == list(range(sent))
        assert all(m["result"] == big for m in got)
    finally:
        writer.transport.abort()


def test_inline_is_refused_for_async_handlers() -> None:
    with pytest.raises(TypeError, match="inline=True is for plain def handlers"):
        @method("mcp.t.a", inline=True)
        async def a(self: Any, params: dict[str, Any], ctx: Any) -> Any:
            return None


def test_missing_handler_and_unknown_handler(tmp_path: Path) -> None:
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"service_name": "t", "capabilities": [{"method": "mcp.t.a"}]}))

    class NoHandler(MCPServer):
        service_name = "t"
        caps_file = caps

    with pytest.raises(CapsError, match="no handler"):
        NoHandler(_settings(tmp_path))

    class Extra(MCPServer):
        service_name = "t"
        caps_file = caps

        @method("mcp.t.a")
        async def a(self, params: dict[str, Any], ctx: Any) -> Any:
            return None

        @method("mcp.t.b")
        async def b(self, params: dict[str, Any], ctx: Any) -> Any:
            return None

    with pytest.raises(CapsError, match="no capability entry"):
        Extra(_settings(tmp_path))


def test_broken_caps_process_exits_with_message(tmp_path: Path) -> None:
    env = {**os.environ, "LLMBDO_RUN_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    code = ("from pathlib import Path\nfrom tests.support.echo_server import EchoServer\n"
            f"EchoServer.caps_file = Path({str(tmp_path / 'x.json')!r})\nEchoServer.main()\n")
    (tmp_path / "x.json").write_text("{broken")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30, cwd=REPO)
    assert res.returncode == 2
    assert "x.json: cannot be read as JSON" in res.stderr
