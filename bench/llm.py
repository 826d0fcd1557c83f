"""Streamed chat through the gateway's /ws door versus straight to the llama.cpp server, same run.

    .venv/bin/python bench/llm.py [--rounds 5] [--ttft-rounds 15] [--max-tokens 64]

Starts the embedded llama.cpp server (our llm-local program, bundled Gemma 3 270M) and a gateway whose
built-in `local` alias points at it, then alternates the same greedy (temperature 0) streamed request on
both paths. Prints one JSON object: median time to first token and decode tokens/s on each path, and the
ratios. Goal: gateway tokens/s >= 95% of direct, and < 5 ms added to the time to first token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from _procs import free_port, wait_until
from websockets.asyncio.client import connect as ws_connect

REPO = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "List the planets of the solar system, one per line, with one fact each."}]


def _llama_ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/models", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _gateway_info(run_dir: Path, pid: int) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = json.loads((run_dir / "gateway.json").read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("pid") == pid else None


async def _direct(client: httpx.AsyncClient, base: str, max_tokens: int) -> tuple[float, float, int]:
    body = {"model": "gemma-3-270m", "messages": PROMPT, "stream": True, "max_tokens": max_tokens,
            "temperature": 0, "seed": 1}
    start = time.perf_counter()
    first = last = 0.0
    n = 0
    async with client.stream("POST", f"{base}/chat/completions", json=body) as resp:
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or ():
                if (choice.get("delta") or {}).get("content"):
                    last = time.perf_counter()
                    if n == 0:
                        first = last
                    n += 1
    return first - start, last - first, n


async def _gateway(ws: Any, rid: int, max_tokens: int) -> tuple[float, float, int]:
    msg = {"jsonrpc": "2.0", "id": rid, "method": "mcp.llm.chat",
           "params": {"messages": PROMPT, "stream": True,
                      "options": {"max_tokens": max_tokens, "temperature": 0, "seed": 1}}}
    start = time.perf_counter()
    await ws.send(orjson.dumps(msg).decode())
    first = last = 0.0
    n = 0
    while True:
        reply = orjson.loads(await ws.recv())
        if reply.get("method") == "mcp.llm.chunk":
            last = time.perf_counter()
            if n == 0:
                first = last
            n += 1
        elif reply.get("id") == rid:
            if "error" in reply:
                raise SystemExit(f"gateway error: {reply['error']}")
            return first - start, last - first, n


def _rate(span: float, n: int) -> float:
    return (n - 1) / span if n > 1 and span > 0 else 0.0


async def _bench(base: str, ws_url: str, rounds: int, max_tokens: int, ttft_rounds: int) -> dict[str, Any]:
    direct_ttft: list[float] = []
    direct_rate: list[float] = []
    gw_ttft: list[float] = []
    gw_rate: list[float] = []
    tokens = 0
    rid = 0
    async with httpx.AsyncClient(timeout=300, trust_env=False) as client, \
            ws_connect(ws_url, max_size=None, open_timeout=30) as ws:
        await _direct(client, base, 4)  # warm-up: model pages in, connections open
        await _gateway(ws, rid, 4)
        # Time to first token: many short requests, alternating paths so drift in load hits both alike.
        for i in range(ttft_rounds):
            for path in (("direct", "gateway") if i % 2 == 0 else ("gateway", "direct")):
                rid += 1
                if path == "direct":
                    direct_ttft.append((await _direct(client, base, 2))[0])
                else:
                    gw_ttft.append((await _gateway(ws, rid, 2))[0])
        # Decode rate: fewer, longer streams.
        for i in range(rounds):
            for path in (("direct", "gateway") if i % 2 == 0 else ("gateway", "direct")):
                rid += 1
                if path == "direct":
                    _, span, n = await _direct(client, base, max_tokens)
                    direct_rate.append(_rate(span, n))
                else:
                    _, span, n = await _gateway(ws, rid, max_tokens)
                    gw_rate.append(_rate(span, n))
                tokens = max(tokens, n)
    d_ttft, g_ttft = statistics.median(direct_ttft) * 1000, statistics.median(gw_ttft) * 1000
    d_rate, g_rate = statistics.median(direct_rate), statistics.median(gw_rate)
    ratio = g_rate / d_rate if d_rate else 0.0
    added = g_ttft - d_ttft
    return {
        "benchmark": "llm streamed chat: gateway /ws vs direct llama.cpp server",
        "model": "gemma-3-270m-q4_k_m (llama-cpp-python server, 1 thread)",
        "ttft_rounds": ttft_rounds,
        "rate_rounds": rounds,
        "max_tokens": max_tokens,
        "streamed_tokens": tokens,
        "direct": {"ttft_ms": round(d_ttft, 2), "tokens_per_s": round(d_rate, 1)},
        "gateway": {"ttft_ms": round(g_ttft, 2), "tokens_per_s": round(g_rate, 1)},
        "tokens_per_s_ratio": round(ratio, 4),
        "ttft_ratio": round(g_ttft / d_ttft, 4) if d_ttft else None,
        "added_ttft_ms": round(added, 2),
        "goal": {"tokens_per_s_ratio_min": 0.95, "added_ttft_ms_max": 5.0},
        "meets_goal": ratio >= 0.95 and added < 5.0,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="long streams per path (decode rate)")
    parser.add_argument("--ttft-rounds", type=int, default=15, help="short requests per path (first token)")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="bllm", dir="/tmp"))
    model_cache = Path(tempfile.gettempdir()) / "llmbasedos-test-model"
    port = free_port()
    run_dir, config_dir = state / "run", state / "config"
    config_dir.mkdir(parents=True)
    (config_dir / "licence_tiers.yaml").write_text(
        "FREE:\n  allowed_capabilities: ['*']\n  rate_limit_requests: 1000000\n  requests_per_day: null\n"
        "  llm_access: true\n  allowed_llm_models: ['*']\n  max_tokens_per_request: null\n"
        "  max_tokens_per_day: null\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMBDO_")}
    env.update({"LLMBDO_STATE_DIR": str(state), "LLMBDO_RUN_DIR": str(run_dir), "LLMBDO_CONFIG_DIR": str(config_dir),
                "LLMBDO_GATEWAY_PORT": "0", "LLMBDO_LLM_LOCAL_PORT": str(port), "LLMBDO_LOG_LEVEL": "WARNING"})
    # The model is assembled once into a shared cache (the tests use the same one).
    llama_env = {**env, "LLMBDO_DATA_DIR": str(model_cache)}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        llama = subprocess.Popen([sys.executable, "-m", "llmbasedos.servers.llm_local"], env=llama_env, cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(llama)
        base = f"http://127.0.0.1:{port}/v1"
        wait_until(lambda: _llama_ready(base), 300, "llm-local", llama)
        gateway = subprocess.Popen([sys.executable, "-m", "llmbasedos.gateway"], env=env, cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(gateway)
        info = wait_until(lambda: _gateway_info(run_dir, gateway.pid), 60, "gateway", gateway)
        token = (state / "data" / "owner.token").read_text().strip()
        ws_url = info["url"].replace("http://", "ws://") + f"/ws?token={token}"
        result = asyncio.run(_bench(base, ws_url, args.rounds, args.max_tokens, args.ttft_rounds))
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(state, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
