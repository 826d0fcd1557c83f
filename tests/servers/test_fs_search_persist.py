"""The search index across real fs server restarts: persistence, crash leftovers, corruption, missing extra."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbasedos.protocol import errors
from llmbasedos.rpc.client import RPCClient
from tests.support.procs import ServerHandle, start_server

FILES = {
    "notes/whales.md": "Blue whales are the largest animals that ever lived; they feed on tiny krill.\n",
    "notes/bikes.md": "Keep the bicycle chain clean and oiled, and pump the tyres every week.\n",
    "notes/tea.md": "Green tea is steeped at eighty degrees for two minutes.\n",
    "notes/chess.md": "Control the centre early, castle your king and develop knights before bishops.\n",
}
QUERY = "enormous creatures of the ocean"

_BLOCKER = '''
import sys

class _Missing:
    """Makes the search extra look uninstalled, as on an install without llmbasedos[search]."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"faiss", "sentence_transformers"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Missing())
'''


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lbp", dir="/tmp"))
    for rel, text in FILES.items():
        (path / "files" / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / "files" / rel).write_text(text)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start(base: Path) -> ServerHandle:
    return start_server("fs", {"LLMBDO_VIRTUAL_ROOT": str(base / "files"), "LLMBDO_DATA_DIR": str(base / "data"),
                               "LLMBDO_DEBUG": "1"})


async def call(handle: ServerHandle, method: str, params: Any) -> Any:
    client = await RPCClient.connect_unix(str(handle.socket))
    try:
        return await client.call(method, params, timeout=600)
    finally:
        await client.close()


def search_dir(base: Path) -> Path:
    return base / "data" / "search"


def current_index_file(base: Path) -> Path:
    manifest = json.loads((search_dir(base) / "manifest.json").read_text())
    return search_dir(base) / manifest["index"]["file"]


async def test_index_survives_a_restart(base: Path) -> None:
    with start(base) as first:
        report = await call(first, "mcp.fs.embed", {"path": "/"})
        assert report["files_indexed"] == len(FILES)
        before = await call(first, "mcp.fs.search", {"query": QUERY, "top_k": 4})
        status_before = await call(first, "mcp.fs.index_status", {})
    assert before[0]["path"] == "/notes/whales.md"
    names = sorted(p.name for p in search_dir(base).iterdir())
    assert names == ["index-1.faiss", "manifest.json", "meta-1.json"]

    with start(base) as second:
        status = await call(second, "mcp.fs.index_status", {})
        assert (status["files"], status["chunks"], status["last_update"]) == \
            (status_before["files"], status_before["chunks"], status_before["last_update"])
        assert status["model_loaded"] is False  # loading the index does not load the model
        assert "recovered" not in status
        after = await call(second, "mcp.fs.search", {"query": QUERY, "top_k": 4})
        assert [(r["path"], r["start_line"], r["end_line"]) for r in after] == \
            [(r["path"], r["start_line"], r["end_line"]) for r in before]
        assert [r["score"] for r in after] == pytest.approx([r["score"] for r in before], abs=1e-5)
        again = await call(second, "mcp.fs.embed", {"path": "/"})
        assert (again["files_unchanged"], again["files_indexed"]) == (len(FILES), 0)


async def test_leftovers_of_a_crash_mid_save_are_ignored_then_cleaned(base: Path) -> None:
    # A save that died after writing its new files but before switching the manifest.
    (search_dir(base) / "index-999.faiss").write_bytes(b"half a write")
    (search_dir(base) / ".meta-999.json.4242.tmp").write_bytes(b"{\"files\": ")
    with start(base) as server:
        status = await call(server, "mcp.fs.index_status", {})
        assert status["files"] == len(FILES) and "recovered" not in status
        (base / "files/notes/tea.md").unlink()  # a removal needs no model, and makes the next run save
        report = await call(server, "mcp.fs.embed", {"path": "/notes"})
        assert report["files_removed"] == 1
    names = sorted(p.name for p in search_dir(base).iterdir())
    assert names == ["index-2.faiss", "manifest.json", "meta-2.json"]
    (base / "files/notes/tea.md").write_text(FILES["notes/tea.md"])


async def test_a_corrupt_manifest_or_index_is_reset_and_rebuilt(base: Path) -> None:
    manifest = search_dir(base) / "manifest.json"
    good_manifest = manifest.read_bytes()
    manifest.write_text("{ not json")
    with start(base) as server:
        status = await call(server, "mcp.fs.index_status", {})
        assert (status["files"], status["chunks"]) == (0, 0)
        assert "manifest" in status["recovered"] and "mcp.fs.embed" in status["recovered"]
        assert await call(server, "mcp.fs.search", {"query": QUERY}) == []

    manifest.write_bytes(good_manifest)
    index_file = current_index_file(base)
    data = bytearray(index_file.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    index_file.write_bytes(bytes(data))
    with start(base) as server:
        status = await call(server, "mcp.fs.index_status", {})
        assert status["files"] == 0 and "checksum" in status["recovered"]
        assert await call(server, "mcp.fs.search", {"query": QUERY}) == []
        rebuilt = await call(server, "mcp.fs.embed", {"path": "/"})
        assert rebuilt["files_indexed"] == len(FILES)
        status = await call(server, "mcp.fs.index_status", {})
        assert status["files"] == len(FILES) and "recovered" not in status
        hits = await call(server, "mcp.fs.search", {"query": QUERY, "top_k": 1})
        assert hits[0]["path"] == "/notes/whales.md"


async def test_without_the_search_extra(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = base / "no_extra"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(_BLOCKER)
    monkeypatch.setenv("PYTHONPATH", str(blocker))
    with start(base) as server:
        for method, params in (("mcp.fs.embed", {"path": "/"}), ("mcp.fs.search", {"query": "x"}),
                               ("mcp.fs.index_status", {})):
            with pytest.raises(errors.FeatureUnavailable, match=r"llmbasedos\[search\]") as info:
                await call(server, method, params)
            assert "faiss" in info.value.message
        # The rest of the fs server is unaffected.
        listing = await call(server, "mcp.fs.list", {"path": "/notes"})
        assert {e["name"] for e in listing} == {p.split("/")[1] for p in FILES}
