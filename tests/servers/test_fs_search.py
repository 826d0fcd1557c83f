"""mcp.fs.embed / search / index_status on a real fs server process with the real embedding model.

One server (one model load) serves the whole module; tests work in their own directories and scope their
searches, so their order does not matter.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbasedos.protocol import errors
from llmbasedos.rpc.client import RPCClient
from tests.servers.test_fs_search_corpus import (
    DOCX_PARAGRAPHS,
    FIRE_QUERY,
    FIRE_SECTION,
    HANDBOOK_FIRE_LINE,
    PDF_LINES,
    QUERIES,
    TEXT_FILES,
    write_corpus,
)
from tests.support.procs import ServerHandle, start_server

MAX_BYTES = 100_000


class Env:
    def __init__(self, base: Path, root: Path, handle: ServerHandle) -> None:
        self.base = base
        self.root = root
        self.handle = handle


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    base = Path(tempfile.mkdtemp(prefix="lbs", dir="/tmp"))
    root = base / "files"
    (root / "corpus").mkdir(parents=True)
    write_corpus(root / "corpus")
    (root / "corpus/blob.bin").write_bytes(bytes(range(256)) * 40)
    (root / "corpus/huge.log").write_text("log line about nothing in particular\n" * 4000)
    handle = start_server("fs", {"LLMBDO_VIRTUAL_ROOT": str(root), "LLMBDO_DATA_DIR": str(base / "data"),
                                 "LLMBDO_FS_EMBED_MAX_BYTES": str(MAX_BYTES), "LLMBDO_DEBUG": "1"})
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


@pytest.fixture(scope="module")
def corpus_report(env: Env) -> dict[str, Any]:
    """Index /corpus once for the module (the first call loads the model)."""
    notes: list[tuple[str, Any]] = []

    async def run() -> Any:
        c = await RPCClient.connect_unix(str(env.handle.socket))
        try:
            return await c.call("mcp.fs.embed", {"path": "/corpus"}, timeout=600,
                                on_notification=lambda m, p: notes.append((m, p)))
        finally:
            await c.close()

    report: dict[str, Any] = asyncio.run(run())
    report["_notes"] = notes
    return report


def vpaths(results: list[dict[str, Any]]) -> list[str]:
    return [r["path"] for r in results]


async def wait_status(client: RPCClient, predicate: Any, what: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while True:
        status: dict[str, Any] = await client.call("mcp.fs.index_status", {})
        if predicate(status):
            return status
        assert loop.time() < deadline, f"timed out waiting for {what}: {status}"
        await asyncio.sleep(0.05)


# -- the corpus -----------------------------------------------------------------------------------------------

def test_embed_report(corpus_report: dict[str, Any]) -> None:
    expected = len(TEXT_FILES) + 3  # + pdf, docx, handbook
    assert corpus_report["status"] == "success"
    assert corpus_report["files_indexed"] == expected
    assert corpus_report["files_seen"] == expected + 2
    skipped = {s["path"]: s["reason"] for s in corpus_report["skipped"]}
    assert skipped["/corpus/blob.bin"] == "binary"
    assert "larger than" in skipped["/corpus/huge.log"]
    assert corpus_report["skipped_count"] == 2
    assert corpus_report["chunks_added"] >= expected
    # Compatibility names of the original llmbasedos.
    assert corpus_report["path_processed"] == "/corpus"
    assert corpus_report["files_embedded_this_run"] == expected


def test_embed_sends_progress(corpus_report: dict[str, Any]) -> None:
    progress = [p for m, p in corpus_report["_notes"] if m == "mcp.progress"]
    assert progress, "no progress notifications"
    assert all(p["total"] == corpus_report["files_seen"] for p in progress)
    assert progress[-1]["progress"] == progress[-1]["total"]
    values = [p["progress"] for p in progress]
    assert values == sorted(values)


@pytest.mark.parametrize("query", sorted(QUERIES))
async def test_paraphrased_query_ranks_the_right_file_first(corpus_report: dict[str, Any], client: RPCClient,
                                                            query: str) -> None:
    expected = "/corpus" + QUERIES[query]
    text = TEXT_FILES.get(QUERIES[query].lstrip("/"), " ".join(PDF_LINES + DOCX_PARAGRAPHS)).lower()
    # The test is about meaning: the query shares no significant word with the file it must find.
    assert not [w for w in re.findall(r"[a-z]+", query.lower()) if len(w) >= 5 and w in text]
    results = await client.call("mcp.fs.search", {"query": query, "top_k": 3, "scope": "/corpus"})
    assert results[0]["path"] == expected, results
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)


async def test_results_carry_line_ranges_and_previews(corpus_report: dict[str, Any], client: RPCClient) -> None:
    results = await client.call("mcp.fs.search", {"query": FIRE_QUERY, "top_k": 1, "scope": "/corpus"})
    top = results[0]
    assert top["path"] == "/corpus/handbook.md"
    last = HANDBOOK_FIRE_LINE + len(FIRE_SECTION) - 1
    assert top["start_line"] <= last and top["end_line"] >= HANDBOOK_FIRE_LINE, top
    assert top["start_line"] > 1  # the section is deep in the file: the range is not the whole file
    assert top["preview"] and len(top["preview"]) <= 240


async def test_pdf_and_docx_text_is_found(corpus_report: dict[str, Any], client: RPCClient) -> None:
    pdf = await client.call("mcp.fs.search", {"query": "chloroplasts capture sunlight", "top_k": 1,
                                              "scope": "/corpus/science"})
    assert pdf[0]["path"] == "/corpus/science/photosynthesis.pdf"
    assert "chloroplasts capture sunlight" in pdf[0]["preview"]
    docx = await client.call("mcp.fs.search", {"query": "customers in Germany", "top_k": 1,
                                               "scope": "/corpus/work/review.docx"})
    assert docx[0]["path"] == "/corpus/work/review.docx"
    # docx lines are paragraphs: the heading is line 1, the sales paragraph line 2.
    assert docx[0]["start_line"] == 1 and docx[0]["end_line"] == len(DOCX_PARAGRAPHS)
    assert "Sales grew" in docx[0]["preview"]


async def test_scope_confines_results(corpus_report: dict[str, Any], client: RPCClient) -> None:
    results = await client.call("mcp.fs.search", {"query": "looking after a feline companion", "top_k": 50,
                                                  "scope": "/corpus/finance"})
    assert results and all(p.startswith("/corpus/finance/") for p in vpaths(results))
    # A scope given with dot segments or a trailing slash means the same directory.
    same = await client.call("mcp.fs.search", {"query": "taxes", "scope": "/corpus/pets/../finance/"})
    assert vpaths(same) and set(vpaths(same)) <= {"/corpus/finance/taxes.md"}
    for bad, exc in (("/../etc", errors.PathOutsideRoot), ("/corpus/nope", errors.NotFound)):
        with pytest.raises(exc):
            await client.call("mcp.fs.search", {"query": "anything", "scope": bad})


async def test_scope_prefix_is_a_directory_boundary(env: Env, client: RPCClient) -> None:
    for name, text in (("pre/notes.txt", "Penguins huddle together for warmth in Antarctica."),
                       ("prefix/notes.txt", "Penguins huddle together for warmth in Antarctica.")):
        path = env.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    await client.call("mcp.fs.embed", {"path": "/pre"}, timeout=300)
    await client.call("mcp.fs.embed", {"path": "/prefix"}, timeout=300)
    results = await client.call("mcp.fs.search", {"query": "birds in the cold", "top_k": 10, "scope": "/pre"})
    assert vpaths(results) == ["/pre/notes.txt"]


async def test_symlink_scope_outside_root_is_refused(env: Env, client: RPCClient) -> None:
    outside = env.base / "outside"
    outside.mkdir(exist_ok=True)
    link = env.root / "escape"
    if not link.is_symlink():
        link.symlink_to(outside)
    for method, params in (("mcp.fs.search", {"query": "x", "scope": "/escape"}),
                           ("mcp.fs.embed", {"path": "/escape"}),
                           ("mcp.fs.embed", {"path": "/../"})):
        with pytest.raises(errors.PathOutsideRoot):
            await client.call(method, params, timeout=60)


async def test_top_k_and_min_score(corpus_report: dict[str, Any], client: RPCClient) -> None:
    results = await client.call("mcp.fs.search", {"query": "growing food", "top_k": 2, "scope": "/corpus"})
    assert len(results) == 2
    cut = results[0]["score"]
    above = await client.call("mcp.fs.search", {"query": "growing food", "top_k": 20, "scope": "/corpus",
                                                "min_score": cut})
    assert above and all(r["score"] >= cut for r in above)
    assert await client.call("mcp.fs.search", {"query": "growing food", "min_score": 0.99}) == []


async def test_positional_params_as_in_the_original(corpus_report: dict[str, Any], client: RPCClient) -> None:
    results = await client.call("mcp.fs.search", ["looking after a feline companion", 1, "/corpus"])
    assert vpaths(results) == ["/corpus/pets/cat_care.md"]
    assert set(results[0]) >= {"path", "score", "preview"}


async def test_bad_params_are_refused(client: RPCClient) -> None:
    for params in ({"query": ""}, {"query": "x", "top_k": 0}, {"query": "x", "min_score": 2},
                   {"query": "x", "bogus": 1}, {"top_k": 3}):
        with pytest.raises(errors.InvalidParams):
            await client.call("mcp.fs.search", params)
    with pytest.raises(errors.NotFound):
        await client.call("mcp.fs.embed", {"path": "/does/not/exist"})


async def test_index_status(corpus_report: dict[str, Any], client: RPCClient) -> None:
    status = await client.call("mcp.fs.index_status", {})
    assert status["model"] == "all-MiniLM-L6-v2"
    assert status["files"] >= corpus_report["files_indexed"]
    assert status["chunks"] >= corpus_report["chunks_added"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", status["last_update"])
    assert status["model_loaded"] is True and status["max_file_bytes"] == MAX_BYTES


# -- incremental updates ----------------------------------------------------------------------------------------

async def test_incremental_modify_delete_rename(env: Env, client: RPCClient) -> None:
    inc = env.root / "inc"
    inc.mkdir()
    (inc / "a.txt").write_text("The violin has four strings and is played with a bow.\n")
    (inc / "b.txt").write_text("Glaciers carve valleys as they slowly move downhill.\n")
    (inc / "c.txt").write_text("A sourdough loaf needs a lively starter.\n")
    first = await client.call("mcp.fs.embed", {"path": "/inc"}, timeout=300)
    assert first["files_indexed"] == 3

    again = await client.call("mcp.fs.embed", {"path": "/inc"}, timeout=300)
    assert (again["files_indexed"], again["files_unchanged"], again["files_removed"]) == (0, 3, 0)

    # Same bytes, new mtime: recognised by its hash, not re-embedded.
    os.utime(inc / "a.txt", ns=(1_000_000_000, 1_000_000_000))
    touched = await client.call("mcp.fs.embed", {"path": "/inc"}, timeout=300)
    assert (touched["files_indexed"], touched["files_unchanged"]) == (0, 3)

    # Modified: the new content is found, the old one is gone.
    (inc / "a.txt").write_text("Volcanoes erupt when magma forces its way to the surface.\n")
    modified = await client.call("mcp.fs.embed", {"path": "/inc"}, timeout=300)
    assert (modified["files_indexed"], modified["files_unchanged"]) == (1, 2)
    hits = await client.call("mcp.fs.search", {"query": "molten rock bursting out of a mountain", "top_k": 1,
                                               "scope": "/inc"})
    assert vpaths(hits) == ["/inc/a.txt"]
    old = await client.call("mcp.fs.search", {"query": "a string instrument", "top_k": 5, "scope": "/inc"})
    assert all("violin" not in r["preview"] for r in old)

    # Renamed: found under the new name only, its vectors reused rather than re-computed.
    (inc / "b.txt").rename(inc / "ice.txt")
    renamed = await client.call("mcp.fs.embed", {"path": "/inc"}, timeout=300)
    assert (renamed["files_reused"], renamed["files_removed"], renamed["files_indexed"]) == (1, 1, 0)
    hits = await client.call("mcp.fs.search", {"query": "rivers of ice shaping mountains", "top_k": 5,
                                               "scope": "/inc"})
    assert hits[0]["path"] == "/inc/ice.txt" and "/inc/b.txt" not in vpaths(hits)

    # Deleted: removed from the index.
    (inc / "c.txt").unlink()
    deleted = await client.call("mcp.fs.embed", {"path": "/inc"}, timeout=300)
    assert deleted["files_removed"] == 1
    status_files = {r["path"] for r in await client.call("mcp.fs.search",
                                                         {"query": "bread", "top_k": 10, "scope": "/inc"})}
    assert status_files == {"/inc/a.txt", "/inc/ice.txt"}

    # A file indexed on its own, then deleted: embedding its path removes it rather than failing.
    (inc / "solo.txt").write_text("Owls hunt at night.\n")
    await client.call("mcp.fs.embed", {"path": "/inc/solo.txt"}, timeout=300)
    (inc / "solo.txt").unlink()
    gone = await client.call("mcp.fs.embed", {"path": "/inc/solo.txt"}, timeout=300)
    assert gone["files_removed"] == 1


async def test_deleted_files_never_appear_even_before_reindexing(env: Env, client: RPCClient) -> None:
    d = env.root / "del"
    d.mkdir()
    (d / "keep.txt").write_text("Bees make honey from the nectar of flowers.\n")
    (d / "drop.txt").write_text("Bees make honey from the nectar of flowers, and wax for their combs.\n")
    await client.call("mcp.fs.embed", {"path": "/del"}, timeout=300)
    before = await client.call("mcp.fs.search", {"query": "insects producing a sweet food", "scope": "/del"})
    assert "/del/drop.txt" in vpaths(before)
    (d / "drop.txt").unlink()
    after = await client.call("mcp.fs.search", {"query": "insects producing a sweet food", "scope": "/del"})
    assert vpaths(after) == ["/del/keep.txt"]


async def test_non_recursive_embed(env: Env, client: RPCClient) -> None:
    top = env.root / "flat"
    (top / "deep").mkdir(parents=True)
    (top / "here.txt").write_text("Lighthouses guide ships along rocky coasts.\n")
    (top / "deep/below.txt").write_text("Submarines dive deep beneath the waves.\n")
    report = await client.call("mcp.fs.embed", ["/flat", False], timeout=300)
    assert (report["files_seen"], report["files_indexed"]) == (1, 1)
    hits = await client.call("mcp.fs.search", {"query": "underwater boats", "top_k": 5, "scope": "/flat"})
    assert vpaths(hits) == ["/flat/here.txt"]


async def test_other_calls_stay_responsive_while_indexing(env: Env, client: RPCClient) -> None:
    bulk = env.root / "bulk"
    bulk.mkdir()
    words = ["harbour", "meadow", "lantern", "copper", "orchard", "thunder", "velvet", "granite", "pepper"]
    for i in range(120):
        text = "\n".join(f"Note {i}.{j}: the {words[(i + j) % 9]} and the {words[(i * j) % 9]} met again."
                         for j in range(24))
        (bulk / f"n{i:03d}.txt").write_text(text)
    before = await client.call("mcp.fs.index_status", {})
    embedding = asyncio.Event()

    def on_note(method: str, params: Any) -> None:
        if method == "mcp.progress" and params.get("message", "").startswith("embedding"):
            embedding.set()

    embed = asyncio.create_task(client.call("mcp.fs.embed", {"path": "/bulk"}, timeout=600,
                                            on_notification=on_note))
    await asyncio.wait_for(embedding.wait(), 300)
    listing = await client.call("mcp.fs.list", {"path": "/bulk"})
    status = await client.call("mcp.fs.index_status", {})
    assert len(listing) == 120
    assert not embed.done(), "indexing finished before the other calls were answered"
    assert status["indexing"] is True

    # Cancelling the call stops the run between two model calls; the half-embedded batch is not committed.
    embed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await embed
    after = await wait_status(client, lambda s: not s["indexing"], "the cancelled run to stop")
    assert (after["files"], after["chunks"]) == (before["files"], before["chunks"])
    shutil.rmtree(bulk)
