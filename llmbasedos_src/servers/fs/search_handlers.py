"""`mcp.fs.embed`, `mcp.fs.search`, `mcp.fs.index_status`: the fs server's semantic search handlers (a mixin).

Scores are cosine similarities of unit vectors, clipped to [0, 1] rather than mapped with (1 + cos) / 2: 0 keeps
meaning "unrelated" and `min_score` reads as a plain cosine threshold (this model rarely goes below 0 anyway).

The index lives in `<data dir>/search/`. Nothing heavy is imported until the first call, so the fs server
starts fast and works without the `search` extra; these three methods then answer FeatureUnavailable.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from llmbasedos.backend.confinement import VirtualRoot
from llmbasedos.backend.server import CallContext, method
from llmbasedos.protocol.errors import RPCError
from llmbasedos.settings import Settings

if TYPE_CHECKING:
    from llmbasedos.servers.fs.semantic.index import SemanticIndex

__all__ = ["SearchHandlers"]

_init_lock = threading.Lock()


class SearchHandlers:
    caps_fragment: ClassVar[Path | None] = Path(__file__).with_name("search_caps.json")

    settings: Settings
    executor: ThreadPoolExecutor
    log: logging.Logger
    _semantic: SemanticIndex | None = None
    _semantic_error: RPCError | None = None

    def _semantic_root(self) -> VirtualRoot:
        root = getattr(self, "vroot", None)
        return root if isinstance(root, VirtualRoot) else VirtualRoot(self.settings.virtual_root)

    def _semantic_index(self) -> SemanticIndex:
        """The index, built on first use (in a worker thread: loading it reads the data dir)."""
        if self._semantic is not None:
            return self._semantic
        with _init_lock:
            if self._semantic is None:
                if self._semantic_error is not None:
                    raise self._semantic_error
                from llmbasedos.servers.fs.semantic.embedder import require_search_extra

                try:
                    require_search_extra()
                except RPCError as exc:
                    self._semantic_error = exc
                    raise
                from llmbasedos.servers.fs.semantic.index import SemanticIndex

                self._semantic = SemanticIndex(self._semantic_root(), self.settings.data_dir / "search")
            return self._semantic

    @method("mcp.fs.embed")
    async def fs_embed(self, params: dict[str, Any], ctx: CallContext) -> Any:
        cancel = threading.Event()

        def run() -> dict[str, Any]:
            return self._semantic_index().embed(params["path"], params.get("recursive", True), ctx.progress, cancel)

        future = asyncio.get_running_loop().run_in_executor(self.executor, run)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()  # the run stops after its current batch and keeps what it committed
            raise

    @method("mcp.fs.search")
    def fs_search(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self._semantic_index().search(params["query"], params.get("top_k", 5), params.get("scope") or "/",
                                             params.get("min_score", 0.0))

    @method("mcp.fs.index_status")
    def fs_index_status(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self._semantic_index().status()
