"""RPCClient against a raw UNIX-socket server that sends exactly the frames a test writes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from llmbasedos.rpc.client import RPCClient


async def test_notifications_with_odd_ids_are_dropped_and_the_answer_still_arrives(tmp_path: Path) -> None:
    """A notification whose params.id is a list or an object matches no call: it is dropped, and neither the
    call nor the connection suffers (a lookup with such an id used to raise in the read path)."""
    seen: list[tuple[str, Any]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = orjson.loads((await reader.readuntil(b"\0"))[:-1])
        rid = request["id"]
        for odd in ([rid], {"id": rid}, 1.5, None):
            writer.write(orjson.dumps({"jsonrpc": "2.0", "method": "progress", "params": {"id": odd}}) + b"\0")
        writer.write(orjson.dumps({"jsonrpc": "2.0", "method": "progress", "params": {"id": rid, "n": 1}}) + b"\0")
        writer.write(orjson.dumps({"jsonrpc": "2.0", "id": rid, "result": "done"}) + b"\0")
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    path = str(tmp_path / "odd.sock")
    server = await asyncio.start_unix_server(serve, path)
    async with server:
        client = await RPCClient.connect_unix(path)
        try:
            result = await asyncio.wait_for(
                client.call("mcp.odd.go", {}, on_notification=lambda m, p: seen.append((m, p))), 10)
            assert result == "done"
            assert client.is_open
            assert [p["n"] for _, p in seen] == [1]  # only the notification that names the call reached it
        finally:
            await client.close()
