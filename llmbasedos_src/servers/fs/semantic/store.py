"""The vector store: a FAISS inner-product index plus the metadata of every indexed file, persisted atomically.

On disk, in `<data dir>/search/`:

    manifest.json         which generation is current, with the size and SHA-256 of its two files
    index-<gen>.faiss     the FAISS index (IndexIDMap2 over IndexFlatIP, unit vectors: inner product = cosine)
    meta-<gen>.json       files (size, mtime, content hash, chunks with line ranges and previews)

A save writes the new generation's files under temporary names, renames them into place, then replaces the
manifest (temp file + rename) and only then deletes the previous generation. A crash at any point leaves a
manifest that names complete, checksummed files. A manifest or file that does not check out is never trusted:
the store starts empty, says why in `recovered`, and the next `mcp.fs.embed` rebuilds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["ChunkMeta", "FileEntry", "IndexStore", "FORMAT_VERSION"]

log = logging.getLogger("llmbasedos.fs.search")

FORMAT_VERSION = 1
_MANIFEST = "manifest.json"
_GEN_FILE = re.compile(r"^(index|meta)-(\d+)\.(faiss|json)$")
# FAISS threads for a search. A search is one query against a flat index: split over two cores it was slower
# (24 ms against 16 ms at 100,000 chunks here), and FAISS's OpenMP workers, spinning after each search, took
# the cores from the model's next query encoding (a search took 60 ms instead of 42).
SEARCH_THREADS = 1


@dataclass(frozen=True, slots=True)
class ChunkMeta:
    id: int
    start_line: int
    end_line: int
    preview: str


@dataclass(slots=True)
class FileEntry:
    size: int
    mtime_ns: int
    sha256: str
    kind: str
    extractor: int
    chunks: list[ChunkMeta] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "mtime_ns": self.mtime_ns, "sha256": self.sha256, "kind": self.kind,
                "extractor": self.extractor,
                "chunks": [[c.id, c.start_line, c.end_line, c.preview] for c in self.chunks]}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> FileEntry:
        return cls(int(raw["size"]), int(raw["mtime_ns"]), str(raw["sha256"]), str(raw["kind"]),
                   int(raw["extractor"]), [ChunkMeta(int(c[0]), int(c[1]), int(c[2]), str(c[3]))
                                           for c in raw["chunks"]])


class _Corrupt(Exception):
    pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes | memoryview) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class IndexStore:
    """Vectors and metadata, guarded by `lock` (searches hold it only for the FAISS call)."""

    def __init__(self, directory: Path, model: str, dim: int) -> None:
        import faiss

        faiss.omp_set_num_threads(SEARCH_THREADS)
        self._faiss: Any = faiss
        self.directory = directory
        self.model = model
        self.dim = dim
        self.lock = threading.RLock()
        self.files: dict[str, FileEntry] = {}
        self.by_id: dict[int, tuple[str, ChunkMeta]] = {}
        self.next_id = 1
        self.generation = 0
        self.last_update: float | None = None
        self.recovered: str | None = None
        self.index: Any = self._empty_index()

    def _empty_index(self) -> Any:
        return self._faiss.IndexIDMap2(self._faiss.IndexFlatIP(self.dim))

    # -- queries -------------------------------------------------------------------------------------------

    @property
    def chunk_count(self) -> int:
        return int(self.index.ntotal)

    def vectors_of(self, vpath: str) -> Any:
        """The stored vectors of a file's chunks, in chunk order (to reuse them for a renamed copy)."""
        import numpy as np

        with self.lock:
            ids = [c.id for c in self.files[vpath].chunks]
            if not ids:
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.vstack([self.index.reconstruct(i) for i in ids]).astype(np.float32)

    def ids_under(self, scope: str) -> Any:
        """Chunk ids of every file at or below the virtual path `scope`."""
        import numpy as np

        prefix = scope.rstrip("/") + "/"
        with self.lock:
            ids = [c.id for vpath, entry in self.files.items()
                   if vpath == scope or vpath.startswith(prefix) for c in entry.chunks]
        return np.asarray(ids, dtype=np.int64)

    def search(self, query: Any, k: int, allowed: Any = None) -> tuple[Any, Any]:
        """FAISS top-k over all chunks, or over the ids in `allowed` only."""
        params = None
        if allowed is not None:
            params = self._faiss.SearchParameters(sel=self._faiss.IDSelectorBatch(allowed))
        with self.lock:
            k = min(k, int(self.index.ntotal))
            if k <= 0:
                return [], []
            if params is None:
                scores, ids = self.index.search(query, k)
            else:
                scores, ids = self.index.search(query, k, params=params)
        return scores[0], ids[0]

    # -- changes -------------------------------------------------------------------------------------------

    def _drop(self, vpaths: list[str]) -> None:
        import numpy as np

        doomed: list[int] = []
        for vpath in vpaths:
            entry = self.files.pop(vpath, None)
            if entry is not None:
                for c in entry.chunks:
                    doomed.append(c.id)
                    self.by_id.pop(c.id, None)
        if doomed:
            self.index.remove_ids(np.asarray(doomed, dtype=np.int64))

    def apply(self, removed: list[str], updated: list[tuple[str, FileEntry, Any]]) -> None:
        """Drop `removed` files and put `updated` (vpath, entry without ids, its chunk vectors) in one step.

        The entries' chunks get fresh ids here; readers never see a file half replaced.
        """
        import numpy as np

        with self.lock:
            self._drop(removed + [vpath for vpath, _, _ in updated])
            all_vectors = []
            all_ids: list[int] = []
            for vpath, entry, vectors in updated:
                chunks = []
                for c in entry.chunks:
                    chunks.append(ChunkMeta(self.next_id, c.start_line, c.end_line, c.preview))
                    all_ids.append(self.next_id)
                    self.next_id += 1
                entry.chunks = chunks
                self.files[vpath] = entry
                for c in chunks:
                    self.by_id[c.id] = (vpath, c)
                if len(chunks):
                    all_vectors.append(vectors)
            if all_ids:
                self.index.add_with_ids(np.vstack(all_vectors).astype(np.float32, copy=False),
                                        np.asarray(all_ids, dtype=np.int64))
            if removed or updated:
                self.last_update = time.time()

    def touch(self, vpath: str, size: int, mtime_ns: int) -> None:
        """A file whose content did not change got a new mtime: remember it so the next run skips it fast."""
        with self.lock:
            entry = self.files.get(vpath)
            if entry is not None:
                entry.size = size
                entry.mtime_ns = mtime_ns

    def reset(self) -> None:
        with self.lock:
            self.files.clear()
            self.by_id.clear()
            self.index = self._empty_index()
            self.last_update = time.time()

    # -- persistence ---------------------------------------------------------------------------------------

    def save(self) -> None:
        import numpy as np

        self.directory.mkdir(parents=True, exist_ok=True)
        with self.lock:
            gen = self.generation + 1
            index_bytes = np.ascontiguousarray(self._faiss.serialize_index(self.index))
            meta = orjson.dumps({
                "format": FORMAT_VERSION, "model": self.model, "dim": self.dim, "next_id": self.next_id,
                "last_update": self.last_update,
                "files": {vpath: entry.to_json() for vpath, entry in self.files.items()},
            })
        index_name, meta_name = f"index-{gen}.faiss", f"meta-{gen}.json"
        _write_durably(self.directory / index_name, index_bytes.data)
        _write_durably(self.directory / meta_name, meta)
        manifest = {
            "format": FORMAT_VERSION, "generation": gen, "model": self.model, "dim": self.dim,
            "saved_at": time.time(),
            "index": {"file": index_name, "size": int(index_bytes.nbytes),
                      "sha256": hashlib.sha256(index_bytes.data).hexdigest()},
            "meta": {"file": meta_name, "size": len(meta), "sha256": hashlib.sha256(meta).hexdigest()},
        }
        _write_durably(self.directory / _MANIFEST, json.dumps(manifest, indent=2).encode())
        _fsync_dir(self.directory)
        self.generation = gen
        self._remove_other_generations(gen)

    def _remove_other_generations(self, keep: int) -> None:
        for path in self.directory.iterdir():
            match = _GEN_FILE.match(path.name)
            stale_tmp = path.name.startswith(".") and path.name.endswith(".tmp")
            if (match and int(match.group(2)) != keep) or stale_tmp:
                with contextlib.suppress(OSError):
                    path.unlink()

    def load(self) -> None:
        """Load the current generation; an unusable one leaves the store empty with `recovered` set."""
        manifest_path = self.directory / _MANIFEST
        if not manifest_path.exists():
            return
        try:
            self._load_checked(manifest_path)
        except _Corrupt as exc:
            log.warning("search index unusable, starting empty: %s", exc)
            self.files.clear()
            self.by_id.clear()
            self.index = self._empty_index()
            self.recovered = f"The stored search index was unusable ({exc}); it was reset. " \
                             "Run mcp.fs.embed to rebuild it."

    def _read_part(self, part: Any) -> bytes:
        if not isinstance(part, dict) or not isinstance(part.get("file"), str) \
                or not _GEN_FILE.match(part["file"]):
            raise _Corrupt("bad manifest entry")
        try:
            data = (self.directory / part["file"]).read_bytes()
        except OSError as exc:
            raise _Corrupt(f"{part['file']} cannot be read: {exc.strerror}") from None
        if len(data) != part.get("size") or hashlib.sha256(data).hexdigest() != part.get("sha256"):
            raise _Corrupt(f"{part['file']} does not match its checksum")
        return data

    def _load_checked(self, manifest_path: Path) -> None:
        import numpy as np

        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _Corrupt(f"manifest cannot be read: {type(exc).__name__}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
            raise _Corrupt("manifest has an unknown format")
        if manifest.get("model") != self.model or manifest.get("dim") != self.dim:
            raise _Corrupt(f"index was built with another model ({manifest.get('model')!r})")
        index_bytes = self._read_part(manifest.get("index"))
        meta_bytes = self._read_part(manifest.get("meta"))
        try:
            index = self._faiss.deserialize_index(np.frombuffer(index_bytes, dtype=np.uint8))
        except Exception as exc:  # faiss raises RuntimeError with C++ details
            raise _Corrupt(f"index cannot be decoded: {type(exc).__name__}") from None
        try:
            meta = orjson.loads(meta_bytes)
            files = {str(vpath): FileEntry.from_json(raw) for vpath, raw in meta["files"].items()}
            next_id = int(meta["next_id"])
            last_update = meta.get("last_update")
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise _Corrupt(f"metadata cannot be decoded: {type(exc).__name__}") from None
        by_id = {c.id: (vpath, c) for vpath, entry in files.items() for c in entry.chunks}
        if index.d != self.dim or index.ntotal != len(by_id):
            raise _Corrupt("index and metadata disagree")
        self.index = index
        self.files = files
        self.by_id = by_id
        self.next_id = next_id
        self.last_update = float(last_update) if isinstance(last_update, (int, float)) else None
        self.generation = int(manifest.get("generation", 0))
