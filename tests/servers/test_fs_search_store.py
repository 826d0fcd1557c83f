"""The vector store and the index walk in-process, with random unit vectors (no model needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from llmbasedos.backend.confinement import VirtualRoot
from llmbasedos.servers.fs.semantic.index import SemanticIndex, _Run
from llmbasedos.servers.fs.semantic.store import ChunkMeta, FileEntry, IndexStore

DIM = 8


def unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def entry(chunks: int, sha: str = "x") -> FileEntry:
    return FileEntry(10, 1, sha, "text", 1, [ChunkMeta(0, i + 1, i + 2, f"chunk {i}") for i in range(chunks)])


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "search"


def test_apply_replace_remove_and_search(directory: Path) -> None:
    store = IndexStore(directory, "m", DIM)
    a, b = unit(3, 1), unit(2, 2)
    store.apply([], [("/a.txt", entry(3), a), ("/dir/b.txt", entry(2), b)])
    assert (len(store.files), store.chunk_count) == (2, 5)
    scores, ids = store.search(b[1:2], 1)
    assert store.by_id[int(ids[0])][0] == "/dir/b.txt" and scores[0] == pytest.approx(1.0, abs=1e-5)
    # Replacing a file swaps all of its chunks at once.
    store.apply([], [("/a.txt", entry(1), unit(1, 3))])
    assert store.chunk_count == 3 and len(store.files["/a.txt"].chunks) == 1
    assert np.allclose(store.vectors_of("/dir/b.txt"), b)
    # Scoped search only sees the scope's ids; a sibling with a longer name is not inside "/dir".
    store.apply([], [("/dirx/c.txt", entry(1), b[1:2])])
    _, ids = store.search(b[1:2], 5, store.ids_under("/dir"))
    assert {store.by_id[int(i)][0] for i in ids if i >= 0} == {"/dir/b.txt"}
    store.apply(["/dir/b.txt"], [])
    assert store.chunk_count == 2 and "/dir/b.txt" not in store.files  # /a.txt and /dirx/c.txt


def test_save_load_round_trip(directory: Path) -> None:
    store = IndexStore(directory, "m", DIM)
    vectors = unit(4, 5)
    store.apply([], [("/a.txt", entry(4, "abc"), vectors)])
    store.save()
    store.save()  # a second generation replaces the first
    assert sorted(p.name for p in directory.iterdir()) == ["index-2.faiss", "manifest.json", "meta-2.json"]
    loaded = IndexStore(directory, "m", DIM)
    loaded.load()
    assert loaded.recovered is None
    assert loaded.files["/a.txt"].sha256 == "abc" and loaded.chunk_count == 4
    assert np.allclose(loaded.vectors_of("/a.txt"), vectors)
    assert loaded.next_id == store.next_id and loaded.last_update == pytest.approx(store.last_update)


@pytest.mark.parametrize("damage", ["index", "meta", "manifest", "model", "missing"])
def test_damaged_state_starts_empty_and_says_why(directory: Path, damage: str) -> None:
    store = IndexStore(directory, "m", DIM)
    store.apply([], [("/a.txt", entry(2), unit(2, 6))])
    store.save()
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if damage in ("index", "meta"):
        path = directory / manifest[damage]["file"]
        data = bytearray(path.read_bytes())
        data[-5:] = bytes(x ^ 0xFF for x in data[-5:])
        path.write_bytes(bytes(data))
    elif damage == "manifest":
        manifest_path.write_text("[1, 2")
    elif damage == "model":
        manifest["model"] = "another-model"
        manifest_path.write_text(json.dumps(manifest))
    else:
        (directory / manifest["index"]["file"]).unlink()
    loaded = IndexStore(directory, "m", DIM)
    loaded.load()
    assert (len(loaded.files), loaded.chunk_count) == (0, 0)
    assert loaded.recovered and "mcp.fs.embed" in loaded.recovered
    # It still works, and its next save makes a clean generation.
    loaded.apply([], [("/b.txt", entry(1), unit(1, 7))])
    loaded.save()
    again = IndexStore(directory, "m", DIM)
    again.load()
    assert again.recovered is None and list(again.files) == ["/b.txt"]


def test_walk_skips_tool_dirs_symlinks_and_the_index_itself(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for rel in ("a.txt", "sub/b.md", ".git/config", "node_modules/x.js", "data/search/meta-1.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("text")
    (root / "link.txt").symlink_to(root / "a.txt")
    (root / "linkdir").symlink_to(root / "sub")
    os.mkfifo(root / "sub" / "pipe")
    index = SemanticIndex(VirtualRoot(root), root / "data" / "search")
    run = _Run("/")
    found = [c.vpath for c in index._walk("/", True, run)]
    assert found == ["/a.txt", "/sub/b.md"]
    assert [s["path"] for s in run.skipped] == ["/sub/pipe"]  # listed, never opened
    assert [c.vpath for c in index._walk("/", False, _Run("/"))] == ["/a.txt"]
