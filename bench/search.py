"""Semantic search in the fs server: indexing throughput and search latency, each against the direct path.

1. Indexing: a generated corpus of N files (default 2,000) is indexed by a real fs server (`mcp.fs.embed`,
   model already loaded); its chunks/s is compared with raw `model.encode` over the very same chunk texts in
   this process (run before and after the server, averaged, to even out a busy machine).
2. Search: the persisted index is topped up with random unit vectors (attributed to the corpus files) to
   100,000 chunks; the server restarts on it and answers `mcp.fs.search` queries over its socket. The same
   queries go to a bare FAISS search over the same index file, and to bare encode + FAISS in one process.
3. Memory: peak RSS (VmHWM) of the fs server processes.

    .venv/bin/python bench/search.py [--files 2000] [--chunks 100000] [--queries 200]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmbasedos.rpc.client import RPCClient
from llmbasedos.servers.fs.semantic.chunking import chunk_text
from llmbasedos.servers.fs.semantic.embedder import DIMENSION, MODEL_NAME, Embedder
from llmbasedos.servers.fs.semantic.store import ChunkMeta, FileEntry, IndexStore

_TOPICS = ["gardening", "tax returns", "marathon training", "sourdough baking", "guitar chords", "cat care",
           "Roman history", "Mars exploration", "oil changes", "Kyoto travel", "quicksort", "photosynthesis",
           "chess openings", "whale migration", "bicycle repair", "green tea", "volcanoes", "bee keeping"]
_WORDS = ["the", "a", "of", "to", "and", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from",
          "this", "are", "be", "it", "an", "or", "which", "have", "has", "not", "season", "soil", "water", "budget",
          "receipt", "deadline", "stride", "pace", "flour", "oven", "crust", "string", "tune", "melody", "kitten",
          "litter", "emperor", "legion", "rover", "crater", "engine", "filter", "temple", "train", "pivot", "array",
          "leaf", "sunlight", "glucose", "bishop", "castle", "pod", "ocean", "chain", "tyre", "kettle", "leaf",
          "magma", "honey", "hive", "queen", "nectar", "harvest", "ledger"]


def _make_corpus(root: Path, files: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    for i in range(files):
        topic = _TOPICS[i % len(_TOPICS)]
        lines = [f"# Notes {i} on {topic}", ""]
        for _ in range(rng.randint(4, 12)):
            lines.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 16))) + f" ({topic}).")
        path = root / f"d{i % 40:02d}" / f"note{i:05d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _start(env: dict[str, str], run_dir: Path) -> subprocess.Popen[bytes]:
    cap = run_dir / "fs.cap.json"
    log = open(run_dir / "fs.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([sys.executable, "-m", "llmbasedos.servers.fs"], env={**os.environ, **env},
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not cap.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("fs server did not start: " + (run_dir / "fs.log").read_text(errors="replace"))
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _rpc(socket_path: Path, method: str, params: Any) -> Any:
    client = await RPCClient.connect_unix(str(socket_path))
    try:
        return await client.call(method, params, timeout=3600)
    finally:
        await client.close()


async def _search_latencies(socket_path: Path, queries: list[str]) -> list[float]:
    client = await RPCClient.connect_unix(str(socket_path))
    try:
        for q in queries[:5]:  # warm-up: loads the model
            await client.call("mcp.fs.search", {"query": q, "top_k": 5}, timeout=600)
        out = []
        for q in queries:
            t = time.perf_counter()
            results = await client.call("mcp.fs.search", {"query": q, "top_k": 5}, timeout=600)
            out.append(time.perf_counter() - t)
            assert len(results) == 5
        return out
    finally:
        await client.close()


def _top_up(data_dir: Path, target: int, seed: int = 11) -> int:
    """Add random unit vectors to the persisted index until it holds `target` chunks."""
    store = IndexStore(data_dir / "search", MODEL_NAME, DIMENSION)
    store.load()
    missing = target - store.chunk_count
    if missing <= 0:
        return store.chunk_count
    rng = np.random.default_rng(seed)
    paths = sorted(store.files)
    per_file = -(-missing // len(paths))
    updates = []
    added = 0
    for vpath in paths:
        n = min(per_file, missing - added)
        if n <= 0:
            break
        entry = store.files[vpath]
        old = store.vectors_of(vpath)
        extra = rng.standard_normal((n, DIMENSION)).astype(np.float32)
        extra /= np.linalg.norm(extra, axis=1, keepdims=True)
        chunks = list(entry.chunks) + [ChunkMeta(0, 1, 1, "synthetic") for _ in range(n)]
        updates.append((vpath, FileEntry(entry.size, entry.mtime_ns, entry.sha256, entry.kind, entry.extractor,
                                         chunks), np.vstack([old, extra])))
        added += n
    store.apply([], updates)
    store.save()
    return store.chunk_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="lbbs", dir="/tmp"))
    root, data, run_dir = base / "files", base / "data", base / "run"
    for d in (root / "corpus", root / "warm", data, run_dir):
        d.mkdir(parents=True)
    env = {"LLMBDO_VIRTUAL_ROOT": str(root), "LLMBDO_DATA_DIR": str(data), "LLMBDO_RUN_DIR": str(run_dir),
           "LLMBDO_STATE_DIR": str(base / "state"), "LLMBDO_LOG_LEVEL": "WARNING"}
    try:
        _make_corpus(root / "corpus", args.files)
        (root / "warm/w.txt").write_text("warm-up file: loads the model before the timed run\n")
        texts = [c.text for p in sorted((root / "corpus").rglob("*.md"))
                 for c in chunk_text(p.read_text(encoding="utf-8"))]
        embedder = Embedder()
        embedder.encode(texts[:64])  # load and warm the model outside the timing

        def raw_encode() -> float:
            t = time.perf_counter()
            embedder.encode(texts)
            return len(texts) / (time.perf_counter() - t)

        raw_before = raw_encode()
        proc = _start(env, run_dir)
        sock = run_dir / "fs.sock"
        asyncio.run(_rpc(sock, "mcp.fs.embed", {"path": "/warm"}))
        t = time.perf_counter()
        report = asyncio.run(_rpc(sock, "mcp.fs.embed", {"path": "/corpus"}))
        index_seconds = time.perf_counter() - t
        peak_index = _peak_rss_mib(proc.pid)
        _stop(proc)
        raw_after = raw_encode()
        assert report["chunks_added"] == len(texts), (report["chunks_added"], len(texts))
        server_rate = report["chunks_added"] / index_seconds
        raw_rate = (raw_before + raw_after) / 2

        total = _top_up(data, args.chunks)
        rng = random.Random(3)
        queries = [f"{rng.choice(_TOPICS)} {' '.join(rng.choice(_WORDS) for _ in range(5))} {i}"
                   for i in range(args.queries)]
        proc = _start(env, run_dir)
        try:
            server_lat = asyncio.run(_search_latencies(sock, queries))
            peak_search = _peak_rss_mib(proc.pid)
        finally:
            _stop(proc)

        import faiss

        manifest = json.loads((data / "search/manifest.json").read_text())
        index = faiss.read_index(str(data / "search" / manifest["index"]["file"]))
        qvecs = embedder.encode(queries)

        def bare(threads: int) -> tuple[list[float], list[float]]:
            faiss.omp_set_num_threads(threads)
            faiss_lat, both_lat = [], []
            for i, q in enumerate(queries):
                t = time.perf_counter()
                index.search(qvecs[i:i + 1], 5)
                faiss_lat.append(time.perf_counter() - t)
                t = time.perf_counter()
                index.search(embedder.encode([q]), 5)
                both_lat.append(time.perf_counter() - t)
            return faiss_lat, both_lat

        # The bare baseline at its best: FAISS's default thread count and one thread (what the server uses)
        # are both measured, and the faster is the one compared against.
        per_threads = {n: bare(n) for n in sorted({os.cpu_count() or 1, 1}, reverse=True)}
        best = min(per_threads, key=lambda n: statistics.median(per_threads[n][0]))
        faiss_lat, both_lat = per_threads[best]

        ms = 1000.0
        server_p50, faiss_p50, both_p50 = (statistics.median(x) for x in (server_lat, faiss_lat, both_lat))
        print(json.dumps({
            "model": MODEL_NAME,
            "cpu_count": os.cpu_count(),
            "indexing": {
                "files": args.files, "chunks": len(texts), "seconds": round(index_seconds, 2),
                "server_chunks_per_s": round(server_rate, 1),
                "raw_encode_chunks_per_s": round(raw_rate, 1),
                "raw_encode_runs_chunks_per_s": [round(raw_before, 1), round(raw_after, 1)],
                "ratio_server_to_raw": round(server_rate / raw_rate, 3),
                "goal": ">= 0.8",
            },
            "search": {
                "chunks": total, "queries": len(queries), "top_k": 5,
                "server_p50_ms": round(server_p50 * ms, 3), "server_p99_ms": round(_pct(server_lat, 0.99) * ms, 3),
                "bare_faiss_threads": best,
                "bare_faiss_p50_ms_by_threads": {str(n): round(statistics.median(lat[0]) * ms, 3)
                                                 for n, lat in per_threads.items()},
                "bare_faiss_p50_ms": round(faiss_p50 * ms, 3),
                "bare_faiss_p99_ms": round(_pct(faiss_lat, 0.99) * ms, 3),
                "bare_encode_and_faiss_p50_ms": round(both_p50 * ms, 3),
                "bare_encode_and_faiss_p99_ms": round(_pct(both_lat, 0.99) * ms, 3),
                "ratio_p50_server_to_bare_faiss": round(server_p50 / faiss_p50, 3),
                "ratio_p50_server_to_bare_encode_and_faiss": round(server_p50 / both_p50, 3),
                "goal": "p50 within 2x of bare FAISS",
                "note": "the server's figure includes embedding the query and the RPC round trip",
            },
            "fs_server_peak_rss_mib": {"indexing": round(peak_index, 1), "search_100k": round(peak_search, 1)},
        }))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
