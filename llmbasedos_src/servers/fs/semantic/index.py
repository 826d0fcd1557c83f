"""`SemanticIndex`: incremental indexing of files under the virtual root, and search over them.

Everything here is blocking and runs in the fs server's thread pool. The embedding model and FAISS are only
touched from there, so the event loop, and every other fs call, stays responsive while a large run indexes.

An indexing run walks the target, skips files whose size and mtime (or, failing that, content hash) are
unchanged, reuses the vectors of a file with the same content elsewhere (a rename or a copy), and batches the
chunks of many files into large `model.encode` calls, which is where the time goes. Each batch is committed to
the store at once (a file is never half replaced); files that vanished are dropped at the end of the run,
and until then searches hide them by checking that each hit's file still exists.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import posixpath
import stat as stat_mod
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmbasedos.backend.confinement import VirtualRoot
from llmbasedos.backend.special_files import NotRegularFile, kind_of
from llmbasedos.protocol.errors import NotFound, RPCError
from llmbasedos.servers.fs.semantic.chunking import Chunk, chunk_text
from llmbasedos.servers.fs.semantic.embedder import DIMENSION, MODEL_NAME, Embedder
from llmbasedos.servers.fs.semantic.extract import EXTRACTOR_VERSION, Unindexable, extract_text
from llmbasedos.servers.fs.semantic.store import ChunkMeta, FileEntry, IndexStore

__all__ = ["SemanticIndex", "ProgressFn", "DEFAULT_MAX_FILE_BYTES", "max_file_bytes_from_env"]

log = logging.getLogger("llmbasedos.fs.search")

ProgressFn = Callable[[float, float, str], None]

DEFAULT_MAX_FILE_BYTES = 5 * 1024 * 1024
GROUP_CHUNKS = 1024  # chunks gathered across files before encoding: more means less padding per batch
ENCODE_SLICE = 256  # chunks per model call; a cancelled run stops between two calls
CHECKPOINT_SECONDS = 120.0  # a long run saves now and then, so a crash loses at most this much work
PREVIEW_CHARS = 240
MAX_REPORTED_SKIPS = 100
# Directories of tools, not of people: never worth indexing and often huge.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", ".mypy_cache",
                       ".pytest_cache", ".ruff_cache", ".cache", ".Trash", ".tox"})


def max_file_bytes_from_env() -> int:
    raw = os.environ.get("LLMBDO_FS_EMBED_MAX_BYTES", "")
    try:
        value = int(raw)
    except ValueError:
        return DEFAULT_MAX_FILE_BYTES
    return value if value > 0 else DEFAULT_MAX_FILE_BYTES


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


@dataclass(slots=True)
class _Candidate:
    vpath: str
    size: int
    mtime_ns: int


@dataclass(slots=True)
class _Pending:
    vpath: str
    entry: FileEntry
    texts: list[str]


@dataclass(slots=True)
class _Run:
    target: str
    total: int = 0
    done: int = 0
    indexed: int = 0
    reused: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks_added: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    skipped_count: int = 0
    cancelled: bool = False

    def skip(self, vpath: str, reason: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < MAX_REPORTED_SKIPS:
            self.skipped.append({"path": vpath, "reason": reason})


class SemanticIndex:
    def __init__(self, root: VirtualRoot, directory: Path, *, max_file_bytes: int | None = None) -> None:
        self.root = root
        self.embedder = Embedder()
        self.store = IndexStore(directory, MODEL_NAME, DIMENSION)
        self.store.load()
        self.max_file_bytes = max_file_bytes or max_file_bytes_from_env()
        self._run_lock = threading.Lock()
        self.indexing = False
        # The index's own files, should the data dir sit inside the virtual root, are never indexed.
        try:
            self._own_dir: str | None = root.to_virtual(directory)
        except RPCError:
            self._own_dir = None

    # -- status --------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        store = self.store
        with store.lock:
            files, chunks, last = len(store.files), store.chunk_count, store.last_update
        out: dict[str, Any] = {
            "files": files, "chunks": chunks,
            "last_update": _iso(last) if last is not None else None,
            "model": MODEL_NAME, "dimension": DIMENSION, "model_loaded": self.embedder.loaded,
            "indexing": self.indexing, "max_file_bytes": self.max_file_bytes,
        }
        if store.recovered:
            out["recovered"] = store.recovered
        return out

    # -- search --------------------------------------------------------------------------------------------

    def search(self, query: str, top_k: int, scope: str, min_score: float) -> list[dict[str, Any]]:
        scope_v = self.root.resolve_virtual(scope)
        if scope_v != "/" and not self.root.exists(scope_v):
            raise NotFound(f"No such file or directory: {scope_v}")
        allowed = None if scope_v == "/" else self.store.ids_under(scope_v)
        if (allowed is not None and len(allowed) == 0) or self.store.chunk_count == 0:
            return []
        query_vec = self.embedder.encode_query(query)
        exists: dict[str, bool] = {}
        fetch = top_k
        while True:
            scores, ids = self.store.search(query_vec, fetch, allowed)
            results: list[dict[str, Any]] = []
            below_min = False
            for raw, chunk_id in zip(scores, ids, strict=True):
                if chunk_id < 0:
                    break
                # Cosine of unit vectors is in [-1, 1]; below 0 means "unrelated" for this model: clip to [0, 1].
                # Rounded before the threshold, so that a score a client was shown, passed back as min_score,
                # keeps that result (rounding up had made it fall below its own displayed score).
                score = round(min(1.0, max(0.0, float(raw))), 6)
                if score < min_score:
                    below_min = True
                    break
                hit = self.store.by_id.get(int(chunk_id))
                if hit is None:  # replaced by a concurrent run between the search and this lookup
                    continue
                vpath, chunk = hit
                if vpath not in exists:
                    exists[vpath] = self._is_file(vpath)
                if not exists[vpath]:
                    continue
                results.append({"path": vpath, "start_line": chunk.start_line, "end_line": chunk.end_line,
                                "score": score, "preview": chunk.preview})
                if len(results) == top_k:
                    return results
            if below_min or len(ids) < fetch or fetch >= self.store.chunk_count:
                return results
            fetch *= 4  # some hits belonged to deleted files: look further down the list

    def _is_file(self, vpath: str) -> bool:
        try:
            return stat_mod.S_ISREG(self.root.stat(vpath).st_mode)
        except RPCError:
            return False

    # -- indexing ------------------------------------------------------------------------------------------

    def embed(self, path: str, recursive: bool, progress: ProgressFn | None = None,
              cancel: threading.Event | None = None) -> dict[str, Any]:
        """Bring the index up to date for `path` (a file or a directory)."""
        cancel = cancel or threading.Event()
        with self._run_lock:
            self.indexing = True
            try:
                return self._embed(path, recursive, progress or (lambda *_: None), cancel)
            finally:
                self.indexing = False

    def _embed(self, path: str, recursive: bool, progress: ProgressFn, cancel: threading.Event) -> dict[str, Any]:
        started = time.monotonic()
        target = self.root.resolve_virtual(path)
        run = _Run(target)
        try:
            st = self.root.stat(target)
        except NotFound:
            st = None
        if st is None:
            candidates: list[_Candidate] = []
            if not self._indexed_under(target, recursive=True):
                raise NotFound(f"No such file or directory: {target}")
        elif stat_mod.S_ISDIR(st.st_mode):
            candidates = self._walk(target, recursive, run)
        elif stat_mod.S_ISREG(st.st_mode):
            candidates = [_Candidate(target, st.st_size, st.st_mtime_ns)]
        else:
            candidates = []
            run.skip(target, _special(st.st_mode))
        run.total = len(candidates)
        progress(0, run.total, f"{run.total} files to check")

        kept: set[str] = set()
        donors = {e.sha256: v for v, e in self.store.files.items() if e.extractor == EXTRACTOR_VERSION and e.chunks}
        pending: list[_Pending] = []
        pending_chunks = 0
        last_note = time.monotonic()
        last_save = time.monotonic()
        dirty = False
        for cand in candidates:
            if cancel.is_set():
                run.cancelled = True
                break
            outcome = self._prepare(cand, run, donors)
            run.done += 1
            if outcome is not None:
                kept.add(cand.vpath)
                if isinstance(outcome, _Pending):
                    pending.append(outcome)
                    pending_chunks += len(outcome.texts)
                elif outcome == "updated":
                    dirty = True
            if pending_chunks >= GROUP_CHUNKS:
                if self._flush(pending, run, progress, cancel):
                    dirty = True
                else:
                    run.cancelled = True
                    break
                pending, pending_chunks = [], 0
                progress(run.done, run.total, f"{run.indexed} files indexed, {run.chunks_added} chunks")
                last_note = time.monotonic()
                if time.monotonic() - last_save > CHECKPOINT_SECONDS:
                    self.store.save()
                    last_save, dirty = time.monotonic(), False
            elif time.monotonic() - last_note > 0.5:
                progress(run.done, run.total, f"{run.done} of {run.total} files checked")
                last_note = time.monotonic()
        if pending and not run.cancelled:
            if self._flush(pending, run, progress, cancel):
                dirty = True
            else:
                run.cancelled = True
        if not run.cancelled:
            gone = [v for v in self._indexed_under(target, recursive) if v not in kept]
            if gone:
                self.store.apply(gone, [])
                run.removed = len(gone)
                dirty = True
        if dirty or self.store.recovered:
            self.store.save()
            self.store.recovered = None
        progress(run.total if not run.cancelled else run.done, run.total, "done")
        return self._report(run, time.monotonic() - started)

    def _report(self, run: _Run, seconds: float) -> dict[str, Any]:
        return {
            "path": run.target, "status": "cancelled" if run.cancelled else "success",
            "files_seen": run.total, "files_indexed": run.indexed, "files_reused": run.reused,
            "files_unchanged": run.unchanged, "files_removed": run.removed, "chunks_added": run.chunks_added,
            "skipped": run.skipped, "skipped_count": run.skipped_count,
            "total_files": len(self.store.files), "total_chunks": self.store.chunk_count,
            "seconds": round(seconds, 3),
            # The names the original llmbasedos returned, kept for its clients.
            "path_processed": run.target, "files_embedded_this_run": run.indexed + run.reused,
            "total_embeddings_in_index": self.store.chunk_count,
        }

    def _indexed_under(self, target: str, recursive: bool) -> list[str]:
        prefix = target.rstrip("/") + "/"
        with self.store.lock:
            names = list(self.store.files)
        return [v for v in names if v == target or (v.startswith(prefix)
                                                    and (recursive or "/" not in v[len(prefix):]))]

    def _walk(self, target: str, recursive: bool, run: _Run) -> list[_Candidate]:
        """Regular files under `target`; symlinks are not followed (their targets are indexed where they live),
        special files (FIFOs, sockets, devices) are never opened: listed in the run's skips."""
        out: list[_Candidate] = []
        top_fd = self.root.open_dir(target)
        try:
            for dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=top_fd, follow_symlinks=False):
                base = posixpath.normpath(posixpath.join(target, dirpath))
                if base == self._own_dir:
                    dirnames[:] = []
                    continue
                dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS
                                     and posixpath.join(base, d) != self._own_dir) if recursive else []
                for name in sorted(filenames):
                    try:
                        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    except OSError:
                        continue
                    if stat_mod.S_ISREG(st.st_mode):
                        out.append(_Candidate(posixpath.join(base, name), st.st_size, st.st_mtime_ns))
                    elif not stat_mod.S_ISLNK(st.st_mode):
                        run.skip(posixpath.join(base, name), _special(st.st_mode))
        finally:
            os.close(top_fd)
        return out

    def _read(self, vpath: str) -> bytes:
        fd = self.root.open_fd(vpath, os.O_RDONLY)
        try:
            with os.fdopen(fd, "rb", closefd=False) as fh:
                return fh.read(self.max_file_bytes + 1)
        finally:
            os.close(fd)

    def _prepare(self, cand: _Candidate, run: _Run, donors: dict[str, str]) -> _Pending | str | None:
        """What to do with one file: None (not indexable), "unchanged", "updated" (metadata or reused vectors
        stored), or the _Pending chunks to embed."""
        old = self.store.files.get(cand.vpath)
        if old is not None and old.extractor == EXTRACTOR_VERSION and old.size == cand.size \
                and old.mtime_ns == cand.mtime_ns:
            run.unchanged += 1
            return "unchanged"
        if cand.size > self.max_file_bytes:
            run.skip(cand.vpath, f"larger than {self.max_file_bytes} bytes")
            return None
        try:
            data = self._read(cand.vpath)
        except NotRegularFile as exc:  # it became a FIFO, socket or device since the walk
            run.skip(cand.vpath, f"{exc.kind}, not a regular file")
            return None
        except (RPCError, OSError) as exc:
            reason = "vanished" if isinstance(exc, NotFound) or getattr(exc, "errno", 0) == errno.ENOENT \
                else "unreadable"
            run.skip(cand.vpath, reason)
            return None
        if len(data) > self.max_file_bytes:
            run.skip(cand.vpath, f"larger than {self.max_file_bytes} bytes")
            return None
        digest = hashlib.sha256(data).hexdigest()
        if old is not None and old.extractor == EXTRACTOR_VERSION and old.sha256 == digest:
            self.store.touch(cand.vpath, cand.size, cand.mtime_ns)
            run.unchanged += 1
            return "updated"
        donor = donors.get(digest)
        if donor is not None and donor in self.store.files and self.store.files[donor].sha256 == digest:
            src = self.store.files[donor]
            entry = FileEntry(cand.size, cand.mtime_ns, digest, src.kind, EXTRACTOR_VERSION, list(src.chunks))
            self.store.apply([], [(cand.vpath, entry, self.store.vectors_of(donor))])
            run.reused += 1
            return "updated"
        try:
            extracted = extract_text(cand.vpath, data)
        except Unindexable as exc:
            run.skip(cand.vpath, exc.reason)
            return None
        except Exception:  # a parser's bug on a hostile file must not end the run
            log.warning("text extraction failed", extra={"vpath": cand.vpath}, exc_info=True)
            run.skip(cand.vpath, "text extraction failed")
            return None
        chunks: list[Chunk] = chunk_text(extracted.text)
        entry = FileEntry(cand.size, cand.mtime_ns, digest, extracted.kind, EXTRACTOR_VERSION,
                          [ChunkMeta(0, c.start_line, c.end_line, _preview(c.text)) for c in chunks])
        return _Pending(cand.vpath, entry, [c.text for c in chunks])

    def _flush(self, pending: list[_Pending], run: _Run, progress: ProgressFn, cancel: threading.Event) -> bool:
        """Embed the chunks of `pending` files and commit them; False if cancelled first (nothing committed)."""
        import numpy as np

        texts = [t for p in pending for t in p.texts]
        progress(run.done, run.total, f"embedding {len(texts)} chunks of {len(pending)} files")
        # Longest first, as sentence-transformers orders a single call: batches of similar lengths pad little.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors = np.empty((len(texts), DIMENSION), dtype=np.float32)
        for lo in range(0, len(order), ENCODE_SLICE):
            if cancel.is_set():
                return False
            part = order[lo:lo + ENCODE_SLICE]
            vectors[part] = self.embedder.encode([texts[i] for i in part])
        updates = []
        offset = 0
        for p in pending:
            n = len(p.texts)
            updates.append((p.vpath, p.entry, vectors[offset:offset + n]))
            offset += n
        self.store.apply([], updates)
        run.indexed += len(pending)
        run.chunks_added += len(texts)
        return True


def _special(mode: int) -> str:
    return f"{kind_of(mode)}, not a regular file"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
