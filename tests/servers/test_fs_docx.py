"""mcp.fs.read_docx_paragraphs / update_docx_paragraphs on a real fs server, documents made with python-docx."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docx
import pytest

from llmbasedos.protocol import errors
from llmbasedos.rpc.client import RPCClient
from tests.support.procs import ServerHandle, start_server


class Env:
    def __init__(self, base: Path, root: Path, handle: ServerHandle) -> None:
        self.base, self.root, self.handle = base, root, handle


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    base = Path(tempfile.mkdtemp(prefix="lbx", dir="/tmp"))
    root = base / "files"
    root.mkdir()
    handle = start_server("fs", {"LLMBDO_VIRTUAL_ROOT": str(root), "LLMBDO_DATA_DIR": str(base / "data"),
                                 "LLMBDO_DEBUG": "1"})
    try:
        yield Env(base, root, handle)
    finally:
        handle.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def client(env: Env) -> AsyncIterator[RPCClient]:
    c = await RPCClient.connect_unix(str(env.handle.socket))
    try:
        yield c
    finally:
        await c.close()


def make_doc(path: Path) -> None:
    document = docx.Document()
    document.add_heading("Report", level=1)
    p = document.add_paragraph()
    p.add_run("Our sales ").bold = True
    p.add_run("went up a lot ")
    p.add_run("last quarter.").italic = True
    document.add_paragraph("First point", style="List Bullet")
    document.add_paragraph("Closing words.")
    document.save(str(path))


async def test_read_paragraphs(env: Env, client: RPCClient) -> None:
    make_doc(env.root / "read.docx")
    paragraphs = await client.call("mcp.fs.read_docx_paragraphs", {"path": "/read.docx"})
    assert paragraphs == [
        {"index": 0, "text": "Report", "style": "Heading 1"},
        {"index": 1, "text": "Our sales went up a lot last quarter.", "style": "Normal"},
        {"index": 2, "text": "First point", "style": "List Bullet"},
        {"index": 3, "text": "Closing words.", "style": "Normal"},
    ]
    # The original positional form.
    assert await client.call("mcp.fs.read_docx_paragraphs", ["/read.docx"]) == paragraphs


async def test_update_round_trip_keeps_styles_and_formatting(env: Env, client: RPCClient) -> None:
    path = env.root / "edit.docx"
    make_doc(path)
    os.chmod(path, 0o640)
    new = "The company experienced significant growth in sales during the most recent fiscal quarter."
    result = await client.call("mcp.fs.update_docx_paragraphs",
                               {"path": "/edit.docx", "updates": [{"index": 1, "text": new},
                                                                  {"index": 2, "text": "Line one\nLine two"}]})
    assert result == {"path": "/edit.docx", "updated": 2, "paragraphs": 4, "status": "success"}
    paragraphs = await client.call("mcp.fs.read_docx_paragraphs", {"path": "/edit.docx"})
    assert [p["text"] for p in paragraphs] == ["Report", new, "Line one\nLine two", "Closing words."]
    assert [p["style"] for p in paragraphs] == ["Heading 1", "Normal", "List Bullet", "Normal"]
    # Checked with python-docx itself: one run left, carrying the first run's bold.
    reopened = docx.Document(str(path))
    runs = reopened.paragraphs[1].runs
    assert len(runs) == 1 and runs[0].bold is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in env.root.iterdir() if p.name.startswith(".")) == []  # no temp file left


async def test_original_new_text_form(env: Env, client: RPCClient) -> None:
    make_doc(env.root / "compat.docx")
    result = await client.call("mcp.fs.update_docx_paragraphs",
                               ["/compat.docx", [{"index": 3, "new_text": "Thanks for reading."}]])
    assert result["updated"] == 1
    paragraphs = await client.call("mcp.fs.read_docx_paragraphs", ["/compat.docx"])
    assert paragraphs[3]["text"] == "Thanks for reading."


async def test_invalid_updates_change_nothing(env: Env, client: RPCClient) -> None:
    path = env.root / "safe.docx"
    make_doc(path)
    before = path.read_bytes()
    cases = [
        ([{"index": 1, "text": "ok"}, {"index": 9, "text": "out of range"}], "out of range"),
        ([{"index": 1, "text": "a"}, {"index": 1, "text": "b"}], "more than once"),
        ([{"index": 1, "text": "bell \x07"}], "control characters"),
    ]
    for updates, message in cases:
        with pytest.raises(errors.InvalidParams, match=message):
            await client.call("mcp.fs.update_docx_paragraphs", {"path": "/safe.docx", "updates": updates})
    for updates in ([], [{"index": -1, "text": "x"}], [{"index": 0}], [{"index": 0, "text": "a", "new_text": "b"}],
                    [{"index": 0, "text": "x", "extra": 1}]):
        with pytest.raises(errors.InvalidParams):
            await client.call("mcp.fs.update_docx_paragraphs", {"path": "/safe.docx", "updates": updates})
    assert path.read_bytes() == before


async def test_bad_paths_and_files(env: Env, client: RPCClient) -> None:
    (env.root / "fake.docx").write_text("just text, not a zip")
    (env.root / "adir.docx").mkdir(exist_ok=True)
    outside = env.base / "outside.docx"
    make_doc(outside)
    link = env.root / "escape.docx"
    if not link.is_symlink():
        link.symlink_to(outside)
    before = outside.read_bytes()
    read_cases = [("/fake.docx", errors.InvalidParams), ("/missing.docx", errors.NotFound),
                  ("/adir.docx", errors.Conflict), ("/../outside.docx", errors.PathOutsideRoot),
                  ("/escape.docx", errors.PathOutsideRoot)]
    for path, exc in read_cases:
        with pytest.raises(exc):
            await client.call("mcp.fs.read_docx_paragraphs", {"path": path})
        with pytest.raises(exc):
            await client.call("mcp.fs.update_docx_paragraphs",
                              {"path": path, "updates": [{"index": 0, "text": "pwned"}]})
    assert outside.read_bytes() == before
    assert (env.root / "fake.docx").read_text() == "just text, not a zip"


async def test_update_through_a_symlink_inside_the_root_edits_the_target(env: Env, client: RPCClient) -> None:
    (env.root / "docs").mkdir(exist_ok=True)
    target = env.root / "docs/real.docx"
    make_doc(target)
    link = env.root / "alias.docx"
    link.symlink_to("docs/real.docx")
    result = await client.call("mcp.fs.update_docx_paragraphs",
                               {"path": "/alias.docx", "updates": [{"index": 0, "text": "Renamed"}]})
    assert result["path"] == "/docs/real.docx"
    assert link.is_symlink()
    assert docx.Document(str(target)).paragraphs[0].text == "Renamed"
