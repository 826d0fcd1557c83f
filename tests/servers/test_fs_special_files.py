"""No special file can wedge the fs server: FIFOs, sockets and devices under the root, on a real fs process.

Every method that opens a file (read, append, write, docx read and update, copy, indexing) refuses them with
a Conflict that names the path and its kind, without opening them; a tree copy and an indexing run skip them
and list them. A call that would block would hang the server's thread pool, so each call has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docx
import pytest

from llmbasedos.protocol import errors
from llmbasedos.rpc.client import RPCClient
from tests.support.procs import ServerHandle, start_server

DEADLINE_S = 20.0  # far above any answer here; reached only when a call hangs


@dataclass
class FS:
    root: Path
    handle: ServerHandle
    has_device: bool


def _unblock_fifos(root: Path) -> None:
    """Give every FIFO under `root` a writer and close it: a server thread stuck opening one (today's bug)
    gets EOF and lets the server stop."""
    for path in root.rglob("*"):
        if path.is_fifo():
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.fixture(scope="module")
def fs() -> Iterator[FS]:
    base = Path(tempfile.mkdtemp(prefix="lbsp", dir="/tmp"))
    root = base / "root"
    (root / "tree" / "sub").mkdir(parents=True)
    os.mkfifo(root / "pipe")
    os.mkfifo(root / "pipe.docx")
    os.mkfifo(root / "pipe.pdf")
    (root / "to_pipe.docx").symlink_to("pipe.docx")
    (root / "zero_link").symlink_to("/dev/zero")
    (root / "tree" / "a.txt").write_text("alpha\n")
    (root / "tree" / "sub" / "b.txt").write_text("beta\n")
    os.mkfifo(root / "tree" / "sub" / "queue")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "tree" / "sock"))
    try:
        os.mknod(root / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
        has_device = True
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EACCES):
            raise
        has_device = False
    document = docx.Document()
    document.add_paragraph("still answering")
    document.save(str(root / "ok.docx"))
    handle = start_server("fs", {"LLMBDO_VIRTUAL_ROOT": str(root), "LLMBDO_DATA_DIR": str(base / "data"),
                                 "LLMBDO_DEBUG": "1"})
    try:
        yield FS(root, handle, has_device)
    finally:
        _unblock_fifos(root)
        handle.stop()
        sock.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def client(fs: FS) -> AsyncIterator[RPCClient]:
    c = await RPCClient.connect_unix(str(fs.handle.socket))
    try:
        yield c
    finally:
        await c.close()


async def _call(client: RPCClient, method: str, params: Any) -> Any:
    return await asyncio.wait_for(client.call(method, params), DEADLINE_S)


async def test_ten_docx_reads_of_a_fifo_then_a_normal_call(fs: FS, client: RPCClient) -> None:
    calls = [_call(client, "mcp.fs.read_docx_paragraphs", {"path": "/pipe.docx"}) for _ in range(10)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        assert isinstance(outcome, errors.Conflict), outcome
        assert outcome.message == "Not a regular file: /pipe.docx is a FIFO"
    # The thread pool is not wedged: a normal call (one that needs a worker thread) still answers.
    paragraphs = await _call(client, "mcp.fs.read_docx_paragraphs", {"path": "/ok.docx"})
    assert paragraphs[0]["text"] == "still answering"
    assert fs.handle.alive()


@pytest.mark.parametrize(("method", "params"), [
    ("mcp.fs.read", {"path": "/pipe"}),
    ("mcp.fs.read", {"path": "/pipe", "offset": 10, "length": 5}),
    ("mcp.fs.read", {"path": "/pipe", "encoding": "base64"}),
    ("mcp.fs.write", {"path": "/pipe", "content": "x", "append": True}),
    ("mcp.fs.write", {"path": "/pipe", "content": "x"}),
    ("mcp.fs.read_docx_paragraphs", {"path": "/to_pipe.docx"}),
    ("mcp.fs.update_docx_paragraphs", {"path": "/pipe.docx", "updates": [{"index": 0, "text": "x"}]}),
    ("mcp.fs.copy", {"source": "/pipe", "destination": "/pipe-copy"}),
    ("mcp.fs.read", {"path": "/tree/sock"}),
    ("mcp.fs.copy", {"source": "/tree/sock", "destination": "/sock-copy"}),
])
async def test_every_opener_refuses_special_files(fs: FS, client: RPCClient, method: str,
                                                  params: dict[str, Any]) -> None:
    with pytest.raises(errors.Conflict) as caught:
        await _call(client, method, params)
    name = params.get("path") or params["source"]
    kind = "socket" if "sock" in name else "FIFO"
    shown = "/pipe.docx" if name == "/to_pipe.docx" else name  # the message names the path the link leads to
    assert caught.value.message == f"Not a regular file: {shown} is a {kind}"
    assert str(fs.root) not in caught.value.message
    assert not (fs.root / "pipe-copy").exists() and not (fs.root / "sock-copy").exists()
    assert stat.S_ISFIFO(os.lstat(fs.root / "pipe").st_mode)  # still the FIFO, not replaced by a file


async def test_devices_are_refused_or_confined(fs: FS, client: RPCClient) -> None:
    with pytest.raises(errors.PathOutsideRoot):
        await _call(client, "mcp.fs.read", {"path": "/zero_link"})
    if not fs.has_device:
        pytest.skip("this machine does not let the tests make a device node")
    for method, params in (("mcp.fs.read", {"path": "/zero"}),
                           ("mcp.fs.read", {"path": "/zero", "offset": 0, "length": 100}),
                           ("mcp.fs.read_docx_paragraphs", {"path": "/zero"}),
                           ("mcp.fs.write", {"path": "/zero", "content": "x", "append": True}),
                           ("mcp.fs.copy", {"source": "/zero", "destination": "/zero-copy"})):
        with pytest.raises(errors.Conflict, match=r"^Not a regular file: /zero is a character device$"):
            await _call(client, method, params)
    assert not (fs.root / "zero-copy").exists()


async def test_tree_copy_skips_and_lists_special_files(fs: FS, client: RPCClient) -> None:
    result = await _call(client, "mcp.fs.copy", {"source": "/tree", "destination": "/tree-copy"})
    try:
        assert result["files"] == 2
        assert sorted(result["skipped"], key=lambda s: s["path"]) == [
            {"path": "/tree/sock", "reason": "socket, not a regular file"},
            {"path": "/tree/sub/queue", "reason": "FIFO, not a regular file"},
        ]
        copied = sorted(str(p.relative_to(fs.root / "tree-copy")) for p in (fs.root / "tree-copy").rglob("*"))
        assert copied == ["a.txt", "sub", "sub/b.txt"]
    finally:
        shutil.rmtree(fs.root / "tree-copy", ignore_errors=True)


async def test_indexing_skips_and_lists_special_files(fs: FS, client: RPCClient) -> None:
    # Special files only (a directory of them, and one named as the target): no text to embed, so the run
    # needs no model and says what it skipped.
    special = fs.root / "specials"
    special.mkdir()
    os.mkfifo(special / "notes.md")
    os.mkfifo(special / "report.pdf")
    try:
        report = await _call(client, "mcp.fs.embed", {"path": "/specials"})
        assert report["status"] == "success" and report["files_indexed"] == 0
        assert sorted(report["skipped"], key=lambda s: s["path"]) == [
            {"path": "/specials/notes.md", "reason": "FIFO, not a regular file"},
            {"path": "/specials/report.pdf", "reason": "FIFO, not a regular file"},
        ]
        single = await _call(client, "mcp.fs.embed", {"path": "/pipe.pdf"})
        assert single["skipped"] == [{"path": "/pipe.pdf", "reason": "FIFO, not a regular file"}]
    except errors.FeatureUnavailable:
        pytest.skip("the search extra is not installed")
    finally:
        shutil.rmtree(special, ignore_errors=True)


async def test_moving_a_fifo_renames_it_without_opening_it(fs: FS, client: RPCClient) -> None:
    # A move is a rename: nothing is opened, so a stray FIFO can be tidied away like any entry.
    os.mkfifo(fs.root / "stray")
    result = await _call(client, "mcp.fs.move", {"source": "/stray", "destination": "/stray-moved"})
    assert result["path"] == "/stray-moved"
    assert stat.S_ISFIFO(os.lstat(fs.root / "stray-moved").st_mode)
    await _call(client, "mcp.fs.delete", {"path": "/stray-moved"})
