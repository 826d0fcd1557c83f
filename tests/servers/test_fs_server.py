"""The fs server end to end: a real `python -m llmbasedos.servers.fs` process, real sockets, real files."""

from __future__ import annotations

import asyncio
import base64
import ctypes
import os
import resource
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmbasedos.protocol import errors
from llmbasedos.protocol.errors import RPCError
from llmbasedos.rpc.client import RPCClient
from tests.support.procs import ServerHandle, start_server

SECRET = "TOPSECRET-fs-server"
MAX_READ = 64 * 1024
MAX_WRITE = 64 * 1024


@dataclass
class FS:
    base: Path  # holds root/ and outside/, neither of which a client may name
    root: Path
    outside: Path
    handle: ServerHandle


@pytest.fixture(scope="module")
def fs() -> Iterator[FS]:
    base = Path(tempfile.mkdtemp(prefix="lbfs", dir="/tmp"))
    root = base / "root"
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (base / "secret.txt").write_text(SECRET)
    _build_tree(root, base)
    handle = start_server("fs", {
        "LLMBDO_VIRTUAL_ROOT": str(root),
        "LLMBDO_RUN_DIR": str(base / "run"),
        "LLMBDO_STATE_DIR": str(base / "state"),
        "LLMBDO_FS_MAX_READ": str(MAX_READ),
        "LLMBDO_FS_MAX_WRITE": str(MAX_WRITE),
        "LLMBDO_MAX_FRAME": str(1024 * 1024),
        "LLMBDO_DEBUG": "1",  # results are checked against their result_schema
    })
    try:
        yield FS(base, root, outside, handle)
    finally:
        handle.stop()
        shutil.rmtree(base, ignore_errors=True)


def _build_tree(root: Path, base: Path) -> None:
    (root / "docs" / "sub").mkdir(parents=True)
    (root / "docs" / "hello.txt").write_text("hello world")
    (root / "docs" / "sub" / "deep.md").write_text("# deep")
    (root / "bin.dat").write_bytes(bytes(range(256)))
    (root / "big.txt").write_text("x" * (MAX_READ + 10))
    (root / "d1" / "d2" / "d3").mkdir(parents=True)
    os.symlink(base, root / "out1")  # depth 1, absolute, to the parent of the root
    os.symlink("../../outside", root / "d1" / "out2")  # depth 2, relative
    os.symlink("../../../../outside", root / "d1" / "d2" / "d3" / "out3")  # depth 4, relative
    os.symlink("/etc", root / "d1" / "d2" / "etc")  # depth 3, absolute system dir
    os.symlink(base / "outside" / "secret.txt", root / "secretlink")
    os.symlink("chain2", root / "chain1")
    os.symlink(str(base), root / "chain2")
    os.symlink("d1", root / "inside")  # stays inside: allowed
    os.symlink("docs/hello.txt", root / "hello_link")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    os.symlink("self", root / "self")
    os.symlink("/nonexistent-lbfs/x", root / "dangling_out")
    os.symlink("no-such-file", root / "dangling_in")


@pytest.fixture
async def client(fs: FS) -> AsyncIterator[RPCClient]:
    c = await RPCClient.connect_unix(str(fs.handle.socket))
    yield c
    await c.close()


@pytest.fixture
def work(fs: FS, request: pytest.FixtureRequest) -> str:
    """A fresh directory inside the root for one test; returns its virtual path."""
    name = "w-" + request.node.name.replace("[", "_").replace("]", "_").replace("/", "_")[:80]
    d = fs.root / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    return "/" + name


async def _error(client: RPCClient, method: str, params: Any) -> RPCError:
    with pytest.raises(RPCError) as info:
        await client.call(method, params)
    return info.value


def _no_host_paths(fs: FS, text: str) -> None:
    assert str(fs.base) not in text
    assert "/tmp/" not in text


# -- every operation end to end ------------------------------------------------------------------------------


async def test_list(client: RPCClient, fs: FS) -> None:
    entries = await client.call("mcp.fs.list", {"path": "/docs"})
    assert [(e["name"], e["path"], e["type"]) for e in entries] == [
        ("hello.txt", "/docs/hello.txt", "file"), ("sub", "/docs/sub", "directory")]
    assert entries[0]["size"] == 11 and entries[1]["size"] == -1
    assert entries[0]["modified_at"].endswith("+00:00")
    root = {e["name"]: e for e in await client.call("mcp.fs.list", ["/"])}
    assert root["out1"]["type"] == "symlink" and root["out1"]["target"] is None
    assert root["secretlink"]["target"] is None
    assert root["inside"]["type"] == "symlink" and root["inside"]["target"] == "/d1"
    assert root["hello_link"]["target"] == "/docs/hello.txt"
    assert root["dangling_in"]["target"] == "/no-such-file"
    assert {e["path"] for e in root.values()} == {"/" + n for n in root}
    assert await client.call("mcp.fs.list", {}) == await client.call("mcp.fs.list", {"path": "/"})
    assert [e["name"] for e in await client.call("mcp.fs.list", ["/inside/d2"])] == ["d3", "etc"]


async def test_list_errors(client: RPCClient) -> None:
    assert (await _error(client, "mcp.fs.list", ["/missing"])).code == errors.NOT_FOUND
    assert (await _error(client, "mcp.fs.list", ["/docs/hello.txt"])).code == errors.CONFLICT


async def test_stat(client: RPCClient) -> None:
    st = await client.call("mcp.fs.stat", {"path": "/docs/hello.txt"})
    assert st["type"] == "file" and st["size"] == 11 and st["path"] == "/docs/hello.txt" and st["mode"] == "0644"
    assert (await client.call("mcp.fs.stat", ["/docs"]))["type"] == "directory"
    assert (await client.call("mcp.fs.stat", ["/"]))["path"] == "/"
    link = await client.call("mcp.fs.stat", ["/hello_link", False])
    assert link["type"] == "symlink" and link["target"] == "/docs/hello.txt"
    followed = await client.call("mcp.fs.stat", ["/hello_link"])
    assert followed["type"] == "file" and followed["path"] == "/docs/hello.txt"
    out = await client.call("mcp.fs.stat", {"path": "/out1", "follow_symlinks": False})
    assert out["type"] == "symlink" and out["target"] is None
    assert (await _error(client, "mcp.fs.stat", ["/missing"])).code == errors.NOT_FOUND
    assert (await _error(client, "mcp.fs.stat", ["/dangling_in"])).code == errors.NOT_FOUND


async def test_read(client: RPCClient) -> None:
    r = await client.call("mcp.fs.read", {"path": "/docs/hello.txt"})
    assert r == {"path": "/docs/hello.txt", "content": "hello world", "encoding": "text",
                 "mime_type": "text/plain", "size": 11, "offset": 0, "length": 11}
    r = await client.call("mcp.fs.read", ["/bin.dat", "base64"])
    assert base64.b64decode(r["content"]) == bytes(range(256)) and r["mime_type"] == "application/octet-stream"
    r = await client.call("mcp.fs.read", {"path": "/docs/hello.txt", "offset": 6, "length": 3})
    assert r["content"] == "wor" and r["size"] == 11 and r["length"] == 3
    r = await client.call("mcp.fs.read", {"path": "/docs/hello.txt", "offset": 100})
    assert r["content"] == "" and r["length"] == 0
    assert (await client.call("mcp.fs.read", ["/docs/sub/deep.md"]))["mime_type"] == "text/markdown"
    assert (await client.call("mcp.fs.read", ["/hello_link"]))["content"] == "hello world"
    # Range reads get under the cap.
    part = await client.call("mcp.fs.read", {"path": "/big.txt", "offset": 10, "length": 100})
    assert part["content"] == "x" * 100 and part["size"] == MAX_READ + 10


async def test_read_errors(client: RPCClient) -> None:
    too_big = await _error(client, "mcp.fs.read", ["/big.txt"])
    assert too_big.code == errors.PAYLOAD_TOO_LARGE and "offset and length" in too_big.message
    e = await _error(client, "mcp.fs.read", {"path": "/big.txt", "length": MAX_READ + 1})
    assert e.code == errors.PAYLOAD_TOO_LARGE
    e = await _error(client, "mcp.fs.read", ["/bin.dat", "text"])
    assert e.code == errors.INVALID_PARAMS and "base64" in e.message
    assert (await _error(client, "mcp.fs.read", ["/docs"])).code == errors.CONFLICT
    assert (await _error(client, "mcp.fs.read", ["/missing.txt"])).code == errors.NOT_FOUND
    assert (await _error(client, "mcp.fs.read", {"path": "/x", "offset": -1})).code == errors.INVALID_PARAMS
    assert (await _error(client, "mcp.fs.read", {"path": "/x", "encoding": "utf16"})).code == errors.INVALID_PARAMS


async def test_write(client: RPCClient, fs: FS, work: str) -> None:
    r = await client.call("mcp.fs.write", {"path": f"{work}/a.txt", "content": "one"})
    assert r == {"path": f"{work}/a.txt", "bytes_written": 3, "status": "success"}
    assert (fs.root / work[1:] / "a.txt").read_text() == "one"
    await client.call("mcp.fs.write", [f"{work}/a.txt", "two"])
    assert (fs.root / work[1:] / "a.txt").read_text() == "two"
    r = await client.call("mcp.fs.write", [f"{work}/a.txt", "+3", "text", True])
    assert r["bytes_written"] == 2 and (fs.root / work[1:] / "a.txt").read_text() == "two+3"
    await client.call("mcp.fs.write", {"path": f"{work}/new-by-append", "content": "é", "append": True})
    assert (fs.root / work[1:] / "new-by-append").read_text() == "é"
    data = os.urandom(1000)
    r = await client.call("mcp.fs.write", {"path": f"{work}/b.bin", "content": base64.b64encode(data).decode(),
                                           "encoding": "base64"})
    assert r["bytes_written"] == 1000 and (fs.root / work[1:] / "b.bin").read_bytes() == data
    r = await client.call("mcp.fs.write", {"path": f"{work}/p/q/r.txt", "content": "deep", "create_parents": True})
    assert (fs.root / work[1:] / "p/q/r.txt").read_text() == "deep"
    # Writing through a symlink inside the root writes its target.
    (fs.root / work[1:] / "t.txt").write_text("old")
    os.symlink("t.txt", fs.root / work[1:] / "t_link")
    r = await client.call("mcp.fs.write", [f"{work}/t_link", "new"])
    assert r["path"] == f"{work}/t.txt" and (fs.root / work[1:] / "t.txt").read_text() == "new"
    os.chmod(fs.root / work[1:] / "t.txt", 0o600)
    await client.call("mcp.fs.write", [f"{work}/t.txt", "newer"])
    assert (fs.root / work[1:] / "t.txt").stat().st_mode & 0o777 == 0o600  # the mode survives the replace
    assert not [n for n in os.listdir(fs.root / work[1:]) if n.startswith(".")]


async def test_write_errors(client: RPCClient, fs: FS, work: str) -> None:
    e = await _error(client, "mcp.fs.write", [f"{work}/no/parent.txt", "x"])
    assert e.code == errors.NOT_FOUND
    assert (await _error(client, "mcp.fs.write", [work, "x"])).code == errors.CONFLICT
    assert (await _error(client, "mcp.fs.write", ["/", "x"])).code == errors.CONFLICT
    e = await _error(client, "mcp.fs.write", {"path": f"{work}/b", "content": "!!notb64", "encoding": "base64"})
    assert e.code == errors.INVALID_PARAMS and "base64" in e.message
    e = await _error(client, "mcp.fs.write", [f"{work}/big", "y" * (MAX_WRITE + 1)])
    assert e.code == errors.PAYLOAD_TOO_LARGE
    big = base64.b64encode(b"z" * (MAX_WRITE + 1)).decode()
    e = await _error(client, "mcp.fs.write", {"path": f"{work}/big", "content": big, "encoding": "base64"})
    assert e.code == errors.PAYLOAD_TOO_LARGE
    e = await _error(client, "mcp.fs.write", {"path": f"{work}/f/x", "content": "x", "create_parents": True,
                                               "nope": 1})
    assert e.code == errors.INVALID_PARAMS and "nope" in e.message
    assert os.listdir(fs.root / work[1:]) == []


async def test_atomic_write_leaves_nothing_on_error(start_server: Any, fs: FS) -> None:
    """A write that fails halfway (the file size limit of the server process) leaves the old file whole."""
    root = fs.base / "atomic-root"
    root.mkdir()
    (root / "f.txt").write_text("original")
    handle = start_server("fs", {"LLMBDO_VIRTUAL_ROOT": str(root)})
    # Python ignores SIGXFSZ, so a write past RLIMIT_FSIZE fails with EFBIG after the temp file exists.
    resource.prlimit(handle.proc.pid, resource.RLIMIT_FSIZE, (4096, 4096))
    c = await RPCClient.connect_unix(str(handle.socket))
    try:
        e = await _error(c, "mcp.fs.write", ["/f.txt", "x" * 10000])
        assert e.code == errors.INTERNAL_ERROR and "/f.txt" in e.message
        _no_host_paths(fs, e.message)
        e = await _error(c, "mcp.fs.write", ["/g.txt", "x" * 10000])
        assert sorted(os.listdir(root)) == ["f.txt"]
        assert (root / "f.txt").read_text() == "original"
        # The same server still writes what fits.
        await c.call("mcp.fs.write", ["/f.txt", "small"])
        assert (root / "f.txt").read_text() == "small" and sorted(os.listdir(root)) == ["f.txt"]
        (root / "src").mkdir()
        (root / "src" / "a").write_text("a")
        (root / "src" / "b").write_text("b" * 10000)
        e = await _error(c, "mcp.fs.copy", ["/src", "/dst"])
        assert sorted(os.listdir(root)) == ["f.txt", "src"]  # the half-copied tree is gone too
    finally:
        await c.close()


async def test_mkdir(client: RPCClient, fs: FS, work: str) -> None:
    r = await client.call("mcp.fs.mkdir", {"path": f"{work}/a"})
    assert r == {"path": f"{work}/a", "created": True, "status": "success"}
    assert (await _error(client, "mcp.fs.mkdir", [f"{work}/a"])).code == errors.ALREADY_EXISTS
    assert (await client.call("mcp.fs.mkdir", [f"{work}/a", False, True]))["created"] is False
    assert (await _error(client, "mcp.fs.mkdir", [f"{work}/x/y"])).code == errors.NOT_FOUND
    await client.call("mcp.fs.mkdir", {"path": f"{work}/x/y/z", "parents": True})
    assert (fs.root / work[1:] / "x/y/z").is_dir()
    (fs.root / work[1:] / "file").write_text("")
    assert (await _error(client, "mcp.fs.mkdir", [f"{work}/file/sub"])).code == errors.CONFLICT
    e = await _error(client, "mcp.fs.mkdir", {"path": f"{work}/file", "exist_ok": True})
    assert e.code == errors.CONFLICT
    assert (await _error(client, "mcp.fs.mkdir", ["/"])).code == errors.ALREADY_EXISTS


async def test_move(client: RPCClient, fs: FS, work: str) -> None:
    w = fs.root / work[1:]
    (w / "a.txt").write_text("a")
    r = await client.call("mcp.fs.move", {"source": f"{work}/a.txt", "destination": f"{work}/b.txt"})
    assert r == {"path": f"{work}/b.txt", "source": f"{work}/a.txt", "status": "success"}
    assert (w / "b.txt").read_text() == "a" and not (w / "a.txt").exists()
    (w / "c.txt").write_text("c")
    e = await _error(client, "mcp.fs.move", [f"{work}/c.txt", f"{work}/b.txt"])
    assert e.code == errors.ALREADY_EXISTS and (w / "b.txt").read_text() == "a"
    await client.call("mcp.fs.move", [f"{work}/c.txt", f"{work}/b.txt", True])
    assert (w / "b.txt").read_text() == "c"
    (w / "dir" / "in").mkdir(parents=True)
    await client.call("mcp.fs.move", {"source": f"{work}/dir", "destination": f"{work}/n/e/w", "create_parents": True})
    assert (w / "n/e/w/in").is_dir()
    os.symlink("b.txt", w / "lnk")
    await client.call("mcp.fs.move", [f"{work}/lnk", f"{work}/lnk2"])
    assert os.readlink(w / "lnk2") == "b.txt"
    assert (await _error(client, "mcp.fs.move", [f"{work}/n", f"{work}/n/e/inner"])).code == errors.INVALID_PARAMS
    assert (await _error(client, "mcp.fs.move", ["/", f"{work}/root"])).code == errors.FORBIDDEN
    assert (await _error(client, "mcp.fs.move", [f"{work}/b.txt", "/"])).code == errors.ALREADY_EXISTS
    assert (await _error(client, "mcp.fs.move", [f"{work}/nope", f"{work}/x"])).code == errors.NOT_FOUND
    assert (await _error(client, "mcp.fs.move", [f"{work}/b.txt", f"{work}/b.txt"])).code == errors.INVALID_PARAMS
    (w / "full" / "x").mkdir(parents=True)
    (w / "d2").mkdir()
    e = await _error(client, "mcp.fs.move", [f"{work}/d2", f"{work}/full", True])
    assert e.code == errors.CONFLICT


async def test_copy(client: RPCClient, fs: FS, work: str) -> None:
    w = fs.root / work[1:]
    (w / "a.txt").write_text("a")
    r = await client.call("mcp.fs.copy", {"source": f"{work}/a.txt", "destination": f"{work}/b.txt"})
    assert r == {"path": f"{work}/b.txt", "source": f"{work}/a.txt", "status": "success", "files": 1, "bytes": 1}
    assert (w / "b.txt").read_text() == "a" and (w / "a.txt").read_text() == "a"
    assert (await _error(client, "mcp.fs.copy", [f"{work}/a.txt", f"{work}/b.txt"])).code == errors.ALREADY_EXISTS
    (w / "a.txt").write_text("A2")
    await client.call("mcp.fs.copy", [f"{work}/a.txt", f"{work}/b.txt", True])
    assert (w / "b.txt").read_text() == "A2"
    (w / "tree" / "s1" / "s2").mkdir(parents=True)
    for i in range(5):
        (w / "tree" / f"f{i}").write_text(str(i))
    (w / "tree" / "s1" / "s2" / "deep").write_text("deep")
    os.symlink("../f0", w / "tree" / "s1" / "lnk")
    os.symlink(fs.outside, w / "tree" / "outlink")
    progress: list[Any] = []
    r = await client.call("mcp.fs.copy", [f"{work}/tree", f"{work}/tree2"],
                          on_notification=lambda m, p: progress.append((m, p)))
    assert r["files"] == 6 and r["bytes"] == 9
    assert len(progress) == 6 and all(m == "mcp.progress" for m, _ in progress)
    assert (w / "tree2" / "s1" / "s2" / "deep").read_text() == "deep"
    assert os.readlink(w / "tree2" / "s1" / "lnk") == "../f0"  # links are copied as links
    assert os.path.islink(w / "tree2" / "outlink")  # ... and never followed
    assert sorted(os.listdir(fs.outside)) == ["secret.txt"]
    e = await _error(client, "mcp.fs.copy", [f"{work}/tree", f"{work}/tree2", True])
    assert e.code == errors.CONFLICT
    assert (await _error(client, "mcp.fs.copy", [f"{work}/tree", f"{work}/tree/in"])).code == errors.INVALID_PARAMS
    assert (await _error(client, "mcp.fs.copy", ["/", f"{work}/all"])).code == errors.FORBIDDEN
    assert (await _error(client, "mcp.fs.copy", [f"{work}/a.txt", f"{work}/tree"])).code == errors.ALREADY_EXISTS
    e = await _error(client, "mcp.fs.copy", [f"{work}/a.txt", f"{work}/tree", True])
    assert e.code == errors.CONFLICT
    await client.call("mcp.fs.copy",
                      {"source": f"{work}/a.txt", "destination": f"{work}/x/y/a", "create_parents": True})
    assert (w / "x/y/a").read_text() == "A2"
    assert not [n for n in os.listdir(w) if n.startswith(".")]


async def test_delete(client: RPCClient, fs: FS, work: str) -> None:
    w = fs.root / work[1:]
    (w / "a.txt").write_text("a")
    assert await client.call("mcp.fs.delete", [f"{work}/a.txt"]) == {"path": f"{work}/a.txt", "status": "success"}
    assert not (w / "a.txt").exists()
    (w / "empty").mkdir()
    await client.call("mcp.fs.delete", {"path": f"{work}/empty"})
    (w / "full" / "sub").mkdir(parents=True)
    (w / "full" / "sub" / "f").write_text("f")
    e = await _error(client, "mcp.fs.delete", [f"{work}/full"])
    assert e.code == errors.CONFLICT and "recursive" in e.message and (w / "full/sub/f").exists()
    await client.call("mcp.fs.delete", [f"{work}/full", True])
    assert not (w / "full").exists()
    os.symlink(fs.outside, w / "outlink")
    await client.call("mcp.fs.delete", [f"{work}/outlink", True])  # removes the link, not what it points at
    assert not os.path.lexists(w / "outlink") and (fs.outside / "secret.txt").read_text() == SECRET
    assert (await _error(client, "mcp.fs.delete", [f"{work}/nope"])).code == errors.NOT_FOUND
    for root in ("/", "//", "/.", f"{work}/..", "/docs/../"):
        e = await _error(client, "mcp.fs.delete", [root, True])
        assert e.code == errors.FORBIDDEN, root
    assert (fs.root / "docs" / "hello.txt").exists()


# -- the adversarial path corpus -------------------------------------------------------------------------------

OUT = errors.PATH_OUTSIDE_ROOT
BAD = errors.INVALID_PARAMS
NF = errors.NOT_FOUND
CF = errors.CONFLICT


def _corpus() -> list[tuple[str, str, Any, set[int]]]:
    """(id, method, params, acceptable error codes). No case may succeed in reading or writing outside."""
    reads: list[tuple[str, set[int]]] = [
        ("../secret.txt", {OUT}), ("/../secret.txt", {OUT}), ("..", {OUT}), ("/..", {OUT}),
        ("/docs/../../secret.txt", {OUT}), ("docs/sub/../../../secret.txt", {OUT}),
        ("../../../../../../etc/passwd", {OUT}), ("/./../secret.txt", {OUT}), ("//../secret.txt", {OUT}),
        ("/docs/./../.././secret.txt", {OUT}),
        ("/etc/passwd", {NF}), ("//etc//passwd", {NF}), ("///secret.txt", {NF}), ("/tmp", {NF}),
        ("%2e%2e/secret.txt", {NF}), ("%2e%2e%2fsecret.txt", {NF}), ("..%2fsecret.txt", {NF}),
        ("..%252fsecret.txt", {NF}), ("..\\secret.txt", {NF}), ("\\..\\secret.txt", {NF}), ("..;/secret.txt", {NF}),
        (".../secret.txt", {NF}), ("....//secret.txt", {NF}), ("..\u2215secret.txt", {NF}),
        ("\uff0e\uff0e/secret.txt", {NF}), ("~/secret.txt", {NF}), ("$HOME/secret.txt", {NF}),
        ("file:///etc/passwd", {NF}), (" ../secret.txt", {NF}), ("../ secret.txt", {OUT}),
        ("/out1/secret.txt", {OUT}), ("/out1/outside/secret.txt", {OUT}), ("/out1", {OUT}),
        ("/d1/out2/secret.txt", {OUT}), ("/d1/d2/d3/out3/secret.txt", {OUT}), ("/d1/d2/etc/passwd", {OUT}),
        ("/secretlink", {OUT}), ("/chain1/secret.txt", {OUT}), ("/chain1/outside/secret.txt", {OUT}),
        ("/inside/out2/secret.txt", {OUT}), ("/inside/d2/d3/out3/secret.txt", {OUT}),
        ("/inside/d2/../out2/secret.txt", {OUT}), ("/loop1", {BAD}), ("/loop1/x", {BAD}), ("/self", {BAD}),
        ("/dangling_out", {OUT}), ("/dangling_in", {NF}), ("a\u0000b", {BAD}), ("../secret.txt\u0000.txt", {BAD}),
        ("/docs/hello.txt\u0000", {BAD}), ("x" * 256, {BAD}), ("/" + "/".join(["d"] * 2100), {BAD}),
        ("", {BAD}), ("/docs/hello.txt/..", {CF}), ("/docs/hello.txt/x", {CF}),
    ]
    cases: list[tuple[str, str, Any, set[int]]] = []
    for i, (p, codes) in enumerate(reads):
        cases.append((f"read-{i}", "mcp.fs.read", {"path": p}, codes if p != "/docs/hello.txt/.." else {CF}))
    for bad in (1, None, True, ["../secret.txt"], {"path": "../secret.txt"}, 1.5):
        cases.append((f"read-type-{bad!r}", "mcp.fs.read", {"path": bad}, {BAD}))
    for i, p in enumerate(["/out1", "/d1/out2", "/d1/d2/etc", "/chain1", "../", "/inside/out2", "/loop1"]):
        cases.append((f"list-{i}", "mcp.fs.list", {"path": p}, {OUT, BAD}))
    for i, p in enumerate(["/out1", "/d1/out2", "/secretlink", "/d1/d2/d3/out3", "/dangling_out", ".."]):
        cases.append((f"stat-{i}", "mcp.fs.stat", {"path": p}, {OUT}))
    writes = ["/out1/pwned.txt", "/d1/out2/pwned.txt", "/d1/d2/d3/out3/pwned.txt", "/secretlink",
              "/chain1/pwned.txt", "/dangling_out", "../pwned.txt", "/inside/out2/pwned.txt",
              "/out1/outside/secret.txt"]
    for i, p in enumerate(writes):
        cases.append((f"write-{i}", "mcp.fs.write", {"path": p, "content": "PWNED"}, {OUT}))
        cases.append((f"append-{i}", "mcp.fs.write", {"path": p, "content": "PWNED", "append": True}, {OUT}))
    cases.append(("write-parents", "mcp.fs.write",
                  {"path": "/out1/new/dir/pwned.txt", "content": "PWNED", "create_parents": True}, {OUT}))
    for i, p in enumerate(["/out1/newdir", "/d1/out2/newdir", "../newdir", "/dangling_out/x"]):
        cases.append((f"mkdir-{i}", "mcp.fs.mkdir", {"path": p, "parents": True}, {OUT}))
    for i, (s, d) in enumerate([("/secretlink", "/stolen"), ("/out1/secret.txt", "/stolen"),
                                ("/docs/hello.txt", "/out1/pwned.txt"), ("/docs", "/d1/out2/pwned"),
                                ("/d1/out2", "/stolen")]):
        cases.append((f"copy-{i}", "mcp.fs.copy", {"source": s, "destination": d}, {OUT}))
    for i, (s, d) in enumerate([("/out1/secret.txt", "/stolen"), ("/docs/hello.txt", "/out1/pwned.txt"),
                                ("../secret.txt", "/stolen"), ("/docs/hello.txt", "../pwned.txt")]):
        cases.append((f"move-{i}", "mcp.fs.move", {"source": s, "destination": d}, {OUT}))
    for i, p in enumerate(["/out1/secret.txt", "/d1/out2/secret.txt", "../secret.txt", "/chain1/outside"]):
        cases.append((f"delete-{i}", "mcp.fs.delete", {"path": p, "recursive": True}, {OUT}))
    return cases


CORPUS = _corpus()


def _outside_state(fs: FS) -> dict[str, bytes]:
    state: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(fs.base):
        if Path(dirpath).is_relative_to(fs.root) or Path(dirpath).is_relative_to(fs.base / "run"):
            dirnames[:] = []
            continue
        for name in filenames:
            p = Path(dirpath) / name
            state[str(p.relative_to(fs.base))] = p.read_bytes()
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_relative_to(fs.root)
                       and d not in ("run", "state", "atomic-root")]
    return state


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 50
    assert len({c[0] for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize(("method", "params", "codes"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
async def test_adversarial_path(client: RPCClient, fs: FS, method: str, params: Any, codes: set[int]) -> None:
    before = _outside_state(fs)
    e = await _error(client, method, params)
    assert e.code in codes, (e.code, e.message)
    _no_host_paths(fs, e.message + repr(e.data))
    assert SECRET not in e.message
    assert _outside_state(fs) == before
    assert not (fs.root / "stolen").exists()
    assert (fs.outside / "secret.txt").read_text() == SECRET


def _exchange(a: Path, b: Path) -> None:
    """Atomically swap two directory entries (renameat2 RENAME_EXCHANGE), or swap them in two renames."""
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is not None and fn(-100, os.fsencode(a), -100, os.fsencode(b), 2) == 0:
        return
    tmp = a.with_name(a.name + ".swap")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)


def _restore_inside_secret(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return  # it is the symlink to the outside at this instant
    try:
        fd = os.open("secret.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
    except FileExistsError:
        return
    finally:
        os.close(dfd)
    with os.fdopen(fd, "wb") as fh:
        fh.write(b"inside")


async def test_symlink_swapped_in_during_use(client: RPCClient, fs: FS, work: str) -> None:
    """A thread flips a directory (and a file) with symlinks to the outside while calls run: zero escapes."""
    w = fs.root / work[1:]
    (w / "race").mkdir()
    (w / "race" / "secret.txt").write_text("inside")
    os.symlink(fs.outside, w / "race_alt")
    (w / "file").write_text("inside")
    os.symlink(fs.outside / "secret.txt", w / "file_alt")
    before = _outside_state(fs)
    stop = threading.Event()
    flips = 0

    def flip() -> None:
        nonlocal flips
        while not stop.is_set():
            _exchange(w / "race", w / "race_alt")
            _exchange(w / "file", w / "file_alt")
            flips += 1

    async def attempt(i: int) -> list[str]:
        calls: list[tuple[str, Any]] = [
            ("mcp.fs.read", {"path": f"{work}/race/secret.txt"}),
            ("mcp.fs.read", {"path": f"{work}/file"}),
            ("mcp.fs.list", {"path": f"{work}/race"}),
            ("mcp.fs.write", {"path": f"{work}/race/w{i}", "content": "PWNED"}),
            ("mcp.fs.write", {"path": f"{work}/race/secret.txt", "content": "PWNED", "append": True}),
            ("mcp.fs.write", {"path": f"{work}/file_alt", "content": "inside"}),
            ("mcp.fs.mkdir", {"path": f"{work}/race/m{i}"}),
            ("mcp.fs.copy", {"source": f"{work}/race/secret.txt", "destination": f"{work}/c{i}"}),
            ("mcp.fs.delete", {"path": f"{work}/race/secret.txt"}),
        ]
        out: list[str] = []
        for method, params in calls:
            try:
                out.append(orjson.dumps(await client.call(method, params)).decode())
            except RPCError as exc:
                out.append(exc.message)
        return out

    flipper = threading.Thread(target=flip)
    flipper.start()
    seen: list[str] = []
    try:
        for batch in range(12):
            for result in await asyncio.gather(*(attempt(batch * 16 + j) for j in range(16))):
                seen.extend(result)
            # Keep the bait in place: restore the inside secret file the delete calls remove. The flipper still
            # runs, so the directory is opened without following a symlink and the file created inside that
            # fd: a check of the name then a write through it could itself land outside.
            for d in (w / "race", w / "race_alt"):
                _restore_inside_secret(d)
    finally:
        stop.set()
        flipper.join()
    assert flips > 0
    assert not [s for s in seen if SECRET in s]
    assert _outside_state(fs) == before
    assert sorted(os.listdir(fs.outside)) == ["secret.txt"]
    assert any('"inside"' in s for s in seen)  # the calls did run against the real directory too


# -- concurrency -----------------------------------------------------------------------------------------------


async def test_many_calls_in_flight_on_one_connection(client: RPCClient, fs: FS, work: str) -> None:
    w = fs.root / work[1:]
    for i in range(100):
        (w / f"f{i}").write_text(f"content {i}")
    results = await asyncio.gather(*(client.call("mcp.fs.read", [f"{work}/f{i}"]) for i in range(100)),
                                   *(client.call("mcp.fs.write", [f"{work}/g{i}", str(i)]) for i in range(100)),
                                   *(client.call("mcp.fs.stat", [f"{work}/f{i}"]) for i in range(100)))
    assert [r["content"] for r in results[:100]] == [f"content {i}" for i in range(100)]
    assert [r["path"] for r in results[100:200]] == [f"{work}/g{i}" for i in range(100)]
    assert [r["path"] for r in results[200:]] == [f"{work}/f{i}" for i in range(100)]
    assert all((w / f"g{i}").read_text() == str(i) for i in range(100))


async def test_many_connections(fs: FS, work: str) -> None:
    async def worker(n: int) -> list[str]:
        c = await RPCClient.connect_unix(str(fs.handle.socket))
        try:
            await asyncio.gather(*(c.call("mcp.fs.write", [f"{work}/c{n}-{i}", f"{n}:{i}"]) for i in range(10)))
            reads = await asyncio.gather(*(c.call("mcp.fs.read", [f"{work}/c{n}-{i}"]) for i in range(10)))
            return [r["content"] for r in reads]
        finally:
            await c.close()

    results = await asyncio.gather(*(worker(n) for n in range(20)))
    assert results == [[f"{n}:{i}" for i in range(10)] for n in range(20)]
    assert len(await asyncio.gather(*(_one_list(fs, work) for _ in range(20)))) == 20


async def _one_list(fs: FS, work: str) -> int:
    c = await RPCClient.connect_unix(str(fs.handle.socket))
    try:
        return len(await c.call("mcp.fs.list", [work]))
    finally:
        await c.close()


# -- bad input of every kind, then the server still serves -------------------------------------------------------


async def _raw_exchange(fs: FS, payload: bytes) -> list[Any]:
    reader, writer = await asyncio.open_unix_connection(str(fs.handle.socket))
    try:
        writer.write(payload)
        await writer.drain()
        frames: list[Any] = []
        buf = b""
        while payload.count(b"\0") > len(frames):
            chunk = await asyncio.wait_for(reader.read(1 << 16), 20)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\0")
            frames.extend(orjson.loads(f) for f in done if f)
        return frames
    finally:
        writer.close()


@pytest.mark.parametrize(("payload", "code"), [
    (b"{not json\0", errors.PARSE_ERROR),
    (b"\xff\xfe\0", errors.PARSE_ERROR),
    (b'"just a string"\0', errors.INVALID_REQUEST),
    (b'{"jsonrpc":"1.0","id":1,"method":"mcp.fs.list"}\0', errors.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"method":"mcp.fs.nope"}\0', errors.METHOD_NOT_FOUND),
    (b'{"jsonrpc":"2.0","id":1,"method":"mcp.fs.read"}\0', errors.INVALID_PARAMS),
    (b'{"jsonrpc":"2.0","id":1,"method":"mcp.fs.read","params":{}}\0', errors.INVALID_PARAMS),
    (b'{"jsonrpc":"2.0","id":1,"method":"mcp.fs.read","params":"str"}\0', errors.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"method":"mcp.fs.read","params":["/a","text",0,1,"extra"]}\0', errors.INVALID_PARAMS),
    (b'{"jsonrpc":"2.0","id":1,"method":"mcp.fs.read","params":[42]}\0', errors.INVALID_PARAMS),
    (b'{"jsonrpc":"2.0","id":1,"method":"mcp.fs.read","params":{"path":"/a","bogus":1}}\0', errors.INVALID_PARAMS),
    (b'{"jsonrpc":"2.0","id":1,"method":"mcp.fs.read","params":{"path":"\\ud800"}}\0', None),
    (b'{"jsonrpc":"2.0","id":1,"method":"mcp.fs.write","params":{"path":"/a","content":5}}\0', errors.INVALID_PARAMS),
    (b'{"jsonrpc":"2.0","id":1,"method":"mcp.fs.delete","params":{"path":"/a","recursive":"yes"}}\0',
     errors.INVALID_PARAMS),
    (b'{"jsonrpc":"2.0","id":1,"method":"mcp.fs.read","params":{"path":"/a\\u0000b"}}\0', errors.INVALID_PARAMS),
    (b"[]\0", errors.INVALID_REQUEST),
    (b"x" * (1024 * 1024 + 10) + b"\0", errors.FRAME_TOO_LARGE),
], ids=["bad-json", "bad-utf8", "not-object", "bad-version", "unknown-method", "no-params", "empty-params",
        "string-params", "too-many-positional", "positional-type", "extra-param", "lone-surrogate",
        "content-type", "flag-type", "nul-in-path", "empty-batch", "oversize-frame"])
async def test_bad_input(fs: FS, client: RPCClient, payload: bytes, code: int | None) -> None:
    frames = await _raw_exchange(fs, payload)
    assert len(frames) == 1 and "error" in frames[0], frames
    if code is None:  # a lone surrogate: refused by the JSON codec or by the path check, either is fine
        assert frames[0]["error"]["code"] in (errors.PARSE_ERROR, errors.INVALID_PARAMS)
    else:
        assert frames[0]["error"]["code"] == code, frames[0]
    _no_host_paths(fs, orjson.dumps(frames[0]).decode())
    # ... and the server is still serving.
    assert (await client.call("mcp.fs.stat", ["/docs/hello.txt"]))["size"] == 11


async def test_batch_and_positional_compatibility(fs: FS) -> None:
    batch = orjson.dumps([
        {"jsonrpc": "2.0", "id": 1, "method": "mcp.fs.list", "params": ["/docs"]},
        {"jsonrpc": "2.0", "id": 2, "method": "mcp.fs.read", "params": ["/docs/hello.txt", "base64"]},
        {"jsonrpc": "2.0", "id": 3, "method": "mcp.fs.read", "params": ["../secret.txt"]},
    ]) + b"\0"
    (answers,) = await _raw_exchange(fs, batch)
    by_id = {a["id"]: a for a in answers}
    assert len(by_id[1]["result"]) == 2
    assert base64.b64decode(by_id[2]["result"]["content"]) == b"hello world"
    assert by_id[3]["error"]["code"] == errors.PATH_OUTSIDE_ROOT


async def test_error_messages_never_show_the_host_root(client: RPCClient, fs: FS) -> None:
    # A host path given by the client is just a virtual path that does not exist.
    e = await _error(client, "mcp.fs.read", [str(fs.root / "docs" / "hello.txt")])
    assert e.code == errors.NOT_FOUND
    probes: list[tuple[str, Any]] = [
        ("mcp.fs.read", ["/docs/nope"]), ("mcp.fs.list", ["/docs/hello.txt"]), ("mcp.fs.read", ["/out1"]),
        ("mcp.fs.write", ["/docs/sub/deep.md/x", "x"]), ("mcp.fs.delete", ["/docs"]),
        ("mcp.fs.mkdir", ["/docs"]), ("mcp.fs.stat", ["/d1/d2/etc"]), ("mcp.fs.move", ["/docs/nope", "/x"]),
    ]
    for method, params in probes:
        e = await _error(client, method, params)
        _no_host_paths(fs, e.message + repr(e.data))
        assert str(fs.root) not in e.message


async def test_cap_file_lists_every_operation(fs: FS) -> None:
    caps = fs.handle.cap
    methods = {c["method"]: c for c in caps["capabilities"]}
    for name in ("list", "stat", "read", "write", "mkdir", "move", "copy", "delete"):
        cap = methods[f"mcp.fs.{name}"]
        assert cap["params_schema"]["additionalProperties"] is False
        assert "result_schema" in cap and cap["description"] and "readOnlyHint" in cap["annotations"]
    assert caps["socket"] == str(fs.handle.socket)


async def test_root_is_created_when_missing(start_server: Any) -> None:
    base = Path(tempfile.mkdtemp(prefix="lbfr", dir="/tmp"))
    try:
        handle = start_server("fs", {"LLMBDO_VIRTUAL_ROOT": str(base / "a" / "b")})
        assert (base / "a" / "b").is_dir()
        c = await RPCClient.connect_unix(str(handle.socket))
        try:
            assert await c.call("mcp.fs.list", ["/"]) == []
        finally:
            await c.close()
        assert handle.stop() == 0
        assert not handle.cap_path.exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
